# -*- test-case-name: tests.zeromq.test_inputs -*-
"""
The command socket's protocol (reference §10): ZRPC requests in, replies out, with no
socket code here (L{pushpin_tx.zeromq.inputs} owns the socket).

ZRPC as Pushpin 1.36 speaks it (C{zrpcmanager.cpp}, C{packet/zrpc*packet.cpp}, checked
against the 1.36.0 binary on loopback). The server socket is a ROUTER, so it serves REQ
peers and DEALER peers alike: a request is C{[routing ids..., b"", tnetstring]}, the
reply C{[routing ids..., b"", tnetstring]}. The request is a dict of byte strings:
C{method} (required), C{id}, C{from} and C{args} (a dict) optional; bytes after the
tnetstring are ignored. The reply is C{{id, success: true, value}} or
C{{id, success: false, condition[, value]}}, C{id} only when the request had a
non-empty one, strings as byte strings, C{value} present (possibly C{null}) on success.

Methods and their answers, as observed on 1.36.0:

  - C{conncheck} C{{ids: [cid, ...]}}: the ids still connected (a list); C{ids} absent,
    not a list or holding a non-string: C{bad-request}.
  - C{get-zmq-uris}: C{{command, publish-pull, publish-sub}} for the sockets that exist
    (C{publish-sub} only when bound, the first one); here the I{bound} endpoints, so a
    C{tcp://127.0.0.1:0} spec answers with its real port.
  - C{recover}: C{null}.
  - C{refresh} C{{cid}} or C{{channel}}: C{null}; neither, or not a string:
    C{bad-request}; an unknown C{cid}: C{item-not-found}.
  - C{publish} C{{items: [...]}}: C{null}, then the items are published; all or nothing:
    C{bad-request} with the control API's text as C{value}
    (C{Invalid format: object does not contain 'items'}, ...).
  - anything else: C{method-not-found}.

One deliberate difference: Pushpin drops a request it cannot parse (not a tnetstring,
not a dict, wrong field types, several content frames) without a word, which leaves a
REQ peer waiting forever. Here it is logged with Pushpin's text and answered with
C{condition: bad-format} (the ZRPC condition its clients already know as a format
error), carrying the request's C{id} when one could be read. A message with no
envelope delimiter cannot be answered in REQ form and is only logged. A ROUTER socket
has no send/receive state, so nothing ever needs recovering after a bad request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import Logger

from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.items import ItemError, parse_item

if TYPE_CHECKING:
    from pushpin_tx.core.intake import PublishIntake

__all__ = ["CommandError", "CommandHandler"]


class CommandError(Exception):
    """Raised by a command callable to answer C{success: false} with this C{condition}."""

    def __init__(self, condition: str, value: object = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.value = value


class _BadRequest(Exception):
    """The request's args are wrong: C{bad-request}, optionally with a text value."""

    def __init__(self, value: str | None = None) -> None:
        super().__init__(value)
        self.value = value


