# -*- test-case-name: tests.scripts.test_publish -*-
"""
C{pushpin-tx-publish}: publish one item from the command line, like Pushpin 1.36's
C{pushpin-publish} (same arguments, same item, same output), so scripts keep working.

  pushpin-tx-publish [options] CHANNEL [CONTENT]

The item carries C{http-response} (C{code}, C{body}), C{http-stream} (C{content}) and
C{ws-message} (C{content}) formats; the HTTP payloads get a newline unless C{--no-eol}, and
C{@FILE} content is the file's bytes. C{--hint} and C{--close} send those actions instead;
C{--patch} sends the content as an C{http-response} C{body-patch}. It goes to the control
API (C{--spec}, default C{$GRIP_URL} or C{http://localhost:5561}) as C{POST <path>/publish/},
or, when the spec is not an http(s) URL, as one tnetstring frame on a ZeroMQ PUSH socket.
Success prints C{Published}; failure prints C{Error: <reason>} (the server's own message for
a refused publish) on stderr and exits 1.

Differences from C{pushpin-publish}, each deliberate: C{--uri} is accepted as another name
for C{--spec}; https works (the Debian build refuses TLS); a trailing C{/} and any query in
the URL are dropped (Pushpin would post to C{//publish/}); HTTP proxies from the
environment are not used (Pushpin connects directly); a ZeroMQ spec nobody is listening on
fails after C{--timeout} seconds instead of hanging; usage errors exit 2 (argparse).

Authentication (pushpin-tx's control API and ZeroMQ inputs, issue 18; options Pushpin's tool
lacks): C{--jwt-key KEY} signs each publish with a JWT in C{Authorization: Bearer} (C{KEY}: an
HS256 secret, C{base64:...}, or C{file:PATH} of a PEM RS256/ES256 private key), C{--jwt-iss}
naming the issuer, as C{gripcontrol}'s C{control_iss}/C{key} do; it works over http too (the
token expires in an hour). C{-u user:pass} stays https-only, as in Pushpin. For a ZeroMQ spec,
C{--curve-server-key} (the server's Z85 public key, or C{file:PATH}) makes the PUSH socket a
CURVE client, with C{--curve-secret-key file:PATH} (a Z85 secret key or a C{zmq.auth}
certificate) as its own key.

Synchronous on purpose: a one-shot CLI needs no reactor (stdlib urllib, blocking pyzmq).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from pushpin_tx import __version__

from pushpin_tx.protocol import tnetstring

__all__ = ["PublishError", "build_item", "main", "publish_http", "publish_zmq", "to_json_style"]

DEFAULT_SPEC = "http://localhost:5561"


class PublishError(Exception):
    """The publish failed; C{str()} is the message printed after C{Error: }."""


def _parse_code(text: str) -> int:
    """The C{--code} value, with the messages Pushpin's (Rust) parser gives."""
    if not text:
        raise PublishError("failed to parse code: cannot parse integer from empty string")
    digits = text[1:] if text.startswith("+") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise PublishError("failed to parse code: invalid digit found in string")
    code = int(digits)
    if code > 65535:
        raise PublishError("failed to parse code: number too large to fit in target type")
    return code


