#!/usr/bin/env python3
"""
The load process of L{fanout}: opens the N held streams (or, in C{ws} mode, N WebSocket
clients), publishes the M messages when told to, records what every subscriber received, and
checks it. Run by C{bench/fanout.py} (one
JSON config argument; JSON lines out, C{go} in); kept apart so that the orchestrator stays
small and this process holds nothing but the clients.

The streams are opened by a state machine per connection on one C{select.epoll}, and the
burst then runs in one plain C{select.epoll} loop that reads every stream and drives the
publishers: with asyncio's callback machinery around every read, the client would spend more
CPU than the proxy, and a saturated client measures itself, not the proxy.

Each message is C{b"<seq> <send time ns>\\n"}, one chunk (C{ws} mode: C{b"<seq> <ns>"}, one
text frame). WebSocket clients are written by hand on raw sockets too: the upgrade request
with a fixed C{Sec-WebSocket-Key}, a check for C{101}, then the server's unmasked frames parsed
minimally (opcode byte, 7/16/64-bit lengths), because a WebSocket library's per-frame objects
and callbacks would again cost the client more than the proxy. Each WebSocket has no
"subscribed" signal, so before C{ready} a C{sync} message is published until every client has
seen one; C{sync} frames are not counted. The check, per subscriber:
every message exactly once; every subscriber in the same order; and that order never puts
a message before one whose publish was acknowledged before it was sent (with one publisher
connection that is the sequence order itself; over ZMQ one PUSH socket is one ordered pipe,
so "acknowledged" is "sent").
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

OPENED = b"[stream opened]\n"
RECV = 262144
# a fixed key (RFC 6455's example) is fine here: the proxy only hashes it into Sec-WebSocket-Accept
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
SYNC = b"sync"


class Stream:
    """One held stream: its socket, unparsed bytes and the sequence numbers received."""

    __slots__ = ("idx", "sock", "buf", "seqs", "closed", "synced")

    def __init__(self, idx: int, sock: socket.socket, buf: bytes) -> None:
        self.idx = idx
        self.sock = sock
        self.buf = buf
        self.seqs = array.array("i")
        self.closed = False
        self.synced = False  # ws mode: a sync frame has arrived, so the proxy has subscribed it


# --- opening the streams (one epoll, a state machine per connection) ---------------------------------------------------------------


#: Linux's IP_BIND_ADDRESS_NO_PORT (not in the socket module): bind the address, pick the port at connect
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def open_streams(cfg: dict[str, Any], errors: list[str], deadline_s: float | None = None) -> list[Stream]:
    """
    Open C{connections} streams (or WebSockets), C{connect_window} at a time; each returned
    once its head (and, for a stream, C{[stream opened]}) arrived, in the order they opened.

    A state machine per connection on one epoll (connect, send the request, read the answer),
    not asyncio: with asyncio's futures, tasks and reader callbacks around every step, the
    client spent about as much CPU per connection as the proxy and was at 100 % of its core
    in the set-up runs (2026-12-02), so the opening rate was partly the client's. The same
    loop opens the connections of both proxies.
    """
    ws = cfg.get("mode") == "ws"
    many = cfg.get("many_channels", False)
    total = cfg["connections"]
    window = cfg["connect_window"]
    source = cfg.get("source")
    address = ("127.0.0.1", cfg["port"])
    first = b"%x\r\n%s\r\n" % (len(OPENED), OPENED)
    deadline = time.monotonic() + (deadline_s if deadline_s is not None else max(120.0, total / 50))

    def request(i: int) -> bytes:
        channel = (f"{cfg['channel']}{i}" if many else cfg["channel"]).encode()  # --many-channels: c<i> each
        if ws:
            return (b"GET /ws?channel=%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (channel, WS_KEY))
        return b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel

    ep = select.epoll()
    streams: list[Stream] = []
    #: fd -> [index, socket, bytes read so far, request sent]
    pending: dict[int, list[Any]] = {}
    started = 0

    def note(i: int, why: str) -> None:
        if len(errors) < 20:
            errors.append(f"conn {i}: {why}")

    def fail(fd: int, why: str) -> None:
        conn = pending.pop(fd)
        ep.unregister(fd)
        conn[1].close()
        note(conn[0], why)

    def start(i: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            if source:
                # a loopback source address of its own (127.0.0.0/8): the ephemeral ports of
                # 127.0.0.1 -> the proxy run short past ~14,000 (connect() searches them,
                # even ones first), and that search, not the proxy, set the pace
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
            err = sock.connect_ex(address)
        except OSError as e:
            sock.close()
            note(i, str(e))
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            note(i, os.strerror(err))
            return
        pending[sock.fileno()] = [i, sock, b"", False]
        ep.register(sock.fileno(), select.EPOLLOUT)

    def answered(fd: int) -> None:
        """The head is in (and the first chunk, for a stream): check it, and the connection is open."""
        i, sock, data, _ = pending[fd]
        head, _, rest = data.partition(b"\r\n\r\n")
        if ws:
            if not head.startswith(b"HTTP/1.1 101") or WS_ACCEPT not in head:
                fail(fd, f"unexpected head {head[:200]!r}")
                return
        else:
            if not head.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in head.lower():
                fail(fd, f"unexpected head {head[:200]!r}")
                return
            if len(rest) < len(first):
                return  # the first chunk is still on its way
            if not rest.startswith(first):
                fail(fd, f"first chunk {rest[:100]!r}")
                return
            rest = rest[len(first):]
        del pending[fd]
        ep.unregister(fd)
        streams.append(Stream(i, sock, rest))

    try:
        while started < total or pending:
            while started < total and len(pending) < window:
                start(started)
                started += 1
            if not pending:
                continue
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                for fd in list(pending):
                    fail(fd, "not open before the deadline")
                break
            for fd, events in ep.poll(min(timeout, 1.0)):
                conn = pending.get(fd)
                if conn is None:
                    continue
                sock = conn[1]
                if not conn[3]:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(fd, os.strerror(err))
                        continue
                    try:
                        sock.send(request(conn[0]))  # (a few hundred bytes: one send takes it all)
                    except OSError as e:
                        fail(fd, str(e))
                        continue
                    conn[3] = True
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(fd, str(e))
                    continue
                if not chunk:
                    fail(fd, "closed before the response head" if b"\r\n\r\n" not in conn[2] else "closed before [stream opened]")
                    continue
                conn[2] += chunk
                if b"\r\n\r\n" in conn[2]:
                    answered(fd)
    finally:
        ep.close()
    return streams


# --- publishers (state machines driven by the epoll loop) ----------------------------------------


def item_json(channel: str, seq: int, sent_ns: int, mode: str = "stream") -> bytes:
    """
    The publish item of message C{seq}: C{http-stream} content C{"<seq> <sent_ns>\\\\n"}, or in
    C{ws} mode C{ws-message} content C{"<seq> <sent_ns>"}.
    """
    if mode == "ws":
        return json.dumps({"channel": channel, "formats": {"ws-message": {"content": f"{seq} {sent_ns}"}}}).encode()
    return json.dumps({"channel": channel, "formats": {"http-stream": {"content": f"{seq} {sent_ns}\n"}}}).encode()


class HttpPublishers:
    """
    C{concurrency} connections to the control API, each sending its next C{POST /publish/}
    (job) as soon as the previous one is acknowledged, taking the next job number then. A
    connection the server closes (Pushpin and pushpin-tx both close the control connection
    after every answer) is reopened. Driven by L{burst}: C{on_event(fd)} when a socket is
    readable, C{tick()} on every loop turn.

    Job C{j}'s body is C{body_fn(j, send time ns)}; by default the one item of message C{j}
    on C{channel}. With C{pace} (jobs per second) job C{j} is sent at C{start + j / pace}
    instead, whatever is still unacknowledged (C{concurrency} is then unused).
    """

    def __init__(self, ep: select.epoll, port: int, channel: str, messages: int, concurrency: int,
                 sent: list[int], acked: list[int], mode: str = "stream",
                 body_fn: Callable[[int, int], bytes] | None = None, pace: float | None = None) -> None:
        self.ep, self.port, self.channel, self.messages, self.mode = ep, port, channel, messages, mode
        self.sent, self.acked = sent, acked
        self.body_fn = body_fn or (lambda job, ns: b'{"items": [%s]}' % item_json(channel, job, ns, mode))
        self.pace = pace
        self.start = time.monotonic()
        self.next_seq = 0
        self.active: dict[int, list[Any]] = {}  # fd -> [sock, seq, buffer]
        self.done = 0
        self.error: str | None = None
        if pace:
            self.tick()
        else:
            for _ in range(min(concurrency, messages)):
                self._start_next()

    def tick(self) -> None:
        """Paced: send every job whose time has come."""
        if self.pace:
            now = time.monotonic()
            while self.next_seq < self.messages and now >= self.start + self.next_seq / self.pace:
                self._send(self.next_seq)
                self.next_seq += 1

    def poll_timeout(self) -> float:
        """Paced: seconds until the next job is due (else 0.5: acks and deliveries wake the loop)."""
        if self.pace and self.next_seq < self.messages:
            return max(0.0, self.start + self.next_seq / self.pace - time.monotonic())
        return 0.5

    def _start_next(self) -> None:
        if self.pace:
            self.tick()
            return
        if self.next_seq >= self.messages:
            return
        seq = self.next_seq
        self.next_seq += 1
        self._send(seq)

    def _send(self, seq: int) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port))  # loopback: at once
        sock.setblocking(False)
        self.sent[seq] = time.time_ns()
        body = self.body_fn(seq, self.sent[seq])
        sock.sendall(b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.active[sock.fileno()] = [sock, seq, b""]
        self.ep.register(sock.fileno(), select.EPOLLIN)

    def serve(self) -> bool:
        """Read the answers that have come (its own epoll, without waiting); whether there were any."""
        events = self.ep.poll(0)
        for fd, _ in events:
            if fd in self.active:
                self.on_event(fd)
        return bool(events)

    def on_event(self, fd: int) -> None:
        """C{fd} is readable: read the answer; when it is complete, record the ack and publish the next."""
        entry = self.active[fd]
        sock, seq = entry[0], entry[1]
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        entry[2] += data
        buf = entry[2]
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            lower = buf[:end].lower()
            at = lower.find(b"content-length:")
            length = int(lower[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buf) < end + 4 + length and data:
                return
            self.acked[seq] = time.time_ns()
            if not lower.startswith(b"http/1.1 200") and self.error is None:
                self.error = f"publish {seq} refused: {buf[:300]!r}"
        elif data:
            return
        elif self.error is None:
            self.error = f"publish {seq}: connection closed without an answer"
        # one answer per connection here (both servers close after it): finish this one, start the next
        self.ep.unregister(fd)
        sock.close()
        del self.active[fd]
        self.done += 1
        self._start_next()


def connect_zmq(spec: str) -> tuple[Any, Any]:
    """A PUSH socket connected to C{spec} (done before the burst, so the burst is not held at connect)."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)  # no limit: the whole burst is queued at once
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(spec)
    return ctx, sock


