"""The RESP3 encoder, incremental parser and command/push protocol of the backplane's Redis client."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pushpin_tx.backplane.resp import Push, RespError, RespParser, RespProtocol, encode


def test_encode_is_an_array_of_bulk_strings():
    """Commands go out as RESP arrays of bulk strings; str is UTF-8, int its digits."""
    assert encode(b"PUBLISH", "ch\u00e9", 12) == b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nch\xc3\xa9\r\n$2\r\n12\r\n"


def test_parser_reads_every_resp3_type():
    """Each RESP3 type reads as its Python value; attributes are skipped."""
    data = (b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n_\r\n#t\r\n,1.5\r\n"
            b"(123456789012345678901\r\n=8\r\ntxt:some\r\n!5\r\noops!\r\n~1\r\n+a\r\n%1\r\n+k\r\n:2\r\n"
            b"|1\r\n+meta\r\n+v\r\n+after\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n")
    values = RespParser().feed(data)
    assert values[:4] == [b"OK", values[1], 42, b"abc"]
    assert isinstance(values[1], RespError) and str(values[1]) == "ERR bad"
    assert values[4:13] == [None, [1, b"x"], None, True, 1.5, 123456789012345678901, b"some", values[11], [b"a"]]
    assert isinstance(values[11], RespError)
    assert values[13] == {b"k": 2}
    assert values[14] == b"after"
    assert isinstance(values[15], Push) and values[15] == [b"message", b"c", b"p"]


def test_parser_resumes_across_any_split():
    """A reply split at any byte is read once, whole, when its last byte comes."""
    data = b"*2\r\n$5\r\nhello\r\n:7\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"
    for cut in range(1, len(data)):
        parser = RespParser()
        values = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert values == [[b"hello", 7], [b"subscribe", b"c", 1]], cut


def test_parser_refuses_an_unknown_type_byte():
    """A byte that starts no RESP type is an error, not a hang."""
    with pytest.raises(ValueError):
        RespParser().feed(b"?what\r\n")


def test_protocol_answers_in_order_and_routes_pushes():
    """Replies fire the commands' Deferreds in order; pushes in between go to on_push; loss fails the rest."""
    pushes, lost = [], []
    proto = RespProtocol(pushes.append, lost.append)
    transport = StringTransport()
    proto.makeConnection(transport)
    first, second, third = proto.command(b"PING"), proto.command(b"GET", b"k"), proto.command(b"GET", b"j")
    results: list = []
    first.addCallback(results.append)
    second.addErrback(lambda f: results.append(f.check(RespError)))
    third.addErrback(lambda f: results.append(f.check(ConnectionDone)))
    assert transport.value() == encode(b"PING") + encode(b"GET", b"k") + encode(b"GET", b"j")
    proto.dataReceived(b"+PONG\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n-ERR x\r\n")
    assert results == [b"PONG", RespError]
    assert pushes == [[b"message", b"c", b"p"]]
    proto.connectionLost(Failure(ConnectionDone()))
    assert results == [b"PONG", RespError, ConnectionDone]
    assert len(lost) == 1 and not proto.connected
