"""client_maxconn: the listeners stop accepting at the limit and accept again when a connection closes."""

from __future__ import annotations

from typing import Any

from pushpin_tx.net.maxconn import ConnectionLimit, per_process


class _Port:
    """A listening port's reading switch and accept burst, as the limit drives them."""

    connected = True

    def __init__(self) -> None:
        self.reading = True
        self.numberAccepts = 100
        self.bursts: list[int] = []

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def doRead(self) -> Any:
        self.bursts.append(self.numberAccepts)


def test_ports_stop_reading_at_the_limit_and_resume_below_it() -> None:
    """At the limit every client port stops accepting (clients wait in the backlog); one close resumes them all."""
    limit = ConnectionLimit(2)
    ports = [_Port(), _Port()]
    for port in ports:
        limit.watch(port)
    limit.opened()
    assert [p.reading for p in ports] == [True, True]
    limit.opened()
    assert [p.reading for p in ports] == [False, False]
    limit.closed()
    assert [p.reading for p in ports] == [True, True]
    assert limit.times_full == 1


def test_an_accept_burst_is_capped_to_the_room_left() -> None:
    """Twisted's burst of accepts is capped before each read, so a burst cannot pass the limit."""
    limit = ConnectionLimit(5)
    port = _Port()
    limit.watch(port)
    for _ in range(3):
        limit.opened()
    port.doRead()
    assert port.bursts == [2]


def test_a_port_watched_while_full_starts_paused() -> None:
    """A listener added while the process is at its limit does not accept either."""
    limit = ConnectionLimit(1)
    limit.opened()
    port = _Port()
    limit.watch(port)
    assert port.reading is False


def test_a_closed_port_is_not_restarted() -> None:
    """A listener that stopped (shutdown) is left alone when connections close."""
    limit = ConnectionLimit(1)
    port = _Port()
    limit.watch(port)
    limit.opened()
    port.connected = False
    limit.closed()
    assert port.reading is False


def test_the_limit_is_shared_out_over_processes() -> None:
    """With workers, each process takes client_maxconn // processes (at least 1), as connmgr's threads."""
    assert [per_process(50000, 1), per_process(50000, 2), per_process(5, 2), per_process(1, 4)] == [50000, 25000, 2, 1]