def publish_zmq(sock: Any, channel: str, messages: int, sent: list[int], acked: list[int],
                mode: str = "stream") -> None:
    """Queue all C{messages} at once on the PUSH socket (C{J}+JSON frames), then close it (it lingers until sent)."""
    for seq in range(messages):
        sent[seq] = acked[seq] = time.time_ns()
        sock.send(b"J" + item_json(channel, seq, sent[seq], mode))
    sock.close()


def publish_zmq_many(sock: Any, prefix: str, rounds: int, connections: int, sent: list[int], acked: list[int]) -> None:
    """C{--many-channels} over ZMQ: every round one single-item message to each channel c<k>, all queued at once."""
    for rnd in range(rounds):
        for k in range(connections):
            job = rnd * connections + k
            sent[job] = acked[job] = time.time_ns()
            sock.send(b"J" + item_json(f"{prefix}{k}", rnd, sent[job]))
    sock.close()


#: stream reads between two looks at the publish connections (HttpPublishers.serve)
PUB_EVERY = 32

# --- the burst: one epoll loop -------------------------------------------------------------------


def parse(st: Stream, data: bytes, now: int, lat: array.array, lat_seq: array.array | None = None) -> int:
    """
    Chunked framing by hand: record each complete message (its latency in C{lat}, and its
    sequence number in C{lat_seq} when given); how many there were (-1: stream ended).
    """
    buf = st.buf + data if st.buf else data
    pos, n, got = 0, len(buf), 0
    seqs = st.seqs
    while pos < n:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(buf[pos:eol], 16)
        end = eol + 2 + size
        if end + 2 > n:
            break
        if size == 0:
            st.buf = b""
            return -1
        for line in buf[eol + 2:end].splitlines():  # one message per chunk; tolerate more
            sp = line.find(b" ")
            seq = int(line[:sp])
            seqs.append(seq)
            lat.append(now - int(line[sp + 1:]))
            if lat_seq is not None:
                lat_seq.append(seq)
            got += 1
        pos = end + 2
    st.buf = buf[pos:]
    return got


