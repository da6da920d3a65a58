# -*- test-case-name: tests.net.test_local -*-
"""
Unix-socket client listeners (C{[runner] local_ports}), as Pushpin's connection manager
makes them (C{src/connmgr/server.rs}): the socket file is made afresh at start, then given
the configured mode, owner and group; it is removed again when the listener stops
(Twisted's UNIX port unlinks it).

One difference, on purpose: connmgr removes whatever is at the path before binding. Here a
socket file nobody answers on (left by a process that was killed) is removed, but one a
live server still accepts on is not taken over, and a path that is not a socket (a typo
naming a real file) is never deleted: start-up fails naming it instead.

With C{workers} > 1 the main process binds the socket and every worker accepts on it too,
through the listening socket itself, inherited (L{listen_shared}; a Unix socket has no
SO_REUSEPORT): the processes take connections from its one accept queue, and the file's
mode, owner and lifetime stay the main process's.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
from typing import Any, Callable

from pushpin_tx.net.listening import ListenError

__all__ = ["listen_local", "listen_shared", "clear_stale_socket", "current_umask"]


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back; start-up is single-threaded)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clear_stale_socket(path: str, label: str) -> None:
    """
    Make C{path} free to bind: remove a socket file no server answers on.

    @raise ListenError: a server accepts on it, or it is not a socket.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(label, path, "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise ListenError(label, path, os.strerror(e.errno or 0) or str(e)) from None
    else:
        raise ListenError(label, path, "another process is listening on this socket")
    finally:
        probe.close()
    os.unlink(path)


def _owner(user: str | None, group: str | None, label: str, path: str) -> tuple[int, int]:
    uid = gid = -1
    try:
        if user:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as e:
        raise ListenError(label, path, f"no such user or group: {e.args[0]}", verb="set the owner of") from None
    return uid, gid


def listen_local(reactor: Any, path: str, factory: Any, *, mode: int | None = None, user: str | None = None,
                 group: str | None = None, label: str = "client (local)", backlog: int = 511) -> Any:
    """
    Listen on the Unix socket C{path} with C{mode} (None: what the umask gives a new socket,
    as Pushpin leaves it), then C{chown} it to C{user}/C{group} (names or numbers).

    @return: the listening port; stopping it removes the socket file.
    @raise ListenError: the path is taken, or cannot be bound, chmod-ed or chown-ed.
    """
    clear_stale_socket(path, label)
    uid, gid = _owner(user, group, label, path)
    effective = (0o777 & ~current_umask()) if mode is None else mode
    try:
        port = reactor.listenUNIX(path, factory, backlog=backlog, mode=effective)
    except Exception as e:
        socket_error = getattr(e, "socketError", None)
        why = getattr(socket_error, "strerror", None) or str(socket_error or e)
        raise ListenError(label, path, why[:1].lower() + why[1:]) from None
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except OSError as e:
            port.stopListening()
            raise ListenError(label, path, (e.strerror or str(e)).lower(), verb="set the owner of") from None
    return port


def listen_shared(reactor: Any, path: str, fd: int, factory: Any, *, adopt: Callable[[Any, int, Any], Any],
                  label: str = "client (local)") -> Any:
    """
    Accept on the Unix socket C{path} that the main process bound and shares, inherited as
    descriptor C{fd}. C{adopt(reactor, fd, factory)} makes the port: one that leaves the
    socket and its file alone when it stops (L{pushpin_tx._compat.adopt_shared_unix_port};
    Twisted's own would shut the socket down for every process and remove the file). The
    port holds its own duplicate, so C{fd} is closed here, whatever happens.

    @raise ListenError: C{fd} is not a listening Unix stream socket.
    """
    try:
        listening = False
        try:
            probe = socket.socket(fileno=os.dup(fd))
        except OSError as e:
            if e.errno != errno.ENOTSOCK:
                raise ListenError(label, path, f"inherited descriptor {fd}: {os.strerror(e.errno or 0).lower()}") from None
        else:
            try:
                listening = probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM and \
                    probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            finally:
                probe.close()
        if not listening:
            raise ListenError(label, path, f"inherited descriptor {fd} is not a listening Unix socket")
        return adopt(reactor, fd, factory)
    finally:
        os.close(fd)
