"""
Shared helpers for the benchmarks in this directory: pin the proxy and the load to
separate cores, start helper processes (origins, load generators) that speak JSON lines,
read a process tree's RSS and CPU seconds from /proc, and print aligned tables. Starting
the proxies under test is in L{proxies}.

Why by hand: the figures must come from the kernel's own accounting of the processes under
test (/proc/<pid>/stat and /proc/<pid>/statm), summed over Pushpin's child processes
(condure, zurl, pushpin-proxy, pushpin-handler) the same way as over pushpin-tx's single
process; psutil would do the same reading and is not a dependency of the project.

Every process started here runs in its own session, gets SIGTERM if the benchmark dies,
and is stopped by its pid (SIGTERM, then SIGKILL to its process group after a deadline).
"""

from __future__ import annotations

import argparse

import ctypes
import json
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

__all__ = [
    "ROOT",
    "ALL_CPUS",
    "PROXY_CPUS",
    "LOAD_CPUS",
    "Child",
    "spawn_python",
    "stop_process",
    "pin_self",
    "raise_nofile",
    "tree_pids",
    "listening_pids",
    "tree_rss",
    "tree_cpu",
    "tree_wait",
    "own_cpu",
    "own_wait",
    "percentile",
    "format_table",
    "print_table",
    "fmt_us",
    "fmt_kb",
    "fmt_mb",
    "fmt_ratio",
    "ChunkedDecoder",
    "read_json_line",
    "machine_note",
    "exit_on_sigterm",
]

ROOT = Path(__file__).resolve().parents[1]
STOP_DEADLINE = 10.0

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _split_cpus() -> tuple[set[int], set[int]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), set(cpus)
    # the proxy gets the last core, the load (and the orchestrating script) the first
    return {cpus[-1]}, {cpus[0]}


#: The core the process under test runs on, and the core the load generator runs on.
PROXY_CPUS, LOAD_CPUS = _split_cpus()
#: Every core this process may use when imported (before L{pin_self}): an unpinned proxy's set.
ALL_CPUS = set(os.sched_getaffinity(0))


