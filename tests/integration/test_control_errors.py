"""
Malformed requests on the control API, against the real C{twistd -n pushpin}, with raw
sockets: every answer is the exact bytes Pushpin 1.36 sent for the same request when the two
were run side by side (status line in the request's HTTP version, C{Content-Type},
C{Connection: close}, C{Content-Length}, Pushpin's text), and the connection is closed after
it. The table below is that recording; C{python -m tests.integration.test_control_errors PORT}
replays it against a running Pushpin's C{push_in_http_port} and prints any difference.
"""

from __future__ import annotations

import sys

import pytest_twisted

from .harness import raw_connect, start_proxy


def answer(code: int, reason: bytes, body: bytes, http: bytes = b"1.1", ctype: bytes = b"text/plain", extra: bytes = b"") -> bytes:
    """A control API answer as Pushpin writes it."""
    return (
        b"HTTP/%s %d %s\r\n%sContent-Type: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
        % (http, code, reason, extra, ctype, len(body), body)
    )


UNPARSABLE = answer(400, b"Bad Request", b"Failed to parse request header.\n")
TOO_LARGE = answer(400, b"Bad Request", b"Request header too large.\n")
BAD_LENGTH = answer(400, b"Bad Request", b"Bad Content-Length.\n")
LENGTH_REQUIRED = answer(411, b"Length Required", b"Request requires Content-Length.\n")
EXCEEDED = answer(400, b"Bad Request", b"Request body exceeded Content-Length.\n")
NOT_JSON = answer(400, b"Bad Request", b"Body is not valid JSON.\n")
API = answer(200, b"OK", b"Pushpin API\n")
PUBLISHED = answer(200, b"OK", b"Published\n")
NOT_FOUND = answer(404, b"Not Found", b"Not Found\n")
NOT_ACCEPTABLE = answer(406, b"Not Acceptable", b"Not Acceptable. Supported formats are text/plain and application/json.\n")

POST = b"POST /publish/ HTTP/1.1\r\nHost: x\r\n"
ITEMS = b'{"items":[]}'


def _block(total: int) -> bytes:
    """A GET whose header block, blank line included, is C{total} bytes."""
    start, end = b"GET / HTTP/1.1\r\nX: ", b"\r\n\r\n"
    return start + b"a" * (total - len(start) - len(end)) + end


