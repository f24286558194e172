"""The agent's open-files limit: each SNMP device holds a UDP socket, so the limit caps devices.

At start (and after a reload) the agent raises its soft RLIMIT_NOFILE to the hard limit, which
needs no privilege, and warns, with the numbers, when its devices would not fit: past the limit
every new socket fails with "Too many open files" (counted as `open_files`, agent/scheduler.py).
The shipped units set LimitNOFILE to match the documented maximum (docs/operations.md).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# Files the agent holds beside its devices' sockets: MQTT, the trap port, the spool, logs,
# Prometheus connections, NVML's device files, tools' pipes, host name look-ups.
RESERVED_FILES = 256
# The documented maximum of SNMP devices per agent; the units' LimitNOFILE covers it.
MAX_DEVICES = 60_000


def check_open_files(devices: int) -> int:
    """Raise the soft limit to the hard one; warn when `devices` sockets would not fit.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. a seccomp filter, or hard above nr_open
            log.warning("open-files limit: could not raise %d to %d: %s", soft, hard, exc)
        else:
            log.info("open-files limit raised from %d to %d", soft, hard)
            soft = hard
    needed = devices + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning(
            "open-files limit %d (hard %d) is too low for %d SNMP devices: they need about %d "
            "(a UDP socket each, plus %d for the agent); polls past it fail as open_files. "
            "Raise LimitNOFILE (docs/operations.md) or split the devices over agents",
            soft,
            hard,
            devices,
            needed,
            RESERVED_FILES,
        )
    return soft
