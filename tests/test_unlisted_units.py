"""A value whose text names a unit its field's `units` map does not list ("35 K" where the
SiteBoss profile knows C and F) gives no value, since a wrong one is worse, but it is never
silent: the device's health counts it (values_unlisted_unit_total), the log names it once per
OID, and every other field of the poll still arrives.

The device is a real recording served by snmpsim: an edited copy of siteboss571_siteboss571
(in the `recordings_copy` fixture's copy of the shared set), whose unit's own temperature
esPointValueStr (EventSensor 200, point 1) is changed from the recorded "35 C" to "35 K".
Nothing else in it is changed; the shared recording itself is polled beside it and counts 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.service import Agent
from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.sample import Sample
from tests.test_end_to_end import eventually

pytestmark = pytest.mark.integration

RECORDED = "siteboss571_siteboss571"
EDITED = "siteboss571_unlisted_unit"  # the copy with "35 K"
UNIT_TEMPERATURE = "1.3.6.1.4.1.3052.14.1.1.1.1.7.200.1.1"  # esPointValueStr 200.1.1


@pytest.fixture
def served(recordings_copy: Path, tmp_path: Path) -> Iterator[Running]:
    recorded = (recordings_copy / f"{RECORDED}.snmprec").read_text(encoding="utf-8")
    line = f"{UNIT_TEMPERATURE}|4|35 C\n"
    assert line in recorded  # the recording as captured: the edit below is the only change
    edited = recorded.replace(line, f"{UNIT_TEMPERATURE}|4|35 K\n")
    (recordings_copy / f"{EDITED}.snmprec").write_text(edited, encoding="utf-8")
    service = localservices.start_snmpsim(recordings_copy, tmp_path / "snmpsim")
    yield service
    localservices.stop(service)


def _fields(samples: list[Sample]) -> dict[tuple[str, str], dict[str, object]]:
    """Fields per (measurement, sensor-or-contact tag), merged."""
    merged: dict[tuple[str, str], dict[str, object]] = {}
    for sample in samples:
        key = sample.tags.get("sensor") or sample.tags.get("contact") or ""
        merged.setdefault((sample.measurement, key), {}).update(sample.fields)
    return merged


async def test_an_unlisted_unit_is_counted_logged_once_and_the_rest_arrives(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    recorded = SnmpDevice(RECORDED, SnmpTarget(served.host, served.port, RECORDED), {})
    edited = SnmpDevice(EDITED, SnmpTarget(served.host, served.port, EDITED), {})
    expected = _fields(await recorded.collect())
    assert expected[("env_sensor", "200")]["temperature_c"] == 35.0
    assert recorded.unlisted_units == 0

    with caplog.at_level(logging.WARNING, logger="agent.snmp"):
        first, second = await edited.collect(), await edited.collect()
    assert edited.unlisted_units == 2  # one value on each poll
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "values_unlisted_unit_total" in m]
    assert len(warnings) == 1, warnings  # once per OID, not every poll
    assert UNIT_TEMPERATURE in warnings[0]
    assert "'35 K', unit 'K'" in warnings[0]

    # Only that one field is missing: every other sample and field is as recorded.
    del expected[("env_sensor", "200")]["temperature_c"]
    expected = {key: fields for key, fields in expected.items() if fields}
    assert _fields(first) == expected
    assert _fields(second) == expected
    assert _fields(first)[("env_sensor", "3")]["temperature_c"] == 24.0  # "24 C", other sensor


async def test_the_count_is_in_the_devices_health(served: Running) -> None:
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "a1", "site": "s1"},
            "defaults": {"interval_s": 0.2, "jitter_s": 0, "timeout_s": 2.0},
            "credentials": {
                "edited": {"community": EDITED},
                "recorded": {"community": RECORDED},
            },
            "devices": [
                {
                    "name": "sb-edited",
                    "address": f"{served.host}:{served.port}",
                    "credentials": "edited",
                },
                {
                    "name": "sb-recorded",
                    "address": f"{served.host}:{served.port}",
                    "credentials": "recorded",
                },
            ],
        }
    )
    agent = Agent(config)
    pollers = [agent.pollers["sb-edited"], agent.pollers["sb-recorded"]]
    tasks = [asyncio.create_task(poller.run()) for poller in pollers]
    try:
        await eventually(lambda: all(p.stats.polls_ok >= 2 for p in pollers), 20)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    health = {
        s.tags["device"]: s.fields
        for s in agent.health_samples()
        if s.measurement == "rackwatch_agent" and "device" in s.tags
    }
    edited, recorded = health["sb-edited"], health["sb-recorded"]
    assert edited["values_unlisted_unit_total"] == edited["polls_ok_total"]  # one a poll
    assert edited["state"] == "ok"  # the poll itself succeeded: nothing else was lost
    assert recorded["values_unlisted_unit_total"] == 0