class CommandHandler:
    """
    Answers ZRPC requests.

    @param is_connected: C{conncheck}: whether a connection id (text) is still connected.
    @param recover: C{recover}.
    @param refresh: C{refresh(cid=None, channel=None)}; returning C{False} for a C{cid}
        answers C{item-not-found}; it may raise L{CommandError} for any other condition.
    @param uris: the bound endpoints for C{get-zmq-uris}.
    """

    _log = Logger()

    def __init__(self, intake: "PublishIntake", *, is_connected: Callable[[str], bool],
                 recover: Callable[[], None], refresh: Callable[..., Any],
                 uris: Callable[[], dict[str, str]]) -> None:
        self._intake = intake
        self._is_connected = is_connected
        self._recover = recover
        self._refresh = refresh
        self._uris = uris

    def handle(self, frames: list[bytes], reply: Callable[[list[bytes]], None]) -> None:
        """Answer one ROUTER message through C{reply} (called at most once, maybe not at all)."""
        try:
            split = frames.index(b"")
        except ValueError:
            self._log.warn("zrpc server: received message with no envelope delimiter, skipping")
            return
        headers, content = frames[:split], frames[split + 1:]

        def respond(packet: dict[str, Any]) -> None:
            reply([*headers, b"", tnetstring.dumps(packet)])

        if len(content) != 1:
            self._log.warn("zrpc server: received message with parts != 1, answering bad-format")
            respond({"success": False, "condition": b"bad-format"})
            return
        try:
            request, _trailing = tnetstring.pop(content[0])  # Pushpin ignores trailing bytes
        except tnetstring.TnetstringError:
            self._log.warn("zrpc server: received message with invalid format (tnetstring parse failed),"
                           " answering bad-format")
            respond({"success": False, "condition": b"bad-format"})
            return
        req_id = request.get(b"id") if isinstance(request, dict) else None
        head: dict[str, Any] = {"id": req_id} if isinstance(req_id, bytes) and req_id else {}
        if not _valid_request(request):
            self._log.warn("zrpc server: received message with invalid format (parse failed), answering bad-format")
            respond({**head, "success": False, "condition": b"bad-format"})
            return
        assert isinstance(request, dict)
        method = request[b"method"].decode("utf-8", "replace")
        args = request.get(b"args", {})
        self._log.debug("IN command: {method} args={args!r}", method=method, args=args)

        after: Callable[[], None] | None = None
        try:
            if method == "conncheck":
                value: Any = self._conncheck(args)
            elif method == "get-zmq-uris":
                value = self._uris()
            elif method == "recover":
                self._recover()
                value = None
            elif method == "refresh":
                self._do_refresh(args)
                value = None
            elif method == "publish":
                items = self._parse_publish(args)
                value = None

                def after() -> None:
                    self._intake.publish(items, "command")
            else:
                raise CommandError("method-not-found")
        except _BadRequest as e:
            packet = {**head, "success": False, "condition": b"bad-request"}
            if e.value is not None:
                packet["value"] = e.value
            respond(packet)
            return
        except CommandError as e:
            packet = {**head, "success": False, "condition": e.condition}
            if e.value is not None:
                packet["value"] = e.value
            respond(packet)
            return
        except Exception:
            self._log.failure("command {method} failed", method=method)
            respond({**head, "success": False, "condition": b"internal-server-error"})
            return
        respond({**head, "success": True, "value": value})
        if after is not None:
            after()  # Pushpin answers first, then publishes

    def _conncheck(self, args: dict[bytes, Any]) -> list[bytes]:
        ids = args.get(b"ids")
        if not isinstance(ids, list) or not all(isinstance(i, bytes) for i in ids):
            raise _BadRequest()
        out: dict[bytes, None] = {}  # a set in Pushpin: unique, order kept here
        for raw in ids:
            if raw not in out and self._is_connected(raw.decode("utf-8", "replace")):
                out[raw] = None
        return list(out)

    def _do_refresh(self, args: dict[bytes, Any]) -> None:
        if b"cid" in args:
            cid = args[b"cid"]
            if not isinstance(cid, bytes):
                raise _BadRequest()
            if self._refresh(cid=cid.decode("utf-8", "replace")) is False:
                raise CommandError("item-not-found")
        elif b"channel" in args:
            channel = args[b"channel"]
            if not isinstance(channel, bytes):
                raise _BadRequest()
            self._refresh(channel=channel.decode("utf-8", "replace"))  # errors ignored, as in Pushpin
        else:
            raise _BadRequest()
        return None

    def _parse_publish(self, args: dict[bytes, Any]) -> list[Any]:
        if b"items" not in args:
            raise _BadRequest("Invalid format: object does not contain 'items'")
        raw_items = args[b"items"]
        if not isinstance(raw_items, list):
            raise _BadRequest("Invalid format: object contains 'items' with wrong type")
        try:
            return [parse_item(raw) for raw in raw_items]
        except ItemError as e:
            raise _BadRequest(f"Invalid format: {e}") from None


def _valid_request(request: object) -> bool:
    """C{ZrpcRequestPacket::fromVariant}: the field types a request must have."""
    if not isinstance(request, dict):
        return False
    for key in (b"from", b"id"):
        if key in request and not isinstance(request[key], bytes):
            return False
    if not isinstance(request.get(b"method"), bytes):
        return False
    return b"args" not in request or isinstance(request[b"args"], dict)
