"""Tells systemd how the service is doing (sd_notify(3)): ready, reloading, stopping, alive.

systemd passes `$NOTIFY_SOCKET` (a path, or an abstract name starting with `@`) to
`Type=notify` services and `$WATCHDOG_USEC` where `WatchdogSec=` is set. The protocol is one
datagram of `KEY=value` lines, so a plain socket does it; without `$NOTIFY_SOCKET` (run by
hand, in tests) every call does nothing.

The watchdog is pinged from a task on the event loop, never from a thread: a loop that stalls
stops pinging, and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(name: str) -> str:
    # An abstract socket name is written with a leading `@`; on the wire it starts with NUL.
    return "\0" + name[1:] if name.startswith("@") else name


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET`; a no-op when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.watchdog_s = _watchdog_interval_s(env)
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.socket_name)

    def send(self, *lines: str) -> bool:
        """Send one message (`KEY=value` lines); False where there is no socket or it failed."""
        if not self.socket_name:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto("\n".join(lines).encode(), _address(self.socket_name))
        except OSError as exc:
            if not self._failed:  # once: a missing manager must not flood the log
                log.warning("cannot notify systemd at %s: %s", self.socket_name, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (253+) tell this reload from an older one; older ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    async def keep_alive(self) -> None:
        """Ping the watchdog at half its interval until cancelled; returns at once without one."""
        if not self.enabled or self.watchdog_s is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """`$WATCHDOG_USEC` in seconds, if it is meant for this process (`$WATCHDOG_PID`)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):  # inherited from a parent that was the watched one
        return None
    return int(usec) / 1_000_000
