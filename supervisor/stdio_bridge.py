"""``superv attach --stdio NAME``: splice stdin/stdout to a session's socket, for SSH.

Remote attach runs this on the box as the SSH channel's command.  The laptop client speaks
the wire protocol end to end *through* it, so the bridge never parses a frame: it moves
bytes both ways until the worker closes the socket.  That keeps it small, fast to start
(standard library only: no trio, no asyncssh, no attrs on the normal path; sshd starts one
per reconnect, so start-up time is reconnect latency) and unable to corrupt the stream.

Only a refusal *before* the splice (bad name, no such session, socket refused) is written
by the bridge itself: as one encoded ``Error`` frame on stdout, so the client reports it
the same way as a refusal from the worker, and exit status 1.

Ends of the stream:

- the worker closes the socket (after ``Detach``, after the agent exited, or on error):
  whatever it sent is flushed to stdout and the bridge exits 0;
- stdin reaches EOF (the SSH channel was closed): the bridge half-closes the socket
  (``SHUT_WR``) so the worker sees its client leave, and keeps copying until the worker
  closes its side;
- stdout breaks (sshd died): nobody can read any more, so the bridge exits at once;
  the worker notices the closed socket and drops this client.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import socket

from agent_worker.paths import PathError, session_dir, session_socket, validate_name
from agent_worker.session_files import SPEC

# Large reads: the SSH channel and the worker both move data in big chunks, and every
# read/write pair is a Python-level loop iteration.
CHUNK = 256 * 1024


def run_bridge(name: str) -> int:
    """Connect to session ``name``'s socket and splice it to stdin/stdout; 0 or 1."""
    try:
        validate_name(name)
        path = session_socket(name)
    except PathError as exc:
        return _refuse(str(exc))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        if _known(name):
            return _serve_ended(name)
        return _refuse(_not_running(name, exc))
    except OSError as exc:
        sock.close()
        return _refuse(f"cannot connect to session {name!r} at {path}: {exc.strerror or exc}")
    try:
        _splice(0, 1, sock)
    finally:
        sock.close()
    return 0


def _known(name: str) -> bool:
    try:
        return (session_dir(name) / SPEC).exists()
    except (PathError, OSError):
        return False


def _serve_ended(name: str) -> int:
    """The worker is gone (the agent ended while the client was away): serve the client's
    hello from the session's files, so its reconnect still gets every byte and the end."""
    from agent_worker import protocol as p
    from agent_worker.conversation import NEED_DATA, ServerConversation
    from supervisor.replay import ended_messages

    conversation = ServerConversation()
    while (hello := conversation.next_event()) is NEED_DATA:
        conversation.receive_data(os.read(0, CHUNK))
    if not isinstance(hello, p.Hello):  # a Violation, or closed before its hello
        message = getattr(hello, "message", None)
        return _refuse(message) if message else 0
    with contextlib.suppress(OSError):
        for event in ended_messages(name, hello):
            _write_all_blocking(1, conversation.send(event))
    return 0


def _not_running(name: str, exc: OSError) -> str:
    try:
        known = session_dir(name).is_dir()
    except (PathError, OSError):
        known = False
    if not known:
        return f"no such session {name!r} (see 'superv ls')"
    if isinstance(exc, ConnectionRefusedError):
        return f"session {name!r} is not running: its worker does not answer (see 'superv ls')"
    return f"session {name!r} is not running (see 'superv ls'; 'superv resume {name}' restarts it)"


def _refuse(message: str) -> int:
    # Imported here, not at the top: the codec needs attrs, and the normal path (the
    # splice) must not pay for it.  Using the codec keeps the frame format in one place.
    from agent_worker.protocol import Error, encode

    with contextlib.suppress(OSError):
        _write_all_blocking(1, encode(Error(message)))
    return 1


def _write_all_blocking(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _set_nonblocking(fd: int) -> int:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return flags


def _splice(in_fd: int, out_fd: int, sock: socket.socket) -> None:
    """Copy in_fd -> sock and sock -> out_fd until the socket's peer closes.

    One pending buffer per direction, and a side is only read while its buffer is empty:
    backpressure flows through (a slow SSH link stalls the socket, and the worker serves a
    slow client from its log instead of buffering here), and memory stays bounded.
    """
    sock_fd = sock.fileno()
    sock.setblocking(False)
    # stdin/stdout may be shared with whoever started us (a terminal, if run by hand):
    # put their flags back so we do not leave a non-blocking tty to the shell.
    saved = {fd: _set_nonblocking(fd) for fd in {in_fd, out_fd}}
    # PollSelector, not epoll: epoll refuses regular files and /dev/null as stdin.
    sel = selectors.PollSelector()
    masks: dict[int, int] = {}

    def want(fd: int, mask: int) -> None:
        old = masks.get(fd, 0)
        if mask == old:
            return
        if not old:
            sel.register(fd, mask)
        elif not mask:
            sel.unregister(fd)
        else:
            sel.modify(fd, mask)
        masks[fd] = mask

    to_sock = memoryview(b"")
    to_out = memoryview(b"")
    in_open = True
    sock_open = True
    sock_shut = False
    try:
        while sock_open or to_out:
            if not in_open and not to_sock and not sock_shut:
                # Everything the client sent has reached the worker: tell it we are done.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                sock_shut = True
            sock_mask = (selectors.EVENT_READ if sock_open and not to_out else 0) | (
                selectors.EVENT_WRITE if to_sock else 0
            )
            want(in_fd, selectors.EVENT_READ if in_open and not to_sock else 0)
            want(out_fd, selectors.EVENT_WRITE if to_out else 0)
            want(sock_fd, sock_mask)
            if not any(masks.values()):
                break  # nothing left to wait for (cannot happen; poll() would hang)
            for key, events in sel.select():
                fd = key.fd
                if fd == in_fd and events & selectors.EVENT_READ:
                    try:
                        data = os.read(in_fd, CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        to_sock = memoryview(data)
                    else:
                        in_open = False
                elif fd == sock_fd:
                    if events & selectors.EVENT_WRITE and to_sock:
                        try:
                            to_sock = to_sock[sock.send(to_sock) :]
                        except BlockingIOError:
                            pass
                        except OSError:
                            # The worker is gone; whatever it sent is still readable.
                            to_sock = memoryview(b"")
                            in_open = False
                            sock_shut = True
                    if events & selectors.EVENT_READ and sock_open and not to_out:
                        try:
                            data = sock.recv(CHUNK)
                        except BlockingIOError:
                            continue
                        except OSError:
                            data = b""
                        if data:
                            to_out = memoryview(data)
                        else:
                            sock_open = False
                elif fd == out_fd and events & selectors.EVENT_WRITE:
                    try:
                        to_out = to_out[os.write(out_fd, to_out) :]
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.EIO, errno.EBADF):
                            return  # our reader (sshd) is gone: nothing more to do
                        raise
    finally:
        sel.close()
        for fd, flags in saved.items():
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