def machine_note(proxy_cpus: set[int] | None = None) -> str:
    """
    One line naming the date, the cores used and the load average, for the head of each
    report. C{proxy_cpus}: where the proxy runs, when not on L{PROXY_CPUS}.
    """
    proxy_cpus = PROXY_CPUS if proxy_cpus is None else proxy_cpus
    same = " (only one core: proxy and load SHARE it)" if proxy_cpus == LOAD_CPUS else ""
    shared = " (unpinned: proxy and load share the load core)" if proxy_cpus & LOAD_CPUS and not same else ""
    load = os.getloadavg()[0]
    busy = " (other work is running: expect noise)" if load > 0.5 else ""
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores; proxy on CPU "
            f"{sorted(proxy_cpus)}{shared}, load on CPU {sorted(LOAD_CPUS)}{same}; load average {load:.2f}{busy}; "
            f"Python {sys.version.split()[0]}")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the C{finally} blocks stop every process started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# --- process plumbing -------------------------------------------------------------------------


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards C{want} (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def pin_self(cpus: set[int]) -> None:
    """Pin the calling process (and so every child it spawns later) to C{cpus}."""
    os.sched_setaffinity(0, cpus)


_PR_SET_PDEATHSIG = 1


def preexec(cpus: set[int], nofile: int) -> Callable[[], None]:
    """A C{preexec_fn}: pin to C{cpus}, raise the fd limit, and die with the benchmark."""

    def run() -> None:
        os.sched_setaffinity(0, cpus)
        raise_nofile(nofile)
        # If the benchmark itself is killed outright, its children get SIGTERM from the
        # kernel rather than running on (prctl has no wrapper in the standard library).
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    return run


def spawn_python(argv: Sequence[str], *, cpus: set[int], nofile: int = 1 << 20, stdin: Any = None,
                 stdout: Any = None, stderr: Any = None, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> subprocess.Popen:
    """Start C{sys.executable argv...} pinned to C{cpus}, in its own session, with a raised fd limit."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, *argv], stdin=stdin, stdout=stdout, stderr=stderr, env=full_env,
                            cwd=cwd, start_new_session=True, preexec_fn=preexec(cpus, nofile))


@dataclass
class Child:
    """A helper process (origin or load generator) speaking line-delimited JSON on stdout."""

    name: str
    proc: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float = 120.0) -> dict[str, Any]:
        """The next JSON line from the child; raises if it exits or says nothing in time."""
        assert self.proc.stdout is not None
        return read_json_line(self.proc, self.proc.stdout, timeout, self.name)

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL to its process group after a deadline."""
        stop_process(self.proc)


def read_json_line(proc: subprocess.Popen, stream: IO[bytes], timeout: float, name: str) -> dict[str, Any]:
    """Read lines from C{stream} until one parses as a JSON object; stray output is echoed."""
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{name}: no answer within {timeout:.0f}s")
            if not sel.select(min(left, 1.0)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
                continue
            line = stream.readline()
            if not line:
                proc.wait(5)
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            text = line.decode("utf-8", "replace").strip()
            if text.startswith("{"):
                return json.loads(text)
            if text:
                print(f"  [{name}] {text}", file=sys.stderr)
    finally:
        sel.close()


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM by pid; SIGKILL to its process group (which start_new_session made its own) if needed."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
        except ProcessLookupError:
            pass
        proc.wait(5)
    else:
        # Pushpin's runner stops its children itself; make sure none of them outlived it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- /proc accounting ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    return data[data.rindex(")") + 2:].split()


def tree_pids(root: int) -> list[int]:
    """
    C{root} and all its live descendants (by scanning /proc for parent ids): Pushpin's
    services, pushpin-tx's worker processes.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes in the LISTEN state on local TCP C{port} (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listening_pids(pids: Sequence[int], port: int) -> list[int]:
    """
    The processes among C{pids} that hold a socket listening on TCP C{port}: with
    SO_REUSEPORT each worker has its own such socket, with an inherited socket each holds a
    descriptor of the same one; either way each counts once.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    out.append(pid)
                    break
            except OSError:
                continue
    return out


def tree_rss(root: int, pids: Sequence[int] | None = None) -> int:
    """Resident set size in bytes, summed over C{root}'s process tree."""
    total = 0
    for pid in pids if pids is not None else tree_pids(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


def tree_cpu(root: int, pids: Sequence[int] | None = None) -> float:
    """User+system CPU seconds of C{root}'s tree (all threads, plus reaped children)."""
    total = 0
    for pid in pids if pids is not None else tree_pids(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # fields after the name: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _CLK_TCK


def own_cpu() -> float:
    """CPU seconds (user+system) this process has used."""
    t = os.times()
    return t.user + t.system


def _task_wait(pid: int | str) -> int:
    """Nanoseconds the threads of C{pid} spent runnable but waiting for a core (schedstat's second field)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total


def tree_wait(root: int, pids: Sequence[int] | None = None) -> float:
    """
    Seconds C{root}'s tree (its live threads) spent ready to run but waiting for a core: how
    much other work on the machine held the process under test back (0 on a quiet machine).
    """
    return sum(_task_wait(pid) for pid in (pids if pids is not None else tree_pids(root))) / 1e9


def own_wait() -> float:
    """Seconds this process spent ready to run but waiting for a core."""
    return _task_wait("self") / 1e9


# --- HTTP bits -------------------------------------------------------------------------------------


class ChunkedDecoder:
    """
    Minimal incremental decoder of HTTP/1.1 chunked framing: feed bytes, get whole chunks'
    data back (one bytes per chunk). Chunk extensions and trailers are skipped; the only
    check is the framing itself (a benchmark client, not a general parser).
    """

    __slots__ = ("_buf", "done")

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        """The complete chunks that C{data} finishes (raises ValueError on broken framing)."""
        buf = self._buf + data if self._buf else data
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            start = eol + 2
            end = start + size
            if size == 0:
                self.done = True
                pos = n
                break
            if end + 2 > n:
                break
            if buf[end:end + 2] != b"\r\n":
                raise ValueError(f"chunk not followed by CRLF at {end}: {buf[end:end + 10]!r}")
            out.append(buf[start:end])
            pos = end + 2
        self._buf = buf[pos:]
        return out


# --- figures and tables ------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    if not values:
        return 0.0
    k = min(len(values) - 1, max(0, math.ceil(p / 100.0 * len(values)) - 1))
    return values[k]


def fmt_us(seconds: float | None) -> str:
    """Seconds as a short human figure in µs or ms."""
    if seconds is None:
        return "-"
    us = seconds * 1e6
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_kb(n: float | None) -> str:
    """Bytes as KB with one decimal."""
    return "-" if n is None else f"{n / 1024:.1f} KB"


def fmt_mb(n: float | None) -> str:
    """Bytes as MB with one decimal."""
    return "-" if n is None else f"{n / (1024 * 1024):.1f} MB"


def fmt_ratio(a: float | None, b: float | None) -> str:
    """C{a / b} as C{1.23x}, or C{-}."""
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A Markdown table with aligned columns (the first C{left} columns left, the rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(parts) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print C{title} and the table, then a blank line."""
    print(title)
    print()
    print(format_table(headers, rows))
    print(flush=True)


def add_proxy_options(parser: "argparse.ArgumentParser") -> None:
    """The options every proxy benchmark shares: --workers, --unpinned, --json."""
    parser.add_argument("--workers", type=int, default=1,
                        help="pushpin-tx's [runner] workers (processes sharing the client port); Pushpin ignores it")
    parser.add_argument("--unpinned", action="store_true",
                        help="do not pin the proxy to one core (it may use every core, the load's too)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures and verdicts as JSON to FILE (for run_all.py)")


def parse_proxy_args(parser: "argparse.ArgumentParser") -> "argparse.Namespace":
    """Parse, checking the shared options."""
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args
