# -*- test-case-name: tests.zeromq.test_reader -*-
"""
Glue between one pyzmq socket and the Twisted reactor: no domain knowledge, only the
mechanics of reading a ZeroMQ socket without blocking or starving the reactor.

A ZeroMQ socket is not a file descriptor. It exposes C{zmq.FD}, a I{signalling}
descriptor that becomes readable when the socket's internal command mailbox changes
state, not once per message, and any C{recv}, C{send} or C{getsockopt(EVENTS)} may
consume that signal (pyzmq#199, libzmq#3641). So:

  1. after the reader is added, check C{EVENTS} at once (messages queued before start
     raised their signal long ago);
  2. in L{ZmqReader.doRead}, keep receiving until C{EVENTS} lacks C{POLLIN};
  3. after every C{send} or subscription change on the socket, the owner calls
     L{ZmqReader.poke}, which re-checks on the next turn (the write may have eaten the edge);
  4. at most L{ZmqReader.batch} messages are read per reactor turn, so a flood cannot
     starve everything else, and the continuation is scheduled here because no new edge
     will come for messages already queued.

The reader is also a push producer for the publish backpressure: L{ZmqReader.pauseProducing}
stops reading while the proxy's deliveries are behind their bound, and messages wait in the
socket (a PUSH peer then blocks at the high-water mark), independently of L{ZmqReader.pause}.

This is about a hundred lines written here rather than a dependency on txZMQ 1.0.0
(dormant since 2021, and it drains without a bound and uses the global reactor).
"""

from __future__ import annotations

from typing import Any, Callable

import zmq
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["ZmqReader"]


@implementer(IReadDescriptor)
class ZmqReader:
    """
    Feed complete multipart messages from one pyzmq socket to C{deliver}, inside the reactor.

    The reader owns the socket from L{start} on: L{stop} closes it (linger 0). C{deliver}
    is called with the list of frames of each message; an exception from it is logged and
    the reader carries on with the next message. C{deliver} may call L{pause}, L{stop} or
    send on the socket (then it should call L{poke}, though the loop re-checks anyway).

    @ivar batches: how many read passes delivered at least one message (for tests and the
        console: more than one pass for a backlog shows the reactor got turns in between).
    @ivar received: messages delivered so far.
    """

    _log = Logger()

    #: Fairness: at most this many messages per reactor turn.
    DEFAULT_BATCH = 256

    # The reactor must provide IReactorFDSet and IReactorTime; annotated as Any because
    # Python typing has no intersection of zope interfaces.
    def __init__(self, reactor: Any, sock: zmq.Socket, deliver: Callable[[list[bytes]], None], *,
                 name: str = "zmq", batch: int = DEFAULT_BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._reactor = reactor
        self._sock = sock
        self._deliver = deliver
        self._name = name
        self.batch = batch
        self._fd: int = int(sock.getsockopt(zmq.FD))
        self._again: IDelayedCall | None = None
        self._reading = False  # registered with the reactor
        self._started = False
        self._paused = False
        self._held = False  # held back by the publish backpressure (pauseProducing)
        self._stopped = False
        self.batches = 0
        self.received = 0

    @property
    def socket(self) -> zmq.Socket:
        """The socket (for sends and socket options; call L{poke} after touching it)."""
        return self._sock

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Watch the socket. Already-queued messages are read on the next reactor turn."""
        if self._stopped:
            raise RuntimeError(f"{self._name}: reader already stopped")
        if self._started:
            return
        self._started = True
        if not self._paused and not self._held:
            self._add()
            self.poke()  # rule 1: the edge for queued messages is already gone

    def pause(self) -> None:
        """
        Stop reading. Messages stay queued in the socket; once its receive high-water mark
        is reached, a PUSH or REQ peer blocks (a PUB peer drops): that is the backpressure.
        """
        if self._paused or self._stopped:
            return
        self._paused = True
        self._remove()
        self._cancel()

    def resume(self) -> None:
        """Start reading again after L{pause}, beginning with what queued meanwhile."""
        if not self._paused or self._stopped:
            return
        self._paused = False
        if self._started and not self._held:
            self._add()
            self.poke()

    @property
    def held(self) -> bool:
        """Held back by L{pauseProducing} (the proxy's deliveries are behind)."""
        return self._held

    def pauseProducing(self) -> None:
        """
        Backpressure (L{pushpin_tx.core.pending.Backpressure}): stop reading until
        L{resumeProducing}, whatever L{pause}/L{resume} say meanwhile (both must allow reading).
        """
        if self._held or self._stopped:
            return
        self._held = True
        self._remove()
        self._cancel()

    def resumeProducing(self) -> None:
        """The deliveries caught up: read again (unless L{pause}d), beginning with what queued meanwhile."""
        if not self._held or self._stopped:
            return
        self._held = False
        if self._started and not self._paused:
            self._add()
            self.poke()

    def poke(self) -> None:
        """Re-check the socket on the next reactor turn (call after any send or (un)subscribe)."""
        if self._stopped or self._paused or self._held or not self._started:
            return
        if self._again is None or not self._again.active():
            self._again = self._reactor.callLater(0, self._continue)

    def stop(self) -> None:
        """Stop reading, cancel the pending re-check and close the socket with linger 0."""
        if self._stopped:
            return
        self._stopped = True
        self._remove()
        self._cancel()
        self._sock.close(linger=0)

    # --- IReadDescriptor -----------------------------------------------------------------

    def fileno(self) -> int:
        return -1 if self._stopped else self._fd

    def logPrefix(self) -> str:
        return self._name

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the descriptor: stop cleanly."""
        if not self._stopped:
            self._log.warn("{name}: reader lost: {why}", name=self._name, why=reason.getErrorMessage())
        self.stop()

    def doRead(self) -> None:
        """Deliver up to L{batch} queued messages; schedule a continuation if more may wait."""
        if self._stopped or self._paused or self._held:
            return
        sock = self._sock
        delivered = 0
        for _ in range(self.batch):
            try:
                if not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    break  # rule 2: drained; the next edge will tell us about more
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue  # EVENTS was stale; ask again
            except zmq.ZMQError as e:
                self._log.error("{name}: socket error, reader stopped: {why}", name=self._name, why=e)
                self.stop()
                return
            delivered += 1
            self.received += 1
            try:
                self._deliver(frames)
            except Exception:
                self._log.failure("{name}: message handler failed; message dropped", name=self._name)
            if self._stopped or self._paused or self._held:
                break
        else:
            self.poke()  # rule 4: the batch is spent, more may be queued and no edge will come
        if delivered:
            self.batches += 1

    # --- internals ------------------------------------------------------------------------

    def _continue(self) -> None:
        self._again = None
        self.doRead()

    def _add(self) -> None:
        if not self._reading:
            self._reading = True
            self._reactor.addReader(self)

    def _remove(self) -> None:
        if self._reading:
            self._reading = False
            self._reactor.removeReader(self)

    def _cancel(self) -> None:
        if self._again is not None:
            if self._again.active():
                self._again.cancel()
            self._again = None
