"""What a host may be: the one check of ``[USER@]HOST`` for every command and the config file.

``HOST:NAME`` (attach, logs, send, ...), ``ls HOST:``, ``events HOST:`` and the config's
``hosts`` all come here before anything connects, so a host that SSH or the resolver
cannot take (bytes that are not UTF-8, a newline, an option like ``-oProxyCommand=x``) is
one line saying what a host is, never an error from deep inside asyncssh or the socket
module.  Standard library only: the config file is read on short paths.
"""

from __future__ import annotations

import ipaddress
import re

# An ssh config alias or a DNS name: ASCII letters, digits, '.', '_', '-', not starting
# with '-' (it would read as an option to ssh).  fullmatch: '$' would allow a final "\n".
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,253}")
_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
HOST_WORDS = "an ssh alias or host name (letters, digits, '.', '_', '-') or an IP address ([v6] in brackets)"


def is_host_name(text: str) -> bool:
    return HOST_NAME.fullmatch(text) is not None


def split_host(where: str) -> tuple[str | None, str]:
    """``[USER@]HOST`` into (user, host); HOST may be ``[v6addr]``.  ValueError says why not."""
    user, at, host = where.rpartition("@")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_address(host):
            raise ValueError(f"cannot read host {where!r}: write an IPv6 address in the brackets")
    elif not (is_host_name(host) or _is_address(host)):
        raise ValueError(f"cannot read host {where!r}: write {HOST_WORDS}")
    if at and _USER_NAME.fullmatch(user) is None:
        raise ValueError(f"cannot read {where!r}: write [USER@]HOST, USER a login name")
    return user or None, host


def _is_address(text: str) -> bool:
    # ipaddress takes any text as an IPv6 scope ("fe80::1%<anything>"): names only.
    address, _, scope = text.partition("%")
    if scope and not is_host_name(scope):
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