#: (what, request bytes, Pushpin 1.36's answer); every answer is followed by the close
CASES: list[tuple[str, bytes, bytes]] = [
    # the request line
    ("a one-token request line", b"garbage\r\n\r\n", UNPARSABLE),
    ("a two-token request line", b"GET /\r\n\r\n", UNPARSABLE),
    ("binary bytes", b"\x00\x01\x02\xff\r\n\r\n", UNPARSABLE),
    ("a NUL method", b"\x00 / HTTP/1.1\r\n\r\n", UNPARSABLE),
    ("a blank line before the request line", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", UNPARSABLE),
    ("garbage that says HTTP/1.0 (answered in 1.1: the version is never reached)", b"xx HTTP/1.0\r\n\r\n", UNPARSABLE),
    ("an unknown version (taken as 1.1)", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", API),
    ("a version that is not HTTP", b"GET / FOO/1.1\r\nHost: x\r\n\r\n", API),
    ("an empty version", b"GET / \r\n\r\n", API),
    ("an empty URI", b"GET  HTTP/1.1\r\n\r\n", NOT_FOUND),
    ("a query string (part of the path Pushpin matches)", b"GET /?a=b HTTP/1.1\r\n\r\n", NOT_FOUND),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: x\n\n", API),
    ("HTTP/1.0", b"GET / HTTP/1.0\r\n\r\n", answer(200, b"OK", b"Pushpin API\n", http=b"1.0")),
    # headers
    ("a header line without a colon (skipped)", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", API),
    ("a space before the colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", API),
    ("a folded header", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", API),
    ("a NUL in a header value", b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n", API),
    ("200 headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n", API),
    # the header block's size: it must end within 10000 bytes
    ("a header block of exactly 10000 bytes", _block(10000), API),
    ("a header block of 10001 bytes", _block(10001), TOO_LARGE),
    ("one 20000-byte header line", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", TOO_LARGE),
    ("20000 header bytes that never end", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000, TOO_LARGE),
    ("a 20000-byte request line", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", TOO_LARGE),
    # Content-Length
    ("a Content-Length that is not a number", POST + b"Content-Length: abc\r\n\r\n", BAD_LENGTH),
    ("an empty Content-Length", POST + b"Content-Length:\r\n\r\n", BAD_LENGTH),
    ("a Content-Length with a space inside", POST + b"Content-Length: 1 2\r\n\r\n", BAD_LENGTH),
    ("a hexadecimal Content-Length", POST + b"Content-Length: 0x10\r\n\r\n", BAD_LENGTH),
    ("a Content-Length over 32 bits", POST + b"Content-Length: 2147483648\r\n\r\n", BAD_LENGTH),
    ("a huge Content-Length", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", BAD_LENGTH),
    ("a bad Content-Length on HTTP/1.0", b"POST /publish/ HTTP/1.0\r\nContent-Length: abc\r\n\r\n", answer(400, b"Bad Request", b"Bad Content-Length.\n", http=b"1.0")),
    ("a bad Content-Length with a JSON Accept (still text)", b"POST /publish/ HTTP/1.1\r\nAccept: application/json\r\nContent-Length: abc\r\n\r\n", BAD_LENGTH),
    ("the largest 32-bit Content-Length", POST + b"Content-Length: 2147483647\r\n\r\n", answer(400, b"Bad Request", b"Request body too large.\n")),
    ("a negative Content-Length", POST + b"Content-Length: -1\r\n\r\n", EXCEEDED),
    ("more body than Content-Length", POST + b"Content-Length: 12\r\n\r\n" + ITEMS + b"x", EXCEEDED),
    ("a pipelined second request", POST + b"Content-Length: 12\r\n\r\n" + ITEMS + b"GET / HTTP/1.1\r\n\r\n", EXCEEDED),
    ("a Content-Length with a sign", POST + b"Content-Length: +5\r\n\r\nabcde", NOT_JSON),
    ("two Content-Lengths (the first counts)", POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nab", NOT_JSON),
    ("Content-Length and chunked (the length counts)", POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NOT_JSON),
    ("a lower-case content-length", b"POST /publish/ HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n" + ITEMS, PUBLISHED),
    ("blanks around the Content-Length", POST + b"Content-Length:  \t12  \r\n\r\n" + ITEMS, PUBLISHED),
    ("a zero Content-Length on a GET", b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", API),
    # no Content-Length
    ("a chunked publish", POST + b"Transfer-Encoding: chunked\r\n\r\nc\r\n" + ITEMS + b"\r\n0\r\n\r\n", LENGTH_REQUIRED),
    ("a GET with Transfer-Encoding", b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", LENGTH_REQUIRED),
    ("a lower-case method (not GET)", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", LENGTH_REQUIRED),
    ("a PUT on HTTP/1.0", b"PUT / HTTP/1.0\r\n\r\n", answer(411, b"Length Required", b"Request requires Content-Length.\n", http=b"1.0")),
    ("HEAD (answered with the body)", b"HEAD / HTTP/1.1\r\n\r\n", API),
    ("OPTIONS", b"OPTIONS / HTTP/1.1\r\n\r\n", API),
    ("DELETE /publish/", b"DELETE /publish/ HTTP/1.1\r\n\r\n", answer(405, b"Method Not Allowed", b"Method not allowed: DELETE.\n", extra=b"Allow: POST\r\n")),
    # Accept is judged first, and the last type Pushpin knows wins
    ("an unknown path with an unacceptable Accept", b"GET /nope HTTP/1.1\r\nAccept: foo/bar\r\n\r\n", NOT_ACCEPTABLE),
    ("a wrong method with an unacceptable Accept", b"GET /publish HTTP/1.1\r\nAccept: foo/bar\r\n\r\n", NOT_ACCEPTABLE),
    ("an empty Accept", b"GET / HTTP/1.1\r\nAccept:\r\n\r\n", NOT_ACCEPTABLE),
    ("GET / with a JSON Accept (always text)", b"GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n", API),
    ("JSON then text", b"POST /recover HTTP/1.1\r\nAccept: application/json, text/plain\r\nContent-Length: 0\r\n\r\n", answer(200, b"OK", b"Updated\n")),
    ("text then JSON", b"POST /recover HTTP/1.1\r\nAccept: text/plain, application/json\r\nContent-Length: 0\r\n\r\n", answer(200, b"OK", b'{"message":"Updated"}\n', ctype=b"application/json")),
]

#: (what, sent, what Pushpin has answered so far): the request is not complete, so Pushpin
#: waits for the rest (no answer, no close)
INCOMPLETE = [
    ("a request line with no blank line", b"hello world this is not http\r\n", b""),
    ("a body shorter than its Content-Length", POST + b"Content-Length: 12\r\n\r\n{", b""),
    ("Expect: 100-continue and no body yet", POST + b"Content-Length: 12\r\nExpect: 100-continue\r\n\r\n", b"HTTP/1.1 100 Continue\r\n\r\n"),
]


@pytest_twisted.ensureDeferred
async def test_malformed_control_requests_get_pushpins_exact_answers_and_the_close(reactor, tmp_path):
    """Each malformed (or odd) control API request gets the bytes Pushpin 1.36 sent for it, then the close."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    wrong = []
    try:
        for what, data, expected in CASES:
            client = await raw_connect(reactor, proxy.control_port)
            client.transport.write(data)
            try:
                await client.wait_closed(reactor, timeout=5)
            except AssertionError:
                wrong.append(f"{what}: not closed; got {client.received!r}")
                client.transport.abortConnection()
                continue
            if client.received != expected:
                wrong.append(f"{what}:\n    sent     {data[:120]!r}\n    expected {expected!r}\n    got      {client.received!r}")
        assert not wrong, f"{len(wrong)} of {len(CASES)} answers differ from Pushpin's:\n" + "\n".join(wrong)
        assert "Traceback" not in proxy.output
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_an_unfinished_request_is_not_answered_until_it_is_complete(reactor, tmp_path):
    """A request line with no blank line, a short body, or an Expect before the body is not answered (only 100
    Continue): the API waits, as Pushpin does; the rest of the request then gets its answer."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    try:
        clients = []
        for what, data, so_far in INCOMPLETE:
            client = await raw_connect(reactor, proxy.control_port)
            client.transport.write(data)
            clients.append((what, so_far, client))
        # a complete request on another connection is answered: everything before it has been read
        probe = await raw_connect(reactor, proxy.control_port)
        probe.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        await probe.wait_closed(reactor)
        assert probe.received == API
        for what, so_far, client in clients:
            assert (client.received, client.closed) == (so_far, False), what
        short = clients[1][2]
        short.transport.write(b'"items":[]}')
        await short.wait_closed(reactor)
        assert short.received == PUBLISHED
        for _, _, client in clients:
            client.transport.abortConnection()
    finally:
        await proxy.stop()


def _replay(port: int) -> int:
    """Send every case to a control API on C{port} (a real Pushpin) and print the differences."""
    import socket

    differ = 0
    for what, data, expected in CASES:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(data)
            got = b""
            try:
                while chunk := s.recv(65536):
                    got += chunk
            except (socket.timeout, ConnectionResetError):
                got += b"<no close>"
        if got != expected:
            differ += 1
            print(f"DIFFERS: {what}\n  expected {expected!r}\n  got      {got!r}")
    for what, data, so_far in INCOMPLETE:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(data)
            got = b""
            try:
                while chunk := s.recv(65536):
                    got += chunk
                got += b"<closed>"
            except socket.timeout:
                pass
        if got != so_far:
            differ += 1
            print(f"DIFFERS: {what}\n  expected {so_far!r} and no close\n  got      {got!r}")
    print(f"{len(CASES) + len(INCOMPLETE) - differ} of {len(CASES) + len(INCOMPLETE)} as recorded")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(_replay(int(sys.argv[1])))
