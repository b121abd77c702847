"""How to reach a box over SSH, the way an OpenSSH user has set it up.

Shared by the remote attach and the remote forms of ``ls``/``logs``/``peek``: connection
options from ``~/.ssh/config`` (or ``SUPERV_SSH_CONFIG``), the ssh-agent, known_hosts
(or ``SUPERV_KNOWN_HOSTS``) with host keys always verified, and one clear line for each
way a connection can fail.  asyncssh is asyncio: callers run it in their own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
from asyncio import FIRST_COMPLETED
from pathlib import Path
from typing import Any

import asyncssh

from agent_worker import settings

REMOTE_MISSING_STATUS = 127  # what a shell returns for "command not found"
KEEPALIVE_INTERVAL = 1.0  # seconds between SSH keepalives when the link is silent
KEEPALIVE_COUNT_MAX = 3  # unanswered keepalives before the link is said to be down
# A connection whose keepalives stop being answered is not closed: the remote attach holds
# it through the outage (its TCP survives one, as tmux's does) while it tries fresh ones.
# asyncssh closes it after this many unanswered keepalives (about 3 minutes of silence).
HOLD_KEEPALIVES = 180
KEPT_CONNECTS = 12  # TCP connections waiting for the box at once (answering_socket)


class SshConfigError(Exception):
    """The ssh configuration cannot be read; the message says why."""


def remote_superv(args: list[str], remote_command: str | None) -> bytes:
    """The command line sshd runs (through the user's login shell) to run ``superv ARGS``.

    Every word is quoted.  Without an explicit command, try ``superv`` on the PATH, then
    ``~/.local/bin/superv`` (pipx and ``pip --user`` put it there, and a non-interactive
    shell often lacks it on its PATH); if neither exists, exit 127 like a shell does for a
    missing command.  The script runs under ``sh -c`` whatever the user's login shell is.

    Bytes, as the box's shell gets them: a word or a remote command that came to us as
    bytes that are not UTF-8 (a surrogate escape in argv or the environment) reaches the
    box as those same bytes, as it would through ``ssh``.
    """
    quoted = " ".join(shlex.quote(a) for a in args)
    if remote_command:
        # The user's own shell fragment, exactly like the command given to ssh.
        return os.fsencode(f"{remote_command} {quoted}")
    script = (
        f"if command -v superv >/dev/null 2>&1; then exec superv {quoted}; fi; "
        'if [ -x "$HOME/.local/bin/superv" ]; then '
        f'exec "$HOME/.local/bin/superv" {quoted}; fi; '
        'echo "superv: command not found" >&2; '
        f"exit {REMOTE_MISSING_STATUS}"
    )
    return os.fsencode("sh -c " + shlex.quote(script))


def superv_missing(where: str, remote_command: str | None, option: bool = False) -> str:
    """The one line for a box whose shell found no superv to run (exit 127); ``option``:
    the command has ``--remote-command`` too."""
    named = "--remote-command / SUPERV_REMOTE_COMMAND" if option else "SUPERV_REMOTE_COMMAND"
    if remote_command:
        # As the user wrote it: bytes that are not UTF-8 as \xNN escapes.
        shown = os.fsencode(remote_command).decode("utf-8", "backslashreplace")
        return f"remote command '{shown}' not found on {where}: check {named}"
    return (
        f"superv is not installed on {where} (not on a non-interactive shell's PATH, nor in "
        f"~/.local/bin): install it there, or name it with {named}"
    )


class SshLink:
    """One box to reach: ``host`` may be an ssh config alias."""

    def __init__(self, host: str, user: str | None) -> None:
        self.host = host
        self.user = user
        self._options: asyncssh.SSHClientConnectionOptions | None = None

    @property
    def shown(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    async def options(self) -> asyncssh.SSHClientConnectionOptions:
        if self._options is None:
            # Building options reads the ssh config and key files: do it once, off the loop.
            self._options = await asyncio.get_running_loop().run_in_executor(
                None, self._build_options
            )
        return self._options

    def _build_options(self) -> asyncssh.SSHClientConnectionOptions:
        config_env = settings.current().ssh_config
        config: Any = [config_env] if config_env else ()
        extra: dict[str, Any] = {}
        if self.user:
            extra["username"] = self.user
        try:
            base = asyncssh.SSHClientConnectionOptions(
                host=self.host, config=config, **extra
            )
        except (OSError, ValueError, asyncssh.Error) as exc:
            raise SshConfigError(f"cannot read the ssh configuration: {describe(exc)}") from None
        ciphers = _preferred_ciphers(base)
        if ciphers:
            extra["encryption_algs"] = ciphers
        return asyncssh.SSHClientConnectionOptions(
            base,
            known_hosts=self._known_hosts(base),
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_count_max=HOLD_KEEPALIVES,
            **extra,
        )

    @staticmethod
    def _known_hosts(base: asyncssh.SSHClientConnectionOptions) -> Any:
        """The known_hosts files to trust; never None (None would disable checking)."""
        explicit = settings.current().known_hosts
        if explicit:
            files = [explicit]
        else:
            configured = list(base.config.get("UserKnownHostsFile", None) or [])
            if configured:
                files = configured + list(base.config.get("GlobalKnownHostsFile", None) or [])
            else:
                # OpenSSH's defaults.  (An explicit "UserKnownHostsFile none" lands here
                # too: we do not let a config turn host key checking off.)
                files = [
                    "~/.ssh/known_hosts",
                    "~/.ssh/known_hosts2",
                    "/etc/ssh/ssh_known_hosts",
                    "/etc/ssh/ssh_known_hosts2",
                ]
        readable = [
            str(p)
            for p in (Path(f).expanduser() for f in files)
            if p.is_file() and os.access(p, os.R_OK)
        ]
        # An empty trust list, not b"" (which asyncssh would replace by its own default).
        return readable or ([], [], [])

    def unreachable(self, exc: BaseException) -> str:
        """The one line for a failed first connection."""
        where = self.shown
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return self.host_key_message()
        if isinstance(exc, asyncssh.PermissionDenied):
            return (
                f"authentication to {where} failed: no key was accepted; check your ssh-agent "
                f"and IdentityFile, and that 'ssh {where}' works"
            )
        options = self._options
        if options is not None and options.host != self.host:
            where += f" ({options.host} port {options.port})"
        elif options is not None and options.port != 22:
            where += f" (port {options.port})"
        if isinstance(exc, TimeoutError):
            return f"cannot reach {where}: timed out"
        if isinstance(exc, asyncssh.Error):
            return f"cannot connect to {where}: {describe(exc)}"
        return f"cannot reach {where}: {describe(exc)}"

    def host_key_message(self) -> str:
        where = self.shown
        alias = self.host
        changed = False
        entry = alias
        options = self._options
        if options is not None:
            host = options.config.get("HostKeyAlias", None) or options.host
            port = options.port if options.port != 22 else None
            # How OpenSSH names this host in known_hosts, for 'ssh-keygen -R'.
            entry = f"[{host}]:{port}" if port else host
            try:
                trusted = asyncssh.match_known_hosts(options.known_hosts, host, "", port)[0]
                changed = bool(trusted)
            except Exception:  # only chooses the wording of the message
                changed = False
        # The commands name the files superv was told to use, or they would check another.
        current = settings.current()
        known = ["-o", f"UserKnownHostsFile={current.known_hosts}"] if current.known_hosts else []
        ssh = shlex.join(["ssh", *(["-F", current.ssh_config] if current.ssh_config else []),
                          *known, alias])
        if changed:
            keygen = shlex.join(["ssh-keygen", "-R", entry,
                                 *(["-f", current.known_hosts] if current.known_hosts else [])])
            return (
                f"the host key of {where} has CHANGED since it was accepted (someone may be "
                "intercepting the connection); if you know why it changed, remove the old key "
                f"with: {keygen}; then check and accept the new one with: {ssh}"
            )
        return (
            f"the host key of {where} is unknown: check and accept it once with: {ssh}; "
            "then try again"
        )


async def answering_socket(
    options: asyncssh.SSHClientConnectionOptions, *, stagger: float
) -> tuple[socket.socket, float] | None:
    """A TCP connection to the box, returned as soon as the box has sent its first byte.

    This is the part of a reconnect that tells a dead link from a slow one.  A link that
    drops packets stalls here, and the kernel resends a lost SYN only after 1, 3, 7 s...;
    so while no connection has answered, a fresh one is started every ``stagger`` seconds,
    the earlier ones kept (a slow link may still answer on one of them), and the first to
    answer wins: after the link comes back, a SYN goes out within ``stagger`` seconds.  At
most :data:`KEPT_CONNECTS` wait at once (the oldest is given up).
    Once the box has answered, the rest of the set-up takes as long as the link needs.

    Returns the socket, for ``asyncssh.connect(sock=...)`` (nothing is read from it: the
    first byte is only seen, not taken), and how long that connection took to answer.
    None when the config sends the connection through a ProxyJump or ProxyCommand:
    asyncssh makes that connection itself.  A refusal is raised at once (retrying is the
    caller's decision); the caller bounds the whole with a timeout.
    """
    if options.tunnel or options.proxy_command:
        return None
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(
        options.host, options.port, family=options.family or 0, type=socket.SOCK_STREAM
    )
    if not addresses:
        raise OSError(f"no address for {options.host}")
    tries: set[asyncio.Task[tuple[socket.socket, float]]] = set()
    started: dict[asyncio.Task[tuple[socket.socket, float]], float] = {}
    try:
        while True:
            oldest = min(tries, key=started.__getitem__, default=None)
            if len(tries) >= KEPT_CONNECTS and oldest is not None and not oldest.done():
                tries.discard(oldest)  # the oldest resends its SYN least often
                oldest.cancel()
            task = asyncio.create_task(_hear_from(addresses, options.local_addr))
            started[task] = loop.time()
            tries.add(task)
            done, _ = await asyncio.wait(tries, timeout=stagger, return_when=FIRST_COMPLETED)
            for task in done:
                tries.discard(task)
                return task.result()  # an answering socket, or the refusal raised
    finally:
        for task in tries:
            task.cancel()
        for task in tries:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                (await task)[0].close()  # one that answered just as we stopped waiting


async def _hear_from(
    addresses: list[tuple[Any, ...]], local_addr: tuple[str, int] | None
) -> tuple[socket.socket, float]:
    """Connect to the first address that takes a connection; return once it has spoken."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            if local_addr:
                sock.bind(local_addr)
            await loop.sock_connect(sock, address)
            answered = loop.create_future()
            loop.add_reader(sock.fileno(), _settle, answered)
            try:
                await answered
            finally:
                loop.remove_reader(sock.fileno())
            return sock, loop.time() - began
        except OSError as exc:
            sock.close()
            failure = exc
        except BaseException:
            sock.close()
            raise
    assert failure is not None
    raise failure


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def unanswered_keepalives(conn: asyncssh.SSHClientConnection) -> int:
    """Keepalives sent since the box last answered one (0 once it answers again).

    asyncssh counts them to close a silent connection but has no public reader for the
    count; it is this module's one use of asyncssh internals (checked by the remote
    attach's outage tests).
    """
    return int(getattr(conn, "_keepalive_count", 0))


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        if isinstance(exc, socket.gaierror) and exc.strerror:
            text = exc.strerror  # "Name or service not known"
        elif exc.errno and exc.errno > 0:
            # asyncio's "Connect call failed ('1.2.3.4', 22)" hides the reason in errno.
            text = os.strerror(exc.errno)
        elif exc.strerror:
            text = exc.strerror
    return text.rstrip(".")


def _preferred_ciphers(base: asyncssh.SSHClientConnectionOptions) -> list[str] | None:
    """asyncssh's default ciphers with AES-GCM first, unless the ssh config names some.

    In asyncssh (Python, over OpenSSL with AES-NI) AES-GCM moves ~25% more bytes per CPU
    second than chacha20-poly1305 (297 vs 229 MB/s measured here); OpenSSH puts chacha20
    first because its own C implementation of it is fast.  Same algorithms, other order.
    """
    if base.config.get("Ciphers", None):
        return None  # the user's choice wins
    try:
        from asyncssh.encryption import get_default_encryption_algs
    except ImportError:  # pragma: no cover - an asyncssh that moved it: keep its order
        return None
    algs = [alg.decode() for alg in get_default_encryption_algs()]
    fast = [alg for alg in algs if "-gcm@" in alg]
    return fast + [alg for alg in algs if alg not in fast]