def parse_ws(st: Stream, data: bytes, now: int, lat: array.array, lat_seq: array.array | None = None) -> int:
    """
    Server frames by hand (unmasked, RFC 6455 §5.2): record each text/binary message; how
    many there were (-1: a close frame). C{sync} messages only mark the client subscribed.
    Fragmented messages are not expected (the proxies send each publish as one frame).
    """
    buf = st.buf + data if st.buf else data
    pos, n, got = 0, len(buf), 0
    seqs = st.seqs
    while n - pos >= 2:
        opcode = buf[pos] & 0x0F
        size = buf[pos + 1] & 0x7F
        start = pos + 2
        if size == 126:
            if n - pos < 4:
                break
            size = int.from_bytes(buf[pos + 2:pos + 4], "big")
            start = pos + 4
        elif size == 127:
            if n - pos < 10:
                break
            size = int.from_bytes(buf[pos + 2:pos + 10], "big")
            start = pos + 10
        end = start + size
        if end > n:
            break
        if opcode == 8:
            st.buf = b""
            return -1
        if opcode in (1, 2):
            payload = buf[start:end]
            if payload == SYNC:
                st.synced = True
            else:
                sp = payload.find(b" ")
                seq = int(payload[:sp])
                seqs.append(seq)
                lat.append(now - int(payload[sp + 1:]))
                if lat_seq is not None:
                    lat_seq.append(seq)
                got += 1
        # ping/pong/continuation: ignored (a ping left unanswered does not close within a run)
        pos = end
    st.buf = buf[pos:]
    return got


