"""Unix-socket client listeners: the socket file at start (stale, taken, not a socket), its mode and owner."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactor
from twisted.internet.protocol import Factory, Protocol

from pushpin_tx.net.listening import ListenError
from pushpin_tx.net.local import clear_stale_socket, current_umask, listen_local, listen_shared


def _short(tmp_path: Path, name: str = "s") -> str:
    return str(tmp_path / name)  # pytest's tmp paths fit in sun_path (108 bytes)


def test_stale_socket_file_is_removed(tmp_path: Path) -> None:
    """A socket file left by a killed process (nobody accepts) is removed before binding."""
    path = _short(tmp_path)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens
    clear_stale_socket(path, "client (local)")
    assert not os.path.exists(path)


def test_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    """A socket another server accepts on stops start-up, and its file stays."""
    path = _short(tmp_path)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(ListenError, match="another process is listening"):
            clear_stale_socket(path, "client (local)")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        live.close()


def test_a_regular_file_is_never_deleted(tmp_path: Path) -> None:
    """A path naming a file that is not a socket (a typo) stops start-up; the file is kept."""
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(ListenError, match=r"client \(local\): cannot listen on .*notes.txt: the path exists and is not a socket"):
        clear_stale_socket(str(path), "client (local)")
    assert path.read_text() == "keep me"


def test_mode_is_passed_to_the_port(tmp_path: Path) -> None:
    """The configured mode is what the port applies; without one, what the umask gives (Pushpin sets none)."""
    reactor = MemoryReactor()
    factory = Factory.forProtocol(Protocol)
    listen_local(reactor, _short(tmp_path, "a"), factory, mode=0o660)
    listen_local(reactor, _short(tmp_path, "b"), factory)
    modes = [kw_mode for (_path, _factory, _backlog, kw_mode, _pid) in reactor.unixServers]
    assert modes == [0o660, 0o777 & ~current_umask()]


class _BindingReactor:
    """listenUNIX that really binds (no reactor loop needed): chown needs a real file."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def listenUNIX(self, path: str, factory: object, backlog: int, mode: int) -> "_BindingReactor":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, mode)
        self.sockets.append(sock)
        return self

    def stopListening(self) -> None:
        for sock in self.sockets:
            sock.close()


def test_owner_and_group_applied(tmp_path: Path) -> None:
    """user= and group= (names or numbers) are applied to the socket file with chown."""
    if os.geteuid() != 0:
        pytest.skip("chown to another owner needs root")
    import pwd

    path = _short(tmp_path)
    reactor = _BindingReactor()
    listen_local(reactor, path, Factory.forProtocol(Protocol), mode=0o640, user="nobody", group="65534")
    reactor.stopListening()
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam("nobody").pw_uid, 65534, 0o640)


def test_unknown_user_names_itself(tmp_path: Path) -> None:
    """An owner that does not exist stops start-up with its name, before anything is bound."""
    reactor = MemoryReactor()
    with pytest.raises(ListenError, match="no such user or group: .*no-such-user-x"):
        listen_local(reactor, _short(tmp_path), Factory.forProtocol(Protocol), user="no-such-user-x")
    assert reactor.unixServers == []


# a worker's share of the main process's socket (workers > 1) --------------------------------------


def _adopting(adopted: list):
    """An C{adopt} for listen_shared that records what it was given (with the descriptor still open then) and returns a port."""

    def adopt(reactor, fd, factory):
        adopted.append((reactor, fd, factory, stat.S_ISSOCK(os.fstat(fd).st_mode)))
        return "port"

    return adopt


def test_a_shared_socket_is_adopted_and_the_inherited_descriptor_closed(tmp_path: Path) -> None:
    """The inherited listening socket is handed to adopt (which keeps its own copy), then the inherited descriptor is closed."""
    path = str(tmp_path / "s.sock")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(path)
    listening.listen(1)
    inherited = os.dup(listening.fileno())
    reactor = MemoryReactor()
    factory = Factory.forProtocol(Protocol)
    adopted: list = []
    try:
        assert listen_shared(reactor, path, inherited, factory, adopt=_adopting(adopted)) == "port"
        assert adopted == [(reactor, inherited, factory, True)]
        with pytest.raises(OSError):
            os.fstat(inherited)
    finally:
        listening.close()


@pytest.mark.parametrize("kind", ["not listening", "tcp", "pipe"])
def test_a_descriptor_that_is_not_a_listening_unix_socket_is_refused(tmp_path: Path, kind: str) -> None:
    """A bound but not listening socket, a TCP one, a pipe: a ListenError naming the path and the descriptor, nothing adopted, the descriptor closed."""
    path = str(tmp_path / "s.sock")
    keep: list = []
    if kind == "not listening":
        skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        skt.bind(path)
        keep.append(skt)
        fd = os.dup(skt.fileno())
    elif kind == "tcp":
        skt = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        skt.bind(("127.0.0.1", 0))
        skt.listen(1)
        keep.append(skt)
        fd = os.dup(skt.fileno())
    else:
        r, fd = os.pipe()
        keep.append(r)
    adopted: list = []
    try:
        with pytest.raises(ListenError) as e:
            listen_shared(MemoryReactor(), path, fd, Factory.forProtocol(Protocol), adopt=_adopting(adopted))
        assert str(e.value) == f"client (local): cannot listen on {path}: inherited descriptor {fd} is not a listening Unix socket"
        assert adopted == []
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        for k in keep:
            k.close() if hasattr(k, "close") else os.close(k)
