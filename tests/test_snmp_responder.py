"""bench/snmp_responder.py answers as snmpsim does: the agent reads the same samples from both,
for recordings of several kinds, under any community, and equal requests come from its cache."""

from __future__ import annotations

import pytest

from agent.snmp import SnmpDevice, SnmpTarget
from bench import snmp_responder
from rackwatch.localservices import Running
from telemetry.sample import Sample
from tests.conftest import RECORDINGS

pytestmark = pytest.mark.integration

KINDS = ["apc_ap8959eu3", "apc_smt750x-nmc2", "apc-inrow", "enexus"]  # PDU, UPS, cooling, DC


def readings(samples: list[Sample]) -> list[tuple[str, list[tuple[str, str]], object]]:
    """What a poll read, without its time."""
    return sorted(
        (s.measurement, sorted(s.tags.items()), sorted(s.fields.items())) for s in samples
    )


@pytest.mark.parametrize("recording", KINDS)
async def test_the_agent_reads_the_same_from_the_responder_as_from_snmpsim(
    snmpsim: Running, recording: str
) -> None:
    path = RECORDINGS / f"{recording}.snmprec"
    if not path.is_file():
        pytest.fail(f"{path}: the recording this test reads is gone")
    reference = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
    expected = [await reference.collect(), await reference.collect()]
    responder = snmp_responder.start(path)
    try:
        for community in ("public", "pdu-4711"):  # any community: one recording, many devices
            target = SnmpTarget(responder.host, responder.port, community)
            device = SnmpDevice(recording, target, {})
            got = [await device.collect(), await device.collect()]
            assert device.identity is not None
            assert reference.identity is not None
            assert device.identity.profile.name == reference.identity.profile.name
            assert [readings(g) for g in got] == [readings(e) for e in expected]
    finally:
        responder.stop()


def test_equal_requests_are_answered_from_the_cache() -> None:
    recording = snmp_responder.Recording(RECORDINGS / "apc_ap8959eu3.snmprec")
    responder = snmp_responder.Responder(recording)
    # GET sysObjectID.0 with request-ids 1 and 2, community "public" (v2c), as net-snmp sends.
    request = bytes.fromhex(
        "302602010104067075626c6963a019020101020100020100300e300c06082b060102010102000500"
    )
    first = responder.answer(request)
    second = responder.answer(request.replace(b"\xa0\x19\x02\x01\x01", b"\xa0\x19\x02\x01\x02"))
    assert first is not None
    assert second is not None
    assert responder.stats.answered_from_cache == 1
    # 30 len | 02 01 01 (v2c) | 04 06 "public" | a2 len | 02 01 <request-id> | ...
    assert (first[17], second[17]) == (1, 2)
    assert first[:17] == second[:17]
    assert first[18:] == second[18:]
    sys_object_id = bytes.fromhex("060b2b06010401823e01030406")  # 1.3.6.1.4.1.318.1.3.4.6
    assert sys_object_id in first
