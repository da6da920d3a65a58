# -*- test-case-name: tests.backplane.test_broker -*-
"""
C{pushpin-tx-broker}: Pushpin's ZeroMQ source and edge brokers (C{tools/sourcebroker.py},
C{tools/edgebroker.py}) as one command, for several pushpin-tx instances that SUBscribe
(C{push_in_sub_specs} + C{push_in_sub_connect=true}) to one address.

  pushpin-tx-broker source --in tcp://127.0.0.1:5560 --out tcp://0.0.0.0:5562
      PULL in (what publishers PUSH, the channel inside the item), XPUB out: each item
      goes to the instances that hold its channel, and only when some instance does.
  pushpin-tx-broker edge --in tcp://source-host:5562 --out tcp://0.0.0.0:5562
      SUB in (connected to a source broker or another edge), XPUB out; the instances'
      interest is passed upstream, so a channel crosses the link only while it is held.

C{--in}/C{--out} repeat; C{--out-connect} connects the XPUB to instances whose SUB socket
binds (C{push_in_sub_connect=false}), as Pushpin's edge broker does. Port C{0} or C{*}
binds a free port; the log says which (C{... bound to tcp://...}). SIGTERM/SIGINT stop it.
Pushpin's scripts bind what they are given; so does this one: bind loopback unless the
instances are on other machines.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def _spec(value: str) -> str:
    if value.startswith("tcp://") and value.endswith(":0"):
        return value[:-2] + ":*"  # ZeroMQ's "any free port"
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pushpin-tx-broker", description=(
        "Pushpin's ZeroMQ source and edge brokers: PULL (source) or SUB (edge) in, XPUB out, "
        "the instances' interest forwarded upstream."))
    parser.add_argument("mode", choices=("source", "edge"), help="source: PULL in; edge: SUB in (both XPUB out)")
    parser.add_argument("--in", dest="inputs", action="append", required=True, type=_spec,
                        help="PULL spec to bind (source) or upstream XPUB spec to connect to (edge); repeatable")
    parser.add_argument("--out", dest="outputs", action="append", required=True, type=_spec,
                        help="XPUB spec to bind (or connect to with --out-connect); repeatable")
    parser.add_argument("--out-connect", action="store_true", help="connect the XPUB instead of binding it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from pushpin_tx.backplane.broker import BrokerService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    broker = BrokerService(reactor, args.mode, args.inputs, args.outputs, connect_out=args.out_connect)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            broker.startService()
        except Exception as e:  # a busy or invalid address: say so and exit 1
            failed.append(e)
            print(f"pushpin-tx-broker: cannot start: {e}", file=sys.stderr)
            reactor.stop()

    reactor.callWhenRunning(start)
    def stop() -> None:
        if broker.running:
            broker.stopService()

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