def publish_once(port: int, body: bytes) -> None:
    """One blocking C{POST /publish/} (for the sync message, outside any measured window)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"sync publish refused: {answer[:200]!r}")


def sync_ws(cfg: dict[str, Any], streams: list[Stream], errors: list[str], deadline_s: float = 60.0) -> float:
    """
    Publish C{sync} (again every second) until every client has received one, so the burst
    does not start before the proxy has subscribed every WebSocket; the seconds it took.
    """
    t0 = time.monotonic()
    body = json.dumps({"items": [{"channel": cfg["channel"],
                                  "formats": {"ws-message": {"content": SYNC.decode()}}}]}).encode()
    by_fd = {st.sock.fileno(): st for st in streams}
    ep = select.epoll()
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    waiting = len(streams)
    lat = array.array("q")
    next_publish = 0.0
    while waiting and time.monotonic() - t0 < deadline_s:
        if time.monotonic() >= next_publish:
            publish_once(cfg["control_port"], body)
            next_publish = time.monotonic() + 1.0
        for fd, _ in ep.poll(0.1):
            st = by_fd[fd]
            try:
                data = st.sock.recv(RECV)
            except BlockingIOError:
                continue
            was = st.synced
            if not data or parse_ws(st, data, 0, lat) < 0:
                ep.unregister(fd)
                waiting -= not was
                if len(errors) < 20:
                    errors.append(f"conn {st.idx}: closed by the server before the burst")
                continue
            if st.synced and not was:
                waiting -= 1
    ep.close()
    if waiting:
        errors.append(f"{waiting} WebSocket(s) never received the sync message in {deadline_s:.0f} s")
    if lat:
        errors.append(f"{len(lat)} non-sync message(s) arrived before the burst")
    return time.monotonic() - t0


#: Linux's SO_TIMESTAMPNS (also the SCM type of its ancillary data), when the socket module lacks it
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ANC_SPACE = socket.CMSG_SPACE(16)


def _rx_time(anc: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive time (CLOCK_REALTIME ns) of the last segment a C{recvmsg} read; 0 if none came."""
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
            sec, nsec = struct.unpack_from("qq", cdata)
            return sec * 1_000_000_000 + nsec
    return 0


def _kernel_latencies(lat: array.array, got: int, lag: int, klat: array.array, lags: array.array) -> None:
    """The last C{got} entries of C{lat} came in one read C{lag} ns after its last segment reached the socket."""
    lags.append(lag)
    for i in range(len(lat) - got, len(lat)):
        klat.append(lat[i] - lag)


def _spread(values: Any) -> dict[str, float]:
    """p50, p99 and max of sorted ns values, in seconds."""
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": common.percentile(values, 50) / 1e9, "p99": common.percentile(values, 99) / 1e9,
            "max": values[-1] / 1e9}


