"""Energy each job has used on this host: the `energy_j` of its `accelerator_job` samples.

Per card, while the same job runs on it: where the card has an energy counter (NVIDIA's
`energy_j`, read once per `energy_interval_s`) the counter's increase between two readings;
otherwise its power times the time between two polls, up to `max_gap_s` (a longer gap, as
after a failed poll, adds nothing rather than a guess). The total starts when this agent first
sees the job, so a job's energy is its `energy_j` at its last sample, summed over its hosts; a
job not seen for `forget_after_s` is forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from telemetry.sample import Sample

NS = 1_000_000_000


@dataclass
class _Card:
    job: str
    time_ns: int
    energy_j: float | None  # the counter at its last reading, if the card has one


class JobEnergy:
    def __init__(self, max_gap_s: float = 60.0, forget_after_s: float = 3600.0) -> None:
        self.max_gap_s = max_gap_s
        self.forget_after_s = forget_after_s
        self.joules: dict[tuple[str, str], float] = {}  # (vendor, job) -> energy
        self._last_seen: dict[tuple[str, str], int] = {}
        self._cards: dict[tuple[tuple[str, str], ...], _Card] = {}

    def add(self, samples: Iterable[Sample]) -> None:
        """Count one poll's `accelerator` samples."""
        now = 0
        for sample in samples:
            job = sample.fields.get("job")
            if sample.measurement != "accelerator" or not isinstance(job, str) or not job:
                continue
            key = (sample.tags.get("vendor", ""), job)
            now = max(now, sample.time_ns)
            self._last_seen[key] = sample.time_ns
            self.joules[key] = self.joules.get(key, 0.0) + self._card(sample, job)
        self._forget(now)

    def _card(self, sample: Sample, job: str) -> float:
        card_key = tuple(sorted(sample.tags.items()))
        energy = sample.fields.get("energy_j")
        counter = float(energy) if isinstance(energy, int | float) else None
        previous = self._cards.get(card_key)
        added = 0.0
        if previous is not None and previous.job == job:
            if previous.energy_j is not None:
                if counter is None:
                    return 0.0  # between two counter readings: the next one counts it
                added = max(counter - previous.energy_j, 0.0)  # a driver reload resets it
            else:
                seconds = (sample.time_ns - previous.time_ns) / NS
                power = sample.fields.get("power_w")
                if 0 < seconds <= self.max_gap_s and isinstance(power, int | float):
                    added = float(power) * seconds
        self._cards[card_key] = _Card(job, sample.time_ns, counter)
        return added

    def _forget(self, now_ns: int) -> None:
        horizon = now_ns - self.forget_after_s * NS
        for key in [k for k, seen in self._last_seen.items() if seen < horizon]:
            del self._last_seen[key]
            self.joules.pop(key, None)
        for card in [k for k, state in self._cards.items() if state.time_ns < horizon]:
            del self._cards[card]
