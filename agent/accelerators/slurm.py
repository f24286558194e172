"""Which Slurm job a process belongs to, from its cgroup (`/proc/<pid>/cgroup`).

Slurm's cgroup plugins put every task of a job under a directory named after the job:
`/slurm/uid_<uid>/job_<id>/step_<step>/...` with cgroup v1 (`/slurm_<node>/...` where one host
runs several slurmd), `/system.slice/slurmstepd.scope/job_<id>/step_<step>/...` with cgroup v2.
A process of no job (the agent, a login shell, a Kubernetes pod) has neither.
"""

from __future__ import annotations

import re
from pathlib import Path

# One line of /proc/<pid>/cgroup is "hierarchy-id:controllers:path".
_JOB = re.compile(r"/(?:slurm(?:_[^/]+)?/uid_\d+|(?:[^/]+_)?slurmstepd\.scope)/job_(\d+)(?:/|$)")


class CgroupError(ValueError):
    """The text is not /proc/<pid>/cgroup; the message says where."""


def slurm_job(text: str) -> str | None:
    """The job id in a /proc/<pid>/cgroup text, or None when the process is in no Slurm job."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            raise CgroupError(f"line {number}: {line[:80]!r} is not 'id:controllers:/path'")
        found = _JOB.search(parts[2])
        if found:
            return found[1]
    return None


def job_of_pid(pid: int, proc_root: Path) -> str | None:
    """The Slurm job of process `pid`; None when it is in none or has ended (no cgroup file).
    Raises CgroupError naming the file when its text cannot be read."""
    path = proc_root / str(pid) / "cgroup"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None  # the process ended between the card's answer and now
    except OSError as exc:
        raise CgroupError(f"{path}: {exc.strerror or exc}") from None
    try:
        return slurm_job(text)
    except CgroupError as exc:
        raise CgroupError(f"{path}: {exc}") from None
