#!/usr/bin/env python3
"""
Python instructions per connection opened, counted by callgrind: the proxy's own code path
for a new held stream or WebSocket, repeatable to a fraction of a percent, for A/B tests of
a change to that path on a machine whose timings are too noisy to show a few percent.

The real service is built in-process (L{pushpin_tx.service.PushpinService} on the embedded
routes C{* test}, log level 2, lines written to /dev/null), and C{--count} connections are
opened through its client site on fake transports: the channel made as the listener makes
it, the request head in one read, the test target's answer (a held stream, or a WebSocket
completed through autobahn). Nothing goes through the kernel or the reactor loop: what is
counted is the Python side of a connection's set-up (the bulk of it: about 80 % of the
proxy's CPU per WebSocket opened in a real run is the interpreter, perf 2026-12-02), and
only inside the measured loop (callgrind collects inside C{functools.reduce}, which drives
the loop and nothing else uses). The garbage collector is off, so collections do not land
in one variant's window and not the other's.

Each C{--tree} is a checkout of the project (default: this one); give two (say a
C{git worktree add /tmp/base HEAD~1}) to compare a change against its base, run one after
the other. About a minute per tree: valgrind runs the whole interpreter start-up slowly.

Usage: python bench/setup_instructions.py [--mode ws|stream] [--count 300] [--tree PATH ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQUESTS = {
    "ws": (b"GET /ws?channel=c%d HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    "stream": b"GET /stream?channel=c%d HTTP/1.1\r\nHost: localhost\r\n\r\n",
}


def child(tree: str, mode: str, count: int) -> None:
    """Open C{count} connections through the service of C{tree}, inside C{functools.reduce}."""
    import functools
    import gc

    sys.path.insert(0, tree)
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport
    from twisted.logger import globalLogBeginner

    from pushpin_tx.ops.logs import PushpinLogObserver
    from pushpin_tx.protocol.config import load_settings
    from pushpin_tx.protocol.routes import RouteTable, parse_routes
    from pushpin_tx.service import PushpinService

    assert Path(sys.modules["pushpin_tx"].__file__).resolve().is_relative_to(Path(tree).resolve()), "not the tree asked for"
    work = Path(tempfile.mkdtemp())
    (work / "routes").write_text("* test\n")
    conf = (Path(tree) / "etc" / "pushpin.conf").read_text()
    (work / "pushpin.conf").write_text(re.sub(r"(?m)^log_level=.*$", "log_level=2", conf))
    globalLogBeginner.beginLoggingTo([PushpinLogObserver(open(os.devnull, "w"), 2)], redirectStandardIO=False,
                                     discardBuffer=True)
    service = PushpinService(load_settings(str(work / "pushpin.conf")), reactor)
    service.proxy.set_routes(RouteTable(parse_routes("* test\n")[0]))
    site = service._client_site()

    class Transport(StringTransport):
        """A connected TCP-like transport that keeps nothing written."""

        def __init__(self) -> None:
            super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                             hostAddress=IPv4Address("TCP", "127.0.0.1", 7999))

        def write(self, data: bytes) -> None:
            pass

        def resumeProducing(self) -> None:
            pass

        def setTcpNoDelay(self, enabled: bool) -> None:
            pass

    request = REQUESTS[mode]
    held: list[object] = []

    def one(_: object, i: int) -> None:
        channel = site.buildProtocol(None)
        transport = Transport()
        channel.makeConnection(transport)
        channel.dataReceived(request % i)
        held.append(transport)

    for i in range(200):  # warm: lazy imports, caches, the first channel of each kind
        one(None, i)
    gc.collect()
    gc.disable()
    functools.reduce(one, range(1000, 1000 + count), None)
    held_now = service.counters.held[mode]
    if held_now != 200 + count:  # every connection held: what was measured is the whole set-up
        raise SystemExit(f"only {held_now} of {200 + count} {mode} connections held")


def measure(tree: str, mode: str, count: int) -> int:
    """Instructions callgrind counted inside the loop of C{count} connections of C{tree}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=functools_reduce",
             f"--callgrind-out-file={out}", os.path.realpath(sys.executable), __file__, "--child", tree,
             "--mode", mode, "--count", str(count)],
            capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""}, check=False)
        if result.returncode != 0 or not out.exists():
            raise SystemExit(f"callgrind run failed for {tree}:\n{result.stdout}\n{result.stderr[-3000:]}")
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no instruction count in callgrind's output for {tree}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(REQUESTS), default="ws")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--tree", action="append", help="a checkout of the project (default: this one); repeat to compare")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode, args.count)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 1
    trees = args.tree or [str(ROOT)]
    rows = []
    for tree in trees:
        instructions = measure(tree, args.mode, args.count)
        rows.append((tree, instructions / args.count))
    print(f"# Python instructions per {args.mode} opened (callgrind, in-process, {args.count} connections, gc off)")
    print(f"| tree | instructions per {args.mode} | vs first |")
    print("|---|---:|---:|")
    for tree, per in rows:
        print(f"| {tree} | {per:,.0f} | {per / rows[0][1]:.3f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
