"""``superv attach [-r] [USER@]HOST:NAME``: attach over SSH, survive the network, lose nothing.

The laptop side of remote attach.  It opens an SSH connection with asyncssh, runs
``superv attach --stdio NAME`` on the box (:mod:`supervisor.stdio_bridge`, which splices the
channel to the session's socket without parsing), and speaks the wire protocol of
:mod:`agent_worker.protocol` end to end through it.

Position in the stream is an offset in the session's durable log (every ``Output`` frame
carries its offset), so surviving a dropped link is simple: remember ``next_offset``, the
first byte not yet shown, and reconnect with ``Hello(Start.OFFSET, next_offset)``.  The
worker replays from its log; bytes below ``next_offset`` that arrive anyway are dropped.
No byte is lost, none is shown twice.

Dead links are noticed by SSH keepalives (one a second, three unanswered = dead: a frozen
peer is noticed in about 4 s), not by TCP, which can take minutes.  Then a status line
says so and the client reconnects with exponential backoff (0.25 s doubling to 5 s)
forever, until the user detaches with the detach key (which works while disconnected) or
presses Ctrl-C while disconnected.

**Keystrokes typed while disconnected are discarded**, not queued: an agent acts on its
input, and replaying keys typed blind, seconds or minutes late, into whatever the agent
shows by then is unsafe (a stale "y" may approve the wrong action).  The status line says
so while it happens.

asyncio and asyncssh stay in this module, in their own event loop (``asyncio.run``): the
rest of superv is trio and never shares a loop with it.

SSH is configured the OpenSSH way: ``~/.ssh/config`` (Host aliases, HostName, Port, User,
IdentityFile, ProxyJump, ...), the ssh-agent (``SSH_AUTH_SOCK``) and ``~/.ssh/known_hosts``
(or the config's ``UserKnownHostsFile``).  Host keys are always verified: an unknown or
changed key is refused, and ``UserKnownHostsFile none`` does not turn checking off.

Environment:

``SUPERV_SSH_CONFIG``
    an ssh client config file to read instead of ``~/.ssh/config``.
``SUPERV_KNOWN_HOSTS``
    a known_hosts file to trust instead of the configured ones.
``SUPERV_REMOTE_COMMAND``
    the remote superv to run (same as ``--remote-command``), for boxes where it is not on
    the PATH of a non-interactive shell nor in ``~/.local/bin``.  It is a shell fragment,
    like an ssh remote command; `` attach --stdio NAME`` is appended.

When stdout is not a terminal (a pipe, a file), the client writes exactly the session's
bytes to stdout and its notices to stderr, so ``superv attach -r box:NAME > file`` records
the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncssh
import attrs

from agent_worker import protocol, settings
from agent_worker.paths import PathError, validate_name
from agent_worker.protocol import Detach, Hello, Input, Resize, Start
from supervisor import terminal
from supervisor.ssh_link import REMOTE_MISSING_STATUS, SshConfigError, SshLink, remote_superv

FIRST_CONNECT_TIMEOUT = 20.0  # TCP + key exchange + authentication, first time
RECONNECT_TIMEOUT = 6.0  # the same for a reconnect: short, so a retry is never stuck long
WELCOME_TIMEOUT = 20.0  # from channel open to the worker's Welcome
BACKOFF_START = 0.25
BACKOFF_MAX = 5.0
# A session that streamed this long before its link dropped is retried at once: the drop
# was a blip, not a box that drops us right after every Welcome (that one waits 0.25 s).
STABLE_SESSION = 1.0
DETACH_FLUSH_TIMEOUT = 2.0  # how long a Detach may take to reach the worker
READ_SIZE = 64 * 1024
CTRL_C = b"\x03"

log = logging.getLogger(__name__)


class AttachError(Exception):
    """A failure that ends the attach: one line for the user, exit status 1."""


@attrs.frozen
class Target:
    """``[USER@]HOST:NAME`` taken apart; ``host`` may be an ssh config alias."""

    user: str | None
    host: str
    name: str

    @property
    def shown(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_target(text: str) -> Target:
    """Split ``[USER@]HOST:NAME`` (HOST may be ``[v6addr]``); ValueError says what is wrong."""
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"cannot read {text!r}: write [USER@]HOST:NAME, for example box:fix-tests")
    user, _, host = where.rpartition("@")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or (user == "" and "@" in where):
        raise ValueError(f"cannot read {text!r}: write [USER@]HOST:NAME, for example box:fix-tests")
    try:
        validate_name(name)
    except PathError as exc:
        raise ValueError(str(exc)) from None
    return Target(user or None, host, name)


def remote_command_line(name: str, remote_command: str | None) -> str:
    """The command sshd runs (through the user's login shell) to start the bridge."""
    return remote_superv(["attach", "--stdio", validate_name(name)], remote_command)


class Outcome(enum.Enum):
    DETACHED = "detached"
    EXITED = "exited"
    ERROR = "error"
    INTERRUPTED = "interrupted"


@attrs.frozen
class Ending:
    outcome: Outcome
    message: str
    code: int


def run_remote_attach(
    target: str,
    *,
    read_only: bool,
    start: Start,
    value: int,
    detach_key: bytes,
    remote_command: str | None,
) -> int:
    """Attach this terminal to ``[USER@]HOST:NAME`` over SSH; the exit status.

    0 after a detach or when the session ends, 1 on an error (one line on stderr), 2 if
    ``target`` cannot be read, 128+N when interrupted by signal N.
    """
    try:
        parsed = parse_target(target)
    except (ValueError, PathError) as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return 2
    if remote_command is None:
        remote_command = settings.current().remote_command
    # asyncssh logs failures we already report in one line; keep its records out of the
    # user's terminal.  Done here, at the edge, never on import.
    logging.getLogger("asyncssh").setLevel(logging.CRITICAL)
    client = RemoteAttach(
        parsed,
        read_only=read_only,
        start=start,
        value=value,
        detach_key=detach_key,
        remote_command=remote_command,
    )
    ending = client.run()
    if ending.message:
        sys.stderr.write(ending.message + "\n")
        sys.stderr.flush()
    return ending.code


def _is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class _Channel(asyncssh.SSHClientSession[bytes]):
    """asyncssh callbacks for one attempt's channel, forwarded to the client."""

    def __init__(self, client: RemoteAttach) -> None:
        self._client = client
        self.decoder = protocol.Decoder()
        self.welcomed = False
        self.welcomed_at = 0.0
        self.stderr_tail = b""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            # Only for error messages: keep the end, bounded.
            self.stderr_tail = (self.stderr_tail + data)[-4096:]
            return
        self._client.on_stream(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.welcome.done():
            self.welcome.set_result(None)


class RemoteAttach:
    """One remote attach: the terminal, the reconnect loop, and the stream position."""

    def __init__(
        self,
        target: Target,
        *,
        read_only: bool,
        start: Start,
        value: int,
        detach_key: bytes,
        remote_command: str | None,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        self.target = target
        self.read_only = read_only
        self.start = start
        self.value = value
        self.detach_key = detach_key
        self.remote_command = remote_command
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.tty_in = _is_tty(stdin_fd)
        self.tty_out = _is_tty(stdout_fd)
        # The first byte of the log not yet shown; None until the worker told us where
        # the stream starts (a Screen, or the first Output of a tail).
        self.next_offset: int | None = None
        self.established = False  # a Welcome was ever received
        self.channel: _Channel | None = None
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.exit_event: dict[str, Any] | None = None
        self.discarded = 0  # keystrokes dropped during the current outage
        self.status_shown = False
        self.status_text = ""
        self.shown_anything = False
        self.alt_screen = terminal.ShownModes()  # what to put back on exit
        self._ending: asyncio.Future[Ending] | None = None
        # Set when the user detached: the link closing now is the end, not a drop.
        self.stopping = False
        self._last_status: tuple[int, float | None] | None = None
        self.link = SshLink(target.host, target.user)

    # ----------------------------------------------------------------- the whole run

    def run(self) -> Ending:
        """Run the attach in its own asyncio loop; restore the terminal however it ends."""
        with self._terminal():
            try:
                return asyncio.run(self._main())
            except KeyboardInterrupt:
                return Ending(Outcome.INTERRUPTED, "", 130)

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        with terminal.raw_mode(self.stdin_fd) if self.tty_in else contextlib.nullcontext():
            try:
                yield
            finally:
                if self.tty_out:
                    tail = b""
                    if self.status_shown:
                        tail += terminal.clear_status_line(self._rows())
                    if self.shown_anything:
                        # The session may have left the alternate screen, mouse reporting
                        # or a hidden cursor on; put the user's terminal back.
                        tail += self.alt_screen.reset_bytes() + b"\r\n"
                    with contextlib.suppress(OSError):
                        terminal.write_all(self.stdout_fd, tail)

    async def _main(self) -> Ending:
        loop = asyncio.get_running_loop()
        self._ending = loop.create_future()
        self._watch_stdin(loop)
        for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
            loop.add_signal_handler(signum, self._on_signal, signum, code)
        if self.tty_in or self.tty_out:
            loop.add_signal_handler(signal.SIGWINCH, self._on_winch)
        runner = asyncio.create_task(self._connect_loop())
        try:
            ending = await self._ending
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
            with contextlib.suppress(Exception):
                loop.remove_reader(self.stdin_fd)
        return ending

    def _finish(self, ending: Ending) -> None:
        if self._ending is not None and not self._ending.done():
            self._ending.set_result(ending)

    @property
    def finished(self) -> bool:
        return self._ending is not None and self._ending.done()

    # ---------------------------------------------------------------- connections

    async def _connect_loop(self) -> None:
        attempt = 0
        delay = BACKOFF_START
        while not (self.finished or self.stopping):
            began = time.monotonic()
            lived: float | None
            try:
                lived = await self._attempt()
            except (AttachError, SshConfigError) as exc:
                self._finish(Ending(Outcome.ERROR, f"superv: {exc}", 1))
                return
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                if not self.established:
                    self._finish(Ending(Outcome.ERROR, f"superv: {self.link.unreachable(exc)}", 1))
                    return
                lived = None
                log.debug("attempt failed after %.2fs: %s", time.monotonic() - began, exc)
            if self.finished or self.stopping:
                return
            if lived is not None:
                # The link had been streaming: a new outage starts, and the backoff with it.
                # After a long session the first retry is immediate (the drop was a blip);
                # after a short one it waits, so a box that drops us right after every
                # Welcome is not hammered.
                attempt, delay = 0, BACKOFF_START
                wait = 0.0 if lived >= STABLE_SESSION else BACKOFF_START
            else:
                wait = delay
                delay = min(delay * 2, BACKOFF_MAX)
            attempt += 1
            self._show_status(attempt, wait)
            if wait:
                await asyncio.sleep(wait)
            self._show_status(attempt, None)

    async def _attempt(self) -> float | None:
        """One connection: connect, run the bridge, stream until the link ends.

        Returns how long the session had been streaming, None if it never got a Welcome.
        Raises AttachError for what retrying cannot fix, and asyncssh/OS errors for the
        link.
        """
        first = not self.established
        options = await self.link.options()
        conn = await asyncio.wait_for(
            asyncssh.connect(
                self.link.host,
                options=options,
                connect_timeout=FIRST_CONNECT_TIMEOUT if first else RECONNECT_TIMEOUT,
            ),
            timeout=(FIRST_CONNECT_TIMEOUT if first else RECONNECT_TIMEOUT) + 1,
        )
        try:
            command = remote_command_line(self.target.name, self.remote_command)
            chan, channel = await conn.create_session(
                lambda: _Channel(self), command, encoding=None
            )
            self.chan, self.channel = chan, channel
            rows, cols = self._size()
            if self.next_offset is not None:
                hello = Hello(Start.OFFSET, self.next_offset, rows, cols, self.read_only)
            else:
                hello = Hello(self.start, self.value, rows, cols, self.read_only)
            chan.write(protocol.encode(hello))
            try:
                await asyncio.wait_for(asyncio.shield(channel.welcome), WELCOME_TIMEOUT)
            except TimeoutError:
                raise asyncssh.ConnectionLost("no answer from the session in time") from None
            if not channel.welcomed:
                await channel.closed
                self._refused(chan, channel)
                return None  # closed before Welcome on a reconnect: try again
            await channel.closed
            return time.monotonic() - channel.welcomed_at
        finally:
            self.chan = self.channel = None
            # A dead link is dropped at once; a finished one is closed politely.
            if self.finished or self.stopping:
                conn.close()
            else:
                conn.abort()

    def _refused(self, chan: asyncssh.SSHClientChannel[bytes], channel: _Channel) -> None:
        """The channel closed before a Welcome: say why, if retrying cannot help."""
        status = chan.get_exit_status()
        stderr = channel.stderr_tail.decode("utf-8", "replace").strip()
        last = stderr.splitlines()[-1] if stderr else ""
        where = self.target.shown
        if status == REMOTE_MISSING_STATUS:
            if self.remote_command:
                raise AttachError(
                    f"remote command {self.remote_command!r} not found on {where}: "
                    "check --remote-command / SUPERV_REMOTE_COMMAND"
                )
            raise AttachError(
                f"superv is not installed on {where} (not on a non-interactive shell's PATH, "
                "nor in ~/.local/bin): install it there, or name it with --remote-command "
                "PATH or SUPERV_REMOTE_COMMAND"
            )
        if status is not None and status != 0 and not self.established:
            detail = f": {last}" if last else ""
            raise AttachError(
                f"the remote 'superv attach --stdio' on {where} failed (exit {status}){detail}"
            )
        if not self.established:
            detail = f": {last}" if last else ""
            raise AttachError(f"{where} closed the session before it started{detail}")

    # --------------------------------------------------------------------- stream

    def on_stream(self, channel: _Channel, data: bytes) -> None:
        """Bytes from the bridge: decode frames, show output, track the offset."""
        if self.finished or channel is not self.channel:
            return
        try:
            channel.decoder.feed(data)
            for msg in channel.decoder:
                self._on_message(channel, msg)
                if self.finished:
                    return
        except protocol.ProtocolError as exc:
            self._finish(
                Ending(
                    Outcome.ERROR,
                    f"superv: {self.target.shown} is not speaking superv protocol ({exc}); "
                    "does a shell startup file print something for non-interactive shells?",
                    1,
                )
            )

    def _on_message(self, channel: _Channel, msg: protocol.Message) -> None:
        match msg:
            case protocol.Output(offset=offset, data=data):
                if self.next_offset is None:
                    self.next_offset = offset
                if offset < self.next_offset:
                    # Already shown (a replay overlapping what we had): drop, never repeat.
                    data = data[self.next_offset - offset :]
                    offset = self.next_offset
                if data:
                    self._show(data)
                    self.next_offset = offset + len(data)
            case protocol.Screen(offset=offset, data=data):
                self._show(data)
                self.next_offset = offset
            case protocol.Welcome():
                channel.welcomed = True
                channel.welcomed_at = time.monotonic()
                if not channel.welcome.done():
                    channel.welcome.set_result(None)
                self.established = True
                self._clear_status()
                if self.discarded:
                    self._notice(
                        f"{self.discarded} keystrokes typed while disconnected were discarded"
                    )
                    self.discarded = 0
            case protocol.Event(body=body):
                if body.get("event") == "exited":
                    self.exit_event = body
                    self._finish(Ending(Outcome.EXITED, self._exit_message(body), 0))
            case protocol.Error(message=message):
                # From the bridge or the worker, on the box: say which box.
                self._finish(Ending(Outcome.ERROR, f"superv: {self.target.shown}: {message}", 1))
            case _:
                pass  # a newer worker's message we do not know: harmless to ignore

    def _show(self, data: bytes) -> None:
        if data:
            self.shown_anything = True
            self.alt_screen.feed(data)
            try:
                terminal.write_all(self.stdout_fd, data)
            except BrokenPipeError:
                self._finish(Ending(Outcome.INTERRUPTED, "", 0))

    def _exit_message(self, body: dict[str, Any]) -> str:
        name = self.target.name
        code = body.get("exit_code")
        sig = body.get("exit_signal")
        if isinstance(sig, int) and sig:
            try:
                shown = signal.Signals(sig).name
            except ValueError:
                shown = str(sig)
            return f"[{name} was killed by {shown}]"
        if isinstance(code, int):
            return f"[{name} exited with status {code}]"
        state = body.get("state")
        return f"[{name} ended: {state}]" if state else f"[{name} ended]"

    # -------------------------------------------------------------- the user's side

    def _watch_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            mode = os.fstat(self.stdin_fd).st_mode
        except OSError:
            return
        if stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not self.tty_in):
            return  # a file or /dev/null: no keys will ever come (and epoll refuses them)
        with contextlib.suppress(OSError, ValueError):
            loop.add_reader(self.stdin_fd, self._on_stdin, loop)

    def _on_stdin(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data = os.read(self.stdin_fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # Input closed (a pipe, /dev/null): keep showing output, stop reading.
            loop.remove_reader(self.stdin_fd)
            return
        key = data.find(self.detach_key) if self.detach_key else -1
        if key >= 0:
            self._send_input(data[:key])
            self._detach()
            return
        if self.chan is None or self.channel is None or not self.channel.welcomed:
            if CTRL_C in data and self.tty_in:
                gave_up = f"[gave up reconnecting to {self.target.shown}]"
                self._finish(Ending(Outcome.INTERRUPTED, gave_up, 130))
                return
            if not self.read_only:
                self.discarded += len(data)
                self._refresh_status()
            return
        self._send_input(data)

    def _send_input(self, data: bytes) -> None:
        if not data or self.read_only or self.chan is None:
            return
        if self.channel is None or not self.channel.welcomed:
            self.discarded += len(data)
            return
        self.chan.write(protocol.encode(Input(data)))

    def _detach(self) -> None:
        ending = Ending(Outcome.DETACHED, f"[detached from {self.target.name}]", 0)
        chan = self.chan
        if chan is None:
            self._finish(ending)
            return
        # Tell the worker this was a deliberate detach, and give the frame a moment to
        # get there before the connection is closed.
        chan.write(protocol.encode(Detach()))
        with contextlib.suppress(Exception):
            chan.write_eof()
        self.stopping = True
        self.chan = None  # nothing more is shown or sent
        self.channel = None

        async def flush() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chan.wait_closed(), DETACH_FLUSH_TIMEOUT)
            self._finish(ending)

        asyncio.get_running_loop().create_task(flush())

    def _on_signal(self, signum: int, code: int) -> None:
        self._finish(Ending(Outcome.INTERRUPTED, "", code))

    def _on_winch(self) -> None:
        rows, cols = self._size()
        if self.chan is not None and self.channel is not None and self.channel.welcomed:
            self.chan.write(protocol.encode(Resize(rows, cols)))
        if self.status_shown:
            self._paint_status(self.status_text)

    def _tty_fd(self) -> int:
        return self.stdin_fd if self.tty_in else self.stdout_fd

    def _size(self) -> tuple[int, int]:
        rows, cols = terminal.window_size(self._tty_fd())
        return max(1, min(rows, 0xFFFF)), max(1, min(cols, 0xFFFF))

    def _rows(self) -> int:
        return self._size()[0]

    # ----------------------------------------------------------------- status line

    def _status_words(self, attempt: int, wait: float | None) -> str:
        key = _key_name(self.detach_key)
        when = "trying now" if wait is None or wait <= 0 else f"next try in {wait:.2g} s"
        typed = f"; {self.discarded} keys typed were discarded" if self.discarded else ""
        return (
            f"reconnecting to {self.target.shown}… (attempt {attempt}, {when}){typed}; "
            f"typing is discarded until then; {key} detaches"
        )

    def _show_status(self, attempt: int, wait: float | None) -> None:
        self._last_status = (attempt, wait)
        text = self._status_words(attempt, wait)
        if self.tty_out:
            self._paint_status(text)
        elif wait is not None:
            # Not a terminal: one line per attempt on stderr keeps stdout byte-exact.
            sys.stderr.write(f"superv: {text}\n")
            sys.stderr.flush()

    def _refresh_status(self) -> None:
        last = self._last_status
        if last is not None and self.tty_out:
            self._paint_status(self._status_words(*last))

    def _paint_status(self, text: str) -> None:
        rows, cols = self._size()
        if len(text) > cols - 2:
            text = text[: max(0, cols - 3)] + "…"
        self.status_text = text
        self.status_shown = True
        with contextlib.suppress(OSError):
            terminal.write_all(self.stdout_fd, terminal.status_line(rows, text))

    def _clear_status(self) -> None:
        if self.status_shown and self.tty_out:
            with contextlib.suppress(OSError):
                terminal.write_all(self.stdout_fd, terminal.clear_status_line(self._rows()))
        self.status_shown = False

    def _notice(self, text: str) -> None:
        if not self.tty_out:
            sys.stderr.write(f"superv: {text}\n")
            sys.stderr.flush()


def _key_name(key: bytes) -> str:
    if len(key) == 1 and key[0] < 0x20:
        return "Ctrl-" + chr(key[0] ^ 0x40)
    if key == b"\x7f":
        return "Ctrl-?"
    return key.decode("utf-8", "replace")


__all__: list[str] = [
    "AttachError",
    "RemoteAttach",
    "Target",
    "parse_target",
    "remote_command_line",
    "run_remote_attach",
]
