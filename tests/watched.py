"""
A child process whose combined output is read line by line on a thread, so that blocking
tests (headless Chromium, plain HTTP clients) can wait for a line with a deadline. Shared by
the example tests and the status-page test.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time


class WatchedProcess:
    """C{process}'s output collected as it comes; L{wait_for} blocks until a pattern shows."""

    #: how the output is named in a failure message
    label = "the process's"

    def __init__(self, process: subprocess.Popen, deadline: float) -> None:
        self.process = process
        self.deadline = deadline
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # EOF marker
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float | None = None) -> re.Match:
        """The first match of C{pattern} in the output, waiting for it up to C{timeout} s."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (self.deadline if timeout is None else timeout)
        with self._changed:
            while True:
                match = rx.search(self.output)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == ""):
                    raise AssertionError(f"no {pattern!r} in {self.label} output:\n{self.output}")
                self._changed.wait(left)
