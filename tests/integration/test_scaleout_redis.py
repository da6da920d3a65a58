"""
Three pushpin-tx instances with one Redis backplane (a real redis-server, started and
stopped by each test) serve as one: a publish to any instance reaches the streams,
long-polls and WebSockets held on all three, once and in order; the reliable scenario
(ids, prev-id, a lost publish recovered through the next link) is exact across them; and
killing and restarting Redis loses nothing the reliable scenario cannot recover.
"""

from __future__ import annotations

import re

import pytest_twisted


from tests.backplane.cluster import publish, redis_command, start_instances, stop_instances, until, wait_subscribed
from tests.backplane.redisproc import RedisServer

from .harness import ScriptedOrigin, raw_connect, start_origin
from .test_reliable import FruitOrigin, received_items
from .test_websockets import ws_connect


def stream_chunks(raw: bytes) -> list[bytes]:
    """The contents published to a chunked stream, after its opening body."""
    return re.findall(rb"\r\n[0-9a-f]+\r\n(msg [^\n]*)\n", raw)


async def open_stream(reactor, instance, channel: str):
    client = await raw_connect(reactor, instance.client_port)
    client.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    await client.wait_for(reactor, b"[stream opened]\n")
    return client


async def open_poll(reactor, instance, channel: str):
    client = await raw_connect(reactor, instance.client_port)
    client.transport.write(b"GET /response?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    await instance.wait_for_log(rf"subscribe .*channel={channel}")
    return client


def item(channel: str, text: str, **extra) -> dict:
    return {"channel": channel, **extra, "formats": {
        "http-stream": {"content": text + "\n"},
        "http-response": {"body": text + "\n"},
        "ws-message": {"content": text},
    }}


@pytest_twisted.ensureDeferred
async def test_a_publish_to_any_instance_reaches_every_instances_clients_once_in_order(reactor, tmp_path):
    """Three publishes, one to each instance: streams and WebSockets on all three get all three once, in order; long-polls the first."""
    redis = await RedisServer(reactor).start()
    instances = []
    try:
        instances = await start_instances(reactor, tmp_path, 3, ["* test"], backplane=redis.url)
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at redis://127\.0\.0\.1:\d+/0 up")
        streams = [await open_stream(reactor, i, "news") for i in instances]
        polls = [await open_poll(reactor, i, "news") for i in instances]
        sockets = [await ws_connect(reactor, i.client_port, "/ws?channel=news") for i in instances]
        await wait_subscribed(reactor, redis.port, "news", 3)

        for n, instance in enumerate(instances):
            await publish(reactor, instance, [item("news", f"msg {n} from instance {n}")])
        expected = [b"msg %d from instance %d" % (n, n) for n in range(3)]
        for stream in streams:
            await until(reactor, lambda s=stream: len(stream_chunks(s.received)) >= 3, "three chunks")
        for poll in polls:
            await poll.wait_for(reactor, b"msg 0 from instance 0\n")
        for ws in sockets:
            await ws.wait(reactor, lambda w=ws: len(w.messages) >= 3, "three messages")
        # one more publish proves nothing else was on its way (a duplicate would come before it)
        await publish(reactor, instances[1], [item("news", "msg end")])
        for stream in streams:
            await stream.wait_for(reactor, b"msg end\n")
            assert stream_chunks(stream.received) == expected + [b"msg end"]
        for ws in sockets:
            await ws.wait(reactor, lambda w=ws: len(w.messages) >= 4, "four messages")
            assert [m for m, _ in ws.messages] == expected + [b"msg end"]
        for poll in polls:
            assert poll.received.count(b"msg 0 from instance 0\n") == 1
            assert b"msg 1" not in poll.received  # answered once: the long-poll left the channel
        for instance in instances:
            assert len(re.findall(r"backplane: .*away", instance.output)) == 0
    finally:
        codes = await stop_instances(instances)
        await redis.stop()
    assert codes == [0, 0, 0]


async def reliable_clients(reactor, instances, per_instance: int = 1):
    clients = []
    for instance in instances:
        for _ in range(per_instance):
            client = await raw_connect(reactor, instance.client_port)
            client.transport.write(b"GET /fruit/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
            clients.append(client)
    for client in clients:
        await client.wait_for(reactor, b"\r\n\r\n")
    return clients


async def publish_fruit(reactor, fruit: FruitOrigin, instance, n: int, *, lost: bool = False) -> None:
    fruit.items.append(n)
    fruit.items.sort()
    if lost:
        return
    await publish(reactor, instance, [{
        "channel": "fruit", "id": str(n), "prev-id": str(n - 1),
        "formats": {"http-stream": {"content": f"item {n}\n"}},
    }])


@pytest_twisted.ensureDeferred
async def test_reliable_streams_are_exact_across_instances(reactor, tmp_path):
    """Ids 1..30 published round-robin to three instances, #15 never published: every client on every instance gets 1..30 once, in order."""
    fruit = FruitOrigin()
    origin = ScriptedOrigin()
    origin.handlers[b"/fruit/"] = fruit.render
    port = await start_origin(reactor, origin)
    redis = await RedisServer(reactor).start()
    instances = []
    try:
        instances = await start_instances(reactor, tmp_path, 3, [f"* 127.0.0.1:{port.getHost().port}"],
                                          backplane=redis.url, message_wait="1000")
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at .* up")
        clients = await reliable_clients(reactor, instances, per_instance=2)
        await wait_subscribed(reactor, redis.port, "fruit", 3)
        for n in range(1, 31):
            await publish_fruit(reactor, fruit, instances[n % 3], n, lost=(n == 15))
        for client in clients:
            await until(reactor, lambda c=client: 30 in received_items(c.received), "item 30", timeout=30)
        for client in clients:
            assert received_items(client.received) == list(range(1, 31))
        assert fruit.grip_last_seen, "the lost item was recovered through the next link"
    finally:
        codes = await stop_instances(instances)
        await redis.stop()
        await port.stopListening()
    assert codes == [0, 0, 0]


@pytest_twisted.ensureDeferred
async def test_killing_and_restarting_redis_loses_nothing_reliable_and_plain_publishes_resume(reactor, tmp_path):
    """Redis killed mid-run: instances say so and serve their own publishes; after the restart reliable clients have 1..12 exactly, plain ones get the new publishes."""
    fruit = FruitOrigin()
    origin = ScriptedOrigin()
    origin.handlers[b"/fruit/"] = fruit.render

    def plain(request):
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"plain")
        return b"[plain]\n"

    origin.handlers[b"/plain"] = plain
    port = await start_origin(reactor, origin)
    redis = await RedisServer(reactor).start()
    instances = []
    try:
        instances = await start_instances(reactor, tmp_path, 3, [f"* 127.0.0.1:{port.getHost().port}"],
                                          backplane=redis.url, message_wait="1000")
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at .* up")
        clients = await reliable_clients(reactor, instances)
        plains = []
        for instance in instances:
            client = await raw_connect(reactor, instance.client_port)
            client.transport.write(b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await client.wait_for(reactor, b"[plain]\n")
            plains.append(client)
        await wait_subscribed(reactor, redis.port, "fruit", 3)
        await wait_subscribed(reactor, redis.port, "plain", 3)
        for n in range(1, 6):
            await publish_fruit(reactor, fruit, instances[n % 3], n)
        for client in clients:
            await until(reactor, lambda c=client: 5 in received_items(c.received), "item 5")

        await redis.stop()
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at .* is away .*delivered to this instance's subscribers only")
        for n in range(6, 9):  # each reaches its own instance's clients only
            await publish_fruit(reactor, fruit, instances[n % 3], n)
        await publish(reactor, instances[0], [{"channel": "plain", "formats": {"http-stream": {"content": "msg during\n"}}}])
        await plains[0].wait_for(reactor, b"msg during\n")

        await redis.start()  # the same port
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at .* up again, 2 channel\(s\) re-subscribed", timeout=30)
        await wait_subscribed(reactor, redis.port, "fruit", 3)
        await wait_subscribed(reactor, redis.port, "plain", 3)
        for n in range(9, 13):
            await publish_fruit(reactor, fruit, instances[n % 3], n)
        await publish(reactor, instances[2], [{"channel": "plain", "formats": {"http-stream": {"content": "msg after\n"}}}])
        for client in clients:
            await until(reactor, lambda c=client: 12 in received_items(c.received), "item 12", timeout=30)
            assert received_items(client.received) == list(range(1, 13))
        for client in plains:
            await client.wait_for(reactor, b"msg after\n")
            assert client.received.count(b"msg after\n") == 1
        assert plains[1].received.count(b"msg during") == 0  # lost for the other instances, and counted:
        # instance 0 delivered #6 (its prev-id was the last id there) and "msg during" at once; the
        # others' items waited for their predecessor and may have gone out after the reconnect
        match = re.search(r"up again, 2 channel\(s\) re-subscribed; (\d+) item\(s\) were delivered here only",
                          instances[0].output)
        assert match and int(match.group(1)) == 2, instances[0].output[-2000:]
    finally:
        codes = await stop_instances(instances)
        await redis.stop()
        await port.stopListening()
    assert codes == [0, 0, 0]


@pytest_twisted.ensureDeferred
async def test_an_instance_with_workers_talks_to_redis_once_and_pipes_to_its_workers(reactor, tmp_path):
    """Instance 0 runs two processes, instance 1 one: Redis counts two subscribers, and publishes to either reach all of instance 0's streams."""
    redis = await RedisServer(reactor).start()
    instances = []
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        instances = await start_instances(reactor, tmp_path / "a", 1, ["* test"], backplane=redis.url, workers="2")
        instances += await start_instances(reactor, tmp_path / "b", 1, ["* test"], backplane=redis.url, workers="1")
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at .* up")
        await instances[0].wait_for_log(r"\[worker 1\]")
        streams = [await open_stream(reactor, instances[0], "w") for _ in range(6)]
        other = await open_stream(reactor, instances[1], "w")
        await wait_subscribed(reactor, redis.port, "w", 2)
        await publish(reactor, instances[1], [item("w", "msg from one")])
        await publish(reactor, instances[0], [item("w", "msg from zero")])
        for stream in streams + [other]:
            await until(reactor, lambda s=stream: len(stream_chunks(s.received)) >= 2, "two chunks")
            assert stream_chunks(stream.received) == [b"msg from one", b"msg from zero"]
        clients = await redis_clients(reactor, redis.port)
        assert len([c for c in clients if "name=pushpin-tx-" in c]) == 2  # one connection per instance, none per worker
    finally:
        codes = await stop_instances(instances)
        await redis.stop()
    assert codes == [0, 0]


async def redis_clients(reactor, port: int) -> list[str]:
    reply = await redis_command(reactor, port, "CLIENT", "LIST")
    return reply.decode().splitlines()
