"""Several agent processes for one config: which worker polls which device.

A device belongs to one worker by rendezvous (highest random weight) hashing of its configured
name, never its position in the list: adding or removing a device moves only that device,
restarts keep every assignment, and going from N to N+1 workers moves about 1/(N+1) of them.
Worker 0 also does what only one process on a host may do: traps (port 162), the host's
accelerators and the MQTT devices' subscription.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from agent.config import AgentConfig
from telemetry import rendezvous


class WorkerSpecError(ValueError):
    """A `--worker` value that does not fit the config."""


@dataclass(frozen=True)
class Worker:
    index: int
    count: int

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, device_name: str) -> bool:
        return owner(device_name, self.count) == self.index


ONLY = Worker(0, 1)  # an agent that is not split


def owner(device_name: str, count: int) -> int:
    """The worker (0..count-1) that polls `device_name`; stable across processes and hosts."""
    return 0 if count == 1 else rendezvous.owner(device_name.encode(), _seeds(count))


@functools.cache
def _seeds(count: int) -> tuple[int, ...]:
    return tuple(rendezvous.digest(f"worker {i}".encode()) for i in range(count))


def parse_worker(spec: str, configured: int) -> Worker:
    """`--worker I` (of the config's `agent.workers`) or `--worker I/N` (N must agree)."""
    index_text, slash, count_text = spec.partition("/")
    if not index_text.isdigit() or (slash and not count_text.isdigit()):
        raise WorkerSpecError(f"--worker {spec!r}: expected INDEX or INDEX/COUNT, e.g. 0/2")
    index, count = int(index_text), int(count_text) if slash else configured
    if slash and count != configured:
        raise WorkerSpecError(
            f"--worker {spec}: the config says agent.workers: {configured}; "
            "every worker must split the devices the same way"
        )
    if not 0 <= index < count:
        raise WorkerSpecError(
            f"--worker {spec}: index {index} is not one of 0..{count - 1} "
            f"(agent.workers: {configured})"
        )
    return Worker(index, count)


def for_worker(config: AgentConfig, worker: Worker) -> AgentConfig:
    """What one worker runs: its own spool and metrics port; host-wide jobs on worker 0.

    The device list stays whole, so a trap from any device is still placed (`Agent` polls
    only the worker's own devices)."""
    if worker.count == 1:
        return config
    mqtt = config.mqtt
    if mqtt.spool_dir is not None:
        mqtt = mqtt.model_copy(update={"spool_dir": mqtt.spool_dir / f"worker-{worker.index}"})
    metrics = config.metrics
    if metrics is not None:
        host, port = metrics.host_port()
        shown = f"[{host}]" if ":" in host else host
        metrics = metrics.model_copy(update={"listen": f"{shown}:{port + worker.index}"})
    primary = worker.index == 0
    return config.model_copy(
        update={
            "mqtt": mqtt,
            "metrics": metrics,
            "traps": config.traps if primary else None,
            "accelerators": config.accelerators if primary else None,
            "mqtt_devices": config.mqtt_devices if primary else None,
        }
    )


def device_counts(names: Iterable[str], count: int) -> list[int]:
    """Devices per worker, for `rackwatch check`."""
    owners = Counter(owner(name, count) for name in names)
    return [owners[index] for index in range(count)]
