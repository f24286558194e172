"""Which job runs on each accelerator: its Kubernetes pod (kubelet pod-resources) or its Slurm
job (the cgroup of the processes the card reports).

A poll asks the kubelet once (`JobFinder.lookup()`), then each card is matched by its device id
(GPU UUID, Ascend chip number) and the ids of the processes on it. The answer goes on the card's
`accelerator` sample as string fields (docs/schema.md says why fields, not tags):

    job            "k8s:<namespace>/<pod>", "slurm:<id>", or "" when the card runs no job
    k8s_namespace, k8s_pod, k8s_container, slurm_job_id

Where the kubelet cannot be asked, cards get no `job` field at all (unknown is not idle) and the
failure is counted under "kubelet"; a process whose cgroup cannot be read is counted under
"cgroup" and the card keeps what the rest tell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.accelerators.config import JobSettings
from agent.accelerators.kubelet import Container, KubeletError, PodResources
from agent.accelerators.repeated_warnings import RepeatedWarnings
from agent.accelerators.slurm import CgroupError, job_of_pid
from telemetry.sample import FieldValue

FAILURE_KINDS = ("kubelet", "cgroup")


@dataclass(frozen=True, slots=True)
class JobLookup:
    """One poll's view: the kubelet's answer (None where it was not asked or failed)."""

    finder: JobFinder
    containers: Mapping[str, Container] | None

    @property
    def wants_pids(self) -> bool:
        return self.finder.proc_root is not None

    def fields(self, device_ids: Iterable[str], pids: Iterable[int]) -> dict[str, FieldValue]:
        """The job fields of one card with these device ids and processes."""
        fields: dict[str, FieldValue] = {}
        slurm = self.finder.slurm_jobs(pids)
        if slurm:
            fields["slurm_job_id"] = ",".join(slurm)
            fields["job"] = f"slurm:{fields['slurm_job_id']}"
        if self.containers is not None:
            holder = next((self.containers[d] for d in device_ids if d in self.containers), None)
            if holder is not None:
                fields["k8s_namespace"] = holder.namespace
                fields["k8s_pod"] = holder.pod
                fields["k8s_container"] = holder.container
                fields["job"] = f"k8s:{holder.namespace}/{holder.pod}"
        if "job" not in fields and (self.containers is not None or self.finder.pods is None):
            fields["job"] = ""  # every source that was asked answered: no job on this card
        return fields


class JobFinder:
    """The job sources a host's `accelerators.jobs` config names."""

    def __init__(self, settings: JobSettings) -> None:
        self.pods = (
            PodResources(settings.kubelet_socket, settings.resources, settings.timeout_s)
            if settings.kubelet_socket
            else None
        )
        self.proc_root = Path(settings.proc_root) if settings.slurm else None
        self.failures: Counter[str] = Counter()  # by FAILURE_KINDS
        self._warnings = RepeatedWarnings()

    async def lookup(self) -> JobLookup:
        if self.pods is None:
            return JobLookup(self, None)
        try:
            containers = await self.pods.containers()
        except KubeletError as exc:
            self.failures["kubelet"] += 1
            self._warnings.note("kubelet", f"{exc}; cards carry no Kubernetes job this poll")
            return JobLookup(self, None)
        self._warnings.clear("kubelet")
        return JobLookup(self, containers)

    def slurm_jobs(self, pids: Iterable[int]) -> list[str]:
        """The Slurm jobs of these processes, sorted (one, unless a card is shared)."""
        if self.proc_root is None:
            return []
        jobs: set[str] = set()
        for pid in pids:
            try:
                job = job_of_pid(pid, self.proc_root)
            except CgroupError as exc:
                self.failures["cgroup"] += 1
                self._warnings.note("cgroup", str(exc))
                continue
            if job is not None:
                jobs.add(job)
        return sorted(jobs, key=lambda job: (len(job), job))

    def close(self) -> None:
        if self.pods is not None:
            self.pods.close()