def _split(values: Sequence[str], sep: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, found, rest = value.partition(sep)
        if not found:
            raise PublishError(f'{what} must be in the form "name{": " if sep == ":" else "="}value"')
        pairs.append((name, rest.strip()))
    return pairs


def build_item(
    channel: str,
    content: str | None,
    *,
    item_id: str = "",
    prev_id: str = "",
    sender: str = "",
    code: int = 200,
    headers: Sequence[tuple[str, str]] = (),
    meta: Sequence[tuple[str, str]] = (),
    hint: bool = False,
    close: bool = False,
    patch: bool = False,
    no_seq: bool = False,
    eol: bool = True,
) -> dict[str, Any]:
    """
    The item C{pushpin-publish} would send, with C{bytes} bodies (see L{to_json_style}).
    C{content} starting with C{@} names a file to read. Raises L{PublishError}.
    """
    formats: dict[str, Any] = {}
    if hint:
        for name in ("http-response", "http-stream", "ws-message"):
            formats[name] = {"action": "hint"}
    elif close:
        formats["http-stream"] = {"action": "close"}
        formats["ws-message"] = {"action": "close"}
    else:
        if code > 999:
            raise PublishError("code must be an integer between 0 and 999")
        if content is None:
            raise PublishError("must specify content")
        response: dict[str, Any] = {"code": code}
        if patch:
            try:
                ops = json.loads(content)
            except ValueError as e:
                raise PublishError(str(e)) from None
            if not isinstance(ops, list):
                raise PublishError("patch content must be a JSON array")
            response["body-patch"] = ops
        else:
            if content.startswith("@"):
                name = content[1:]
                try:
                    with open(name, "rb") as f:
                        http_content = ws_content = f.read()
                except OSError as e:
                    raise PublishError(f"can't read file {name}: {_os_message(e)}") from None
            else:
                ws_content = content.encode("utf-8")
                http_content = ws_content + (b"\n" if eol else b"")
            response["body"] = http_content
            formats["http-stream"] = {"content": http_content}
            formats["ws-message"] = {"content": ws_content}
        if headers:
            response["headers"] = [[name, value] for name, value in headers]
        formats["http-response"] = response
    item: dict[str, Any] = {"channel": channel}
    if item_id:
        item["id"] = item_id
    if prev_id:
        item["prev-id"] = prev_id
    item["formats"] = formats
    meta_values = dict([("sender", sender)] if sender else [])
    meta_values.update(meta)
    if meta_values:
        item["meta"] = meta_values
    if no_seq:
        item["no-seq"] = True
    return item


def to_json_style(value: Any) -> Any:
    """C{bytes} as JSON wants them: C{body}/C{content} that are not UTF-8 become
    C{body-bin}/C{content-bin} (base64), as C{pushpin-publish} does."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, bytes):
                try:
                    out[key] = item.decode("utf-8")
                except UnicodeDecodeError:
                    out[key + "-bin"] = base64.b64encode(item).decode("ascii")
            else:
                out[key] = to_json_style(item)
        return out
    if isinstance(value, list):
        return [to_json_style(v) for v in value]
    return value


def _os_message(e: OSError) -> str:
    # The "<strerror> (os error N)" shape of Pushpin's Rust error messages.
    if e.errno is not None and e.strerror:
        return f"{e.strerror} (os error {e.errno})"
    return str(e)


def jwt_authorization(key: str, iss: str | None, now: float) -> str:
    """The C{Authorization} value for C{--jwt-key}/C{--jwt-iss}: a Bearer JWT valid an hour."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    from pushpin_tx.protocol.config import ConfigError, parse_signing_key

    try:
        signing = parse_signing_key(key, os.getcwd())
    except ConfigError as e:
        raise PublishError(f"--jwt-key: {e}") from None
    material: Any = signing.key
    if signing.algorithm != "HS256":
        try:
            material = serialization.load_pem_private_key(signing.key, password=None)
        except (ValueError, TypeError):
            raise PublishError("--jwt-key: the key file holds a public key; signing needs the private key") from None
    claims: dict[str, Any] = {"exp": int(now) + 3600}
    if iss:
        claims["iss"] = iss
    return "Bearer " + jwt.encode(claims, material, algorithm=signing.algorithm)


def publish_http(url: str, item: dict[str, Any], *, user: str | None = None, timeout: float = 10.0,
                 authorization: str | None = None) -> None:
    """POST C{item} to the control API at C{url}; raises L{PublishError} unless it answers 200."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PublishError("invalid URL")
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    target = urlunsplit((parts.scheme, parts.netloc, path + "/publish/", "", ""))
    body = json.dumps({"items": [to_json_style(item)]}, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    headers = {"Content-Type": "application/json"}
    if user is not None:
        if parts.scheme != "https":
            raise PublishError("Authentication requires https")
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode("utf-8")).decode("ascii")
    elif authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(target, data=body.encode("utf-8"), headers=headers, method="POST")
    # No ProxyHandler: the control API is normally local, and Pushpin's tool ignores
    # http_proxy too; a proxy in the environment must not receive publishes.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
        e.close()
    except urllib.error.URLError as e:
        reason = e.reason
        raise PublishError(_os_message(reason) if isinstance(reason, OSError) else str(reason)) from None
    except OSError as e:  # a timeout or reset after connecting
        raise PublishError(_os_message(e)) from None
    if status != 200:
        raise PublishError(text.decode("utf-8", "replace").strip() or f"HTTP {status}")


def _curve_key(value: str, what: str, secret: bool) -> bytes:
    """A Z85 key given inline or as C{file:PATH} (a bare key, or a zmq.auth certificate)."""
    import zmq.auth

    if value.startswith("file:"):
        path = value[len("file:"):]
        try:
            public, private = zmq.auth.load_certificate(path)
            key = private if secret else public
        except (OSError, ValueError):
            key = None
        if key is None:
            try:
                with open(path, "rb") as f:
                    lines = [ln.strip() for ln in f.read().splitlines() if ln.strip() and not ln.strip().startswith(b"#")]
            except OSError as e:
                raise PublishError(f"{what}: cannot read {path!r}: {e.strerror}") from None
            key = lines[0] if len(lines) == 1 else None
    elif secret:
        raise PublishError(f"{what}: give the secret key as file:PATH, not on the command line")
    else:
        key = value.encode("ascii", "replace")
    if key is None or len(key) != 40:
        raise PublishError(f"{what}: expected a Z85 CURVE key (40 characters)")
    return key


def publish_zmq(spec: str, item: dict[str, Any], *, timeout: float = 5.0,
                curve_server_key: str | None = None, curve_secret_key: str | None = None) -> None:
    """Send C{item} as one tnetstring frame on a PUSH socket connected to C{spec} (CURVE if given)."""
    import zmq

    curve = None
    if curve_server_key is not None or curve_secret_key is not None:
        if curve_server_key is None or curve_secret_key is None:
            raise PublishError("CURVE needs both --curve-server-key and --curve-secret-key")
        server = _curve_key(curve_server_key, "--curve-server-key", secret=False)
        own_secret = _curve_key(curve_secret_key, "--curve-secret-key", secret=True)
        try:
            curve = (server, zmq.curve_public(own_secret), own_secret)
        except zmq.ZMQError:
            raise PublishError("--curve-secret-key: not a Z85 CURVE secret key") from None

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.PUSH)
        try:
            # IMMEDIATE: queue only on a completed connection, so "nobody there" shows as
            # not writable (and is reported) instead of a message parked forever.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            if curve is not None:
                sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
            sock.setsockopt(zmq.LINGER, int(timeout * 1000))
            sock.connect(spec)
            if not sock.poll(int(timeout * 1000), zmq.POLLOUT):
                raise PublishError(f"could not connect to {spec} within {timeout:g} s")
            sock.send(tnetstring.dumps(item), zmq.NOBLOCK)
        finally:
            sock.close()  # lingers until the frame is sent (at most timeout)
    except zmq.ZMQError as e:
        raise PublishError(str(e)) from None
    finally:
        ctx.term()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pushpin-tx-publish",
        description="Publish messages to Pushpin (or pushpin-tx)",
    )
    p.add_argument("channel", help="Channel to send to")
    p.add_argument("content", nargs="?", help="Content to use for HTTP body and WebSocket message (@FILE: a file)")
    p.add_argument("--id", default="", help="Payload ID")
    p.add_argument("--prev-id", default="", help="Previous payload ID")
    p.add_argument("--sender", default="", help="Sender meta value")
    p.add_argument("--code", default="200", help="HTTP response code to use [default: 200]")
    p.add_argument("-H", "--header", action="append", default=[], metavar='"K: V"', help="Add HTTP response header")
    p.add_argument("-M", "--meta", action="append", default=[], metavar='"K=V"', help="Add meta variable")
    p.add_argument("--hint", action="store_true", help="Send hint instead of content")
    p.add_argument("--close", action="store_true", help="Close streaming and WebSocket connections")
    p.add_argument("--patch", action="store_true", help="Content is JSON patch")
    p.add_argument("--no-seq", action="store_true", help="Bypass sequencing buffer")
    p.add_argument("--no-eol", action="store_true", help="Don't add newline to HTTP payloads")
    p.add_argument(
        "--spec", "--uri", dest="spec", default=None,
        help=f"GRIP URL or ZeroMQ PUSH spec [default: $GRIP_URL or {DEFAULT_SPEC}]",
    )
    p.add_argument("-u", "--user", default=None, metavar="user:pass", help="Authenticate using basic auth (https only)")
    p.add_argument("--jwt-key", default=None, metavar="KEY",
                   help="Sign with a JWT: an HS256 secret, base64:..., or file:PEM (RS256/ES256 private key)")
    p.add_argument("--jwt-iss", default=None, metavar="ISS", help="The JWT's issuer (iss claim)")
    p.add_argument("--curve-server-key", default=None, metavar="Z85|file:PATH",
                   help="ZeroMQ spec: the server's CURVE public key")
    p.add_argument("--curve-secret-key", default=None, metavar="file:PATH",
                   help="ZeroMQ spec: this client's CURVE secret key (a Z85 key file or a zmq.auth certificate)")
    p.add_argument("--timeout", type=float, default=10.0, help="Seconds to wait for the server [default: 10]")
    p.add_argument("-V", "--version", action="version", version=f"pushpin-tx-publish {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 published, 1 failed)."""
    args = _parser().parse_args(argv)
    spec = args.spec if args.spec is not None else os.environ.get("GRIP_URL") or DEFAULT_SPEC
    try:
        item = build_item(
            args.channel,
            args.content,
            item_id=args.id,
            prev_id=args.prev_id,
            sender=args.sender,
            code=_parse_code(args.code),
            headers=_split(args.header, ":", "header"),
            meta=_split(args.meta, "=", "meta"),
            hint=args.hint,
            close=args.close,
            patch=args.patch,
            no_seq=args.no_seq,
            eol=not args.no_eol,
        )
        if args.jwt_iss is not None and args.jwt_key is None:
            raise PublishError("--jwt-iss needs --jwt-key")
        if spec.startswith(("http:", "https:")):
            if args.curve_server_key is not None or args.curve_secret_key is not None:
                raise PublishError("the --curve options are for a ZeroMQ spec")
            authorization = jwt_authorization(args.jwt_key, args.jwt_iss, time.time()) if args.jwt_key is not None else None
            publish_http(spec, item, user=args.user, timeout=args.timeout, authorization=authorization)
        else:
            if args.jwt_key is not None:
                raise PublishError("--jwt-key is for an http(s) spec")
            publish_zmq(spec, item, timeout=args.timeout, curve_server_key=args.curve_server_key,
                        curve_secret_key=args.curve_secret_key)
    except PublishError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print("Published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