def per_publish(lat: array.array, lat_seq: array.array, messages: int) -> dict[str, float]:
    """
    Per publish, the latency of its first and of its last subscriber: the first is the
    publish path (accept, parse, the first send, the read); last minus first is how long
    its fan-out took. Medians and maxima over the publishes, in seconds.
    """
    first = [1 << 62] * messages
    last = [0] * messages
    for seq, value in zip(lat_seq, lat):
        if 0 <= seq < messages:
            if value < first[seq]:
                first[seq] = value
            if value > last[seq]:
                last[seq] = value
    have = [i for i in range(messages) if last[i]]
    if not have:
        return {}
    f = sorted(first[i] for i in have)
    l_ = sorted(last[i] for i in have)
    spread = sorted(last[i] - first[i] for i in have)
    return {"first_p50": common.percentile(f, 50) / 1e9, "first_max": f[-1] / 1e9,
            "last_p50": common.percentile(l_, 50) / 1e9, "last_max": l_[-1] / 1e9,
            "fanout_p50": common.percentile(spread, 50) / 1e9, "fanout_max": spread[-1] / 1e9,
            # each publish's last subscriber (µs), in publish order: do slow fan-outs recur?
            "last_us": [last[i] // 1000 for i in range(messages)]}


def burst(cfg: dict[str, Any], streams: list[Stream], errors: list[str], zmq_pair: tuple[Any, Any] | None) -> dict[str, Any]:
    """Publish, read every stream until all deliveries arrived (or none for C{idle_timeout} s); the figures."""
    m = cfg["messages"]
    mode = cfg.get("mode", "stream")
    parse_fn = parse_ws if mode == "ws" else parse
    target = len(streams) * m
    many, batch = cfg.get("many_channels", False), cfg.get("batch", 100)
    n_conn = cfg["connections"]
    per_round = -(-n_conn // batch)  # --many-channels: POSTs per round
    jobs = m * per_round if many else m

    def round_body(job: int, ns: int) -> bytes:
        """--many-channels: round C{job // per_round}'s message to channels c<k>.. of batch C{job % per_round}."""
        rnd, first = divmod(job, per_round)
        first *= batch
        return b'{"items": [%s]}' % b", ".join(item_json(f"{cfg['channel']}{k}", rnd, ns, mode)
                                               for k in range(first, min(first + batch, n_conn)))
    ep = select.epoll()
    by_fd = {st.sock.fileno(): st for st in streams}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    rx_ts = bool(cfg.get("rx_timestamps"))
    if rx_ts:  # the kernel stamps each segment as it reaches the socket (loopback: in the sender's send)
        for st in streams:
            st.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    lat = array.array("q")
    lat_seq = array.array("i")  # the sequence number of each entry of lat
    klat = array.array("q")  # rx_ts: publish sent -> its segment in the client's socket
    lags = array.array("q")  # rx_ts: per read, segment in the socket -> read by the client
    sent, acked = [0] * jobs, [0] * jobs
    delivered = closed_early = 0
    last_recv = 0
    cpu0, wait0, wall0 = common.own_cpu(), common.own_wait(), time.monotonic()
    pubs = None
    publish_error = None
    try:
        if zmq_pair is not None and many:  # single-item messages: the caller set batch = 1
            publish_zmq_many(zmq_pair[1], cfg["channel"], m, n_conn, sent, acked)
        elif zmq_pair is not None:
            publish_zmq(zmq_pair[1], cfg["channel"], m, sent, acked, mode)
        else:
            # the publish connections on an epoll of their own, looked at between every
            # PUB_EVERY reads: a publisher reacts to its answer as a process of its own
            # would, not after this loop has read every stream that was ready before it
            pub_ep = select.epoll()
            ep.register(pub_ep.fileno(), select.EPOLLIN)
            pubs = HttpPublishers(pub_ep, cfg["control_port"], cfg["channel"], jobs, cfg["publish_concurrency"], sent,
                                  acked, mode, body_fn=round_body if many else None, pace=cfg.get("pace"))
    except OSError as e:
        publish_error = f"publishing failed: {e!r}"
    for st in streams:  # bytes that came with [stream opened]
        if st.buf:
            delivered += max(0, parse_fn(st, b"", time.time_ns(), lat, lat_seq))
    idle = cfg["idle_timeout"]
    last_progress = time.monotonic()
    recv = socket.socket.recv
    recvmsg = socket.socket.recvmsg
    kts = 0
    # Stream mode keeps each read with its receive time and parses after the burst: during it
    # a read only counts its messages (each "<seq> <ns>\n" holds exactly one space; chunk
    # framing holds none), so the client spends less per delivery and is less often the
    # limit. Latencies are the same: each message is timed by the read that brought it.
    deferred: list[tuple[Stream, bytes, int, int]] | None = [] if parse_fn is parse else None
    while delivered < target or (pubs is not None and pubs.done < jobs and pubs.error is None):
        events = ep.poll(pubs.poll_timeout() if pubs is not None else 0.5)
        if pubs is not None and pubs.pace:
            pubs.tick()
            last_progress = time.monotonic() if pubs.next_seq < jobs else last_progress
        now = time.time_ns()
        progressed = False
        for i, (fd, _) in enumerate(events):
            if not i % PUB_EVERY:
                if i:
                    now = time.time_ns()  # a read's time, within PUB_EVERY reads (a batch can take ms)
                if pubs is not None:
                    progressed = pubs.serve() or progressed
            st = by_fd.get(fd)
            if st is None:
                continue
            try:
                if rx_ts:
                    data, anc, _, _ = recvmsg(st.sock, RECV, ANC_SPACE)
                    kts = _rx_time(anc)
                else:
                    data = recv(st.sock, RECV)
            except BlockingIOError:
                continue
            except OSError as e:
                data = b""
                if len(errors) < 20:
                    errors.append(f"conn {st.idx}: {e}")
            if deferred is not None and data:
                deferred.append((st, data, now, kts))
                got = data.count(b" ")
            else:
                got = parse_fn(st, data, now, lat, lat_seq) if data else -1
                if got > 0 and kts:
                    _kernel_latencies(lat, got, now - kts, klat, lags)
            if got < 0:
                if len(errors) < 20:
                    errors.append(f"conn {st.idx}: {'ended' if data else 'closed'} by the server")
                ep.unregister(fd)
                del by_fd[fd]
                st.closed = True
                closed_early += 1
                continue
            if got:
                delivered += got
                last_recv = now
                progressed = True
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > idle:
            break
    cpu1, wait1, wall1 = common.own_cpu(), common.own_wait(), time.monotonic()
    print(json.dumps({"event": "burst_done"}), flush=True)  # the orchestrator reads the proxy's CPU now
    for st, data, now, kts in deferred or ():
        if st.closed:
            continue
        got = parse(st, data, now, lat, lat_seq)
        if got < 0:  # a zero-size chunk: the proxy ended the stream
            if len(errors) < 20:
                errors.append(f"conn {st.idx}: ended by the server")
            st.closed = True
            closed_early += 1
        elif got and kts:
            _kernel_latencies(lat, got, now - kts, klat, lags)
    if pubs is not None and pubs.error:
        publish_error = pubs.error
    if zmq_pair is not None:
        zmq_pair[0].term()
    first = min((t for t in sent if t), default=0)
    span = (last_recv - first) / 1e9 if last_recv and first else 0.0
    lat_sorted = sorted(lat)
    extra: dict[str, Any] = {}
    if not many:
        extra["per_publish"] = per_publish(lat, lat_seq, m)
    if rx_ts:
        extra["kernel"] = _spread(sorted(klat))
        extra["read_lag"] = _spread(sorted(lags))
    return {
        **extra,
        "delivered": delivered, "expected": target, "span_s": span,
        "publish_s": (max(acked) - first) / 1e9 if first and max(acked) else 0.0,
        # from the last publish acknowledged (HTTP) or queued (ZMQ) to the last delivery
        "tail_s": (last_recv - max(acked)) / 1e9 if last_recv and max(acked) else 0.0,
        "rate": delivered / span if span > 0 else 0.0,
        "p50": common.percentile(lat_sorted, 50) / 1e9, "p99": common.percentile(lat_sorted, 99) / 1e9,
        "max": (lat_sorted[-1] / 1e9) if lat_sorted else 0.0,
        "closed_early": closed_early, "load_cpu": cpu1 - cpu0, "load_wall": wall1 - wall0, "load_wait": wait1 - wait0,
        "publish_error": publish_error, "sent": sent, "acked": acked,
    }


# --- checking ----------------------------------------------------------------------------------------


def check_orders(orders: dict[bytes, int], messages: int, sent: list[int], acked: list[int]) -> list[str]:
    """
    Problems with the distinct delivery orders seen (C{orders}: order as C{array('i')}
    bytes -> how many subscribers saw it). Empty when every subscriber got every message
    once, all in one order consistent with publish acknowledgements.
    """
    problems = []
    full = list(range(messages))
    complete_orders = 0
    for raw, count in orders.items():
        seqs = array.array("i")
        seqs.frombytes(raw)
        if sorted(seqs) != full:
            have = set(seqs)
            if len(problems) < 5:
                problems.append(f"{count} subscriber(s) got {len(seqs)} messages: {messages - len(have)} missing, "
                                f"{len(seqs) - len(have)} duplicated")
            continue
        complete_orders += 1
        # happens-before: no message may follow one that was acknowledged before it was sent
        later_min_ack = 1 << 62
        for seq in reversed(seqs):
            if sent[seq] > later_min_ack:
                problems.append(f"{count} subscriber(s): message {seq} delivered after a message that was "
                                f"acknowledged before {seq} was sent")
                break
            later_min_ack = min(later_min_ack, acked[seq])
    if complete_orders > 1:
        problems.append(f"subscribers disagree on the order: {complete_orders} different orders")
    return problems


def check_many(streams: list[Stream], connections: int, rounds: int, batch: int, sent: list[int],
               acked: list[int]) -> list[str]:
    """
    C{--many-channels}: problems with what each subscriber (its own channel C{c<i>}) got. Empty
    when every one got every round exactly once, never a round after one whose publish was
    acknowledged before its own was sent. Subscribers need not agree with each other.
    """
    per_round = -(-connections // batch)
    full = list(range(rounds))
    missing = duplicated = short = misordered = 0
    for st in streams:
        seqs = list(st.seqs)
        if sorted(seqs) != full:
            have = set(seqs)
            short += 1
            missing += rounds - len(have)
            duplicated += len(seqs) - len(have)
            continue
        later_min_ack = 1 << 62
        for rnd in reversed(seqs):
            job = rnd * per_round + st.idx // batch
            if sent[job] > later_min_ack:
                misordered += 1
                break
            later_min_ack = min(later_min_ack, acked[job])
    problems = []
    if short:
        problems.append(f"{short} subscriber(s) did not get every round exactly once: {missing:,} message(s) "
                        f"missing, {duplicated:,} duplicated")
    if misordered:
        problems.append(f"{misordered} subscriber(s) got a round after one acknowledged before it was sent")
    return problems


# --- main ----------------------------------------------------------------------------------------------


def main(cfg: dict[str, Any]) -> None:
    """Open the streams, say C{ready}, run the burst on C{go}, check, print the result."""
    errors: list[str] = []
    t0 = time.perf_counter()
    streams = open_streams(cfg, errors)
    connect_s = time.perf_counter() - t0
    # C{sync: false} (setup_cost): the WebSockets are only held, nothing is published to them
    sync_s = sync_ws(cfg, streams, errors) if cfg.get("mode") == "ws" and streams and cfg.get("sync", True) else 0.0
    zmq_pair = connect_zmq(cfg["push_spec"]) if cfg["input"] == "zmq" else None
    if zmq_pair is not None:
        time.sleep(0.2)  # let its TCP connection come up
    print(json.dumps({"event": "ready", "opened": len(streams), "connect_s": connect_s, "sync_s": sync_s,
                      "errors": errors[:10]}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    result = burst(cfg, streams, errors, zmq_pair)
    for st in streams:
        try:
            st.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        st.sock.close()  # with linger 0: a reset, no FIN/TIME_WAIT dance for thousands of sockets
    orders: dict[bytes, int] = {}
    for st in streams:
        raw = st.seqs.tobytes()
        orders[raw] = orders.get(raw, 0) + 1
    if cfg.get("many_channels"):
        problems = check_many(streams, cfg["connections"], cfg["messages"], cfg.get("batch", 100), result.pop("sent"),
                              result.pop("acked"))
    else:
        problems = check_orders(orders, cfg["messages"], result.pop("sent"), result.pop("acked"))
    publish_error = result.pop("publish_error")
    if publish_error:
        problems.insert(0, publish_error)
    result.update(event="result", opened=len(streams), connect_s=connect_s, orders=len(orders), problems=problems,
                  errors=errors[:10])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
