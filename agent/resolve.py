"""Host names of SNMP devices, resolved to the IP addresses gufo-snmp needs.

gufo-snmp takes only IP literals. A name is resolved on the event loop's resolver (a worker
thread, so a slow DNS server blocks no poll but its own), again after every failed poll and
at least every `refresh_s`, so a device renumbered in DNS is followed without a restart.
IPv4 is preferred when a name has both, as Net-SNMP does for `udp:` targets: many agents
listen on IPv4 only. IP literals (IPv4 or IPv6) are used as they are.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket

log = logging.getLogger(__name__)

REFRESH_S = 300.0


class ResolveError(OSError):
    """The name did not resolve; the message names it and says why."""


class Resolver:
    """The current address of one host, looked up again when stale or forgotten."""

    def __init__(self, host: str, refresh_s: float = REFRESH_S) -> None:
        self.host = host
        self.refresh_s = refresh_s
        self._literal = is_ip(host)
        self._address: str | None = host if self._literal else None
        self._resolved_at = 0.0

    @property
    def current(self) -> str | None:
        """The address last found (None before the first lookup or after `forget()`)."""
        return self._address

    def due(self) -> bool:
        """Whether the next `address()` will look the name up again."""
        if self._literal:
            return False
        now = asyncio.get_running_loop().time()
        return self._address is None or now - self._resolved_at >= self.refresh_s

    def forget(self) -> None:
        """Look the name up again next time (the device stopped answering at this address)."""
        if not self._literal:
            self._address = None

    async def address(self) -> str:
        if not self.due():
            assert self._address is not None
            return self._address
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(self.host, None, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:  # gaierror, or a label too long for IDNA
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if self._address is not None:  # a periodic refresh: keep the address that works
                log.warning(
                    "cannot resolve %s again: %s; still using %s", self.host, reason, self._address
                )
                self._resolved_at = loop.time()
                return self._address
            raise ResolveError(f"cannot resolve {self.host}: {reason}") from None
        addresses = [str(info[4][0]) for info in found if info[0] in _FAMILIES]
        if not addresses:
            raise ResolveError(f"cannot resolve {self.host}: no IPv4 or IPv6 address")
        v4 = [a for a in addresses if ":" not in a]
        self._address = (v4 or addresses)[0]
        self._resolved_at = loop.time()
        return self._address


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 literal (with a zone for a link-local one), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
