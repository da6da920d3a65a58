"""
Micro-benchmark of the tnetstring codec on the frames pushpin-tx really handles: a publish item
with formats (decoded on the ZMQ inputs), a stats report packet (encoded, str keys and values,
as core/stats_feed.py writes it), a command request (decoded) and its reply (encoded).

Compares L{pushpin_tx.protocol.tnetstring} with the C{tnetstring3} package from PyPI, when it
is importable: raw (bytes-only values, its own rules) and behind the thin adapter pushpin-tx
would need to keep its own rules (str as UTF-8, tuples, trailing bytes refused, one error type).

    python3 bench/tnetstring_speed.py [--number N] [--repeat R]

Prints microseconds per operation, the best of R repeats of N operations.
"""

from __future__ import annotations

import argparse
import timeit
from typing import Any, Callable

from pushpin_tx.protocol import tnetstring as ours

PUBLISH = {
    b"channel": b"news",
    b"id": b"4f1c2d3e",
    b"prev-id": b"4f1c2d3d",
    b"formats": {
        b"http-response": {
            b"code": 200,
            b"reason": b"OK",
            b"headers": [[b"Content-Type", b"application/json"], [b"Cache-Control", b"no-cache"]],
            b"body": b'{"headline": "something happened", "at": 1700000000}\n',
        },
        b"http-stream": {b"content": b'data: {"headline": "something happened"}\n\n'},
        b"ws-message": {b"content": b'{"headline": "something happened"}'},
    },
}

STATS = {
    "from": "pushpin-tx",
    "route": "default",
    "connections": 1200,
    "minutes": 3,
    "received": 4500,
    "sent": 4410,
    "http-response-sent": 70,
    "duration": 60000,
    "client-header-bytes-received": 0,
    "client-header-bytes-sent": 0,
    "server-content-bytes-sent": 0,
}

COMMAND = {b"id": b"17", b"method": b"get-zmq-uris"}
REPLY = {
    "id": b"17",
    "success": True,
    "value": {"publish-pull": b"tcp://127.0.0.1:5560", "publish-sub": b"tcp://127.0.0.1:5562"},
}


def _load_library() -> Any:
    try:
        import tnetstring  # type: ignore[import-not-found]
    except ImportError:
        return None
    return tnetstring


def _adapted(lib: Any) -> tuple[Callable[[object], bytes], Callable[[bytes], object], Callable[[bytes], tuple[object, bytes]]]:
    """tnetstring3 with pushpin-tx's rules on top: what adopting it would really cost."""

    def plain(value: object) -> object:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, (str, bytes)):
                    raise TypeError("tnetstring dict keys must be str or bytes")
                out[k.encode("utf-8") if isinstance(k, str) else k] = plain(v)
            return out
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        return value

    def dumps(value: object) -> bytes:
        try:
            return lib.dumps(plain(value))  # type: ignore[no-any-return,unused-ignore]
        except ValueError as e:
            raise TypeError(str(e)) from None

    def pop(data: bytes) -> tuple[object, bytes]:
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise ours.TnetstringError("tnetstring input must be bytes")
            data = bytes(data)
        try:
            return lib.pop(data)  # type: ignore[no-any-return,unused-ignore]
        except (ValueError, OverflowError, TypeError, RecursionError) as e:
            # what hostile bytes were seen to raise from it (issue 18's differential fuzz)
            raise ours.TnetstringError(str(e)) from None

    def loads(data: bytes) -> object:
        value, rest = pop(data)
        if rest:
            raise ours.TnetstringError("trailing bytes after the tnetstring")
        return value

    return dumps, loads, pop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    impls: dict[str, tuple[Callable[[object], bytes], Callable[[bytes], object], Callable[[bytes], tuple[object, bytes]]]] = {
        "pushpin-tx": (ours.dumps, ours.loads, ours.pop),
    }
    lib = _load_library()
    if lib is not None:
        impls["tnetstring3 raw"] = (lib.dumps, lib.loads, lib.pop)
        impls["tnetstring3 adapted"] = _adapted(lib)

    publish_frame = ours.dumps(PUBLISH)
    command_frame = ours.dumps(COMMAND)
    stats_bytes = {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in STATS.items()}
    reply_bytes = {b"id": b"17", b"success": True, b"value": {k.encode(): v for k, v in REPLY["value"].items()}}  # type: ignore[attr-defined]

    cases: list[tuple[str, Callable[[Any], Callable[[], object]]]] = [
        (f"decode publish item ({len(publish_frame)} B, pop)", lambda i: lambda: i[2](publish_frame)),
        ("encode publish item", lambda i: lambda: i[0](PUBLISH)),
        (f"decode command request ({len(command_frame)} B, pop)", lambda i: lambda: i[2](command_frame)),
        ("encode stats report (str keys)", lambda i: lambda: i[0](STATS)),
        ("encode stats report (bytes keys)", lambda i: lambda: i[0](stats_bytes)),
        ("encode command reply (str keys)", lambda i: lambda: i[0](REPLY)),
        ("encode command reply (bytes keys)", lambda i: lambda: i[0](reply_bytes)),
    ]
    names = list(impls)
    print(f"{'operation':44s}" + "".join(f"{n:>22s}" for n in names))
    for label, make in cases:
        row = f"{label:44s}"
        for name in names:
            fn = make(impls[name])
            try:
                fn()
            except (TypeError, ValueError):
                row += f"{'refused':>22s}"
                continue
            best = min(timeit.repeat(fn, number=args.number, repeat=args.repeat))
            row += f"{best / args.number * 1e6:>19.2f} us"
        print(row)


if __name__ == "__main__":
    main()
