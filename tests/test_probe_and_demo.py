"""The command line as a person (or an external check) uses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rackwatch.localservices import Running, free_port
from telemetry.lineproto import parse_line

pytestmark = pytest.mark.integration


def rackwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_probe_stdout_is_pure_line_protocol(snmpsim: Running) -> None:
    result = rackwatch(
        "probe",
        f"{snmpsim.host}:{snmpsim.port}",
        "--community",
        "apc_ap8853",
        "--output",
        "line-protocol",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("#")
    assert "profile apc_rpdu2" in lines[0]
    samples = [parse_line(line, default_time_ns=0) for line in lines if not line.startswith("#")]
    phase = next(s for s in samples if s.measurement == "pdu_phase")
    assert phase.fields["current_a"] == 4.9
    assert next(s for s in samples if s.measurement == "pdu").fields["power_w"] == 1140.0


def test_probe_table_output(snmpsim: Running) -> None:
    result = rackwatch(
        "probe",
        f"{snmpsim.host}:{snmpsim.port}",
        "--community",
        "apc_ap8959eu3",
        "--output",
        "table",
    )
    assert result.returncode == 0, result.stderr
    assert "MEASUREMENT" in result.stdout
    assert "outlet=23 outlet_name=23" in result.stdout
    assert "state=off" in result.stdout


def test_probe_of_a_dead_address_says_so_on_stderr() -> None:
    result = rackwatch(
        "probe",
        f"127.0.0.1:{free_port('udp')}",
        "--community",
        "x",
        "--timeout",
        "0.2",
        "--retries",
        "0",
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no answer to system group GET" in result.stderr


def test_demo_runs_unattended_and_verifies_every_kind() -> None:
    result = rackwatch("demo", "--duration", "12", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo ok: points of every kind landed in InfluxDB" in result.stdout
    table = result.stdout.split("MEASUREMENT", 1)[1].split("\n\n", 1)[0]
    points = {name: int(n) for name, n in (line.split() for line in table.splitlines()[1:])}
    kinds = ("pdu", "pdu_phase", "pdu_bank", "pdu_outlet", "cooling", "ups", "rackwatch_agent")
    assert all(points[kind] > 0 for kind in (*kinds, "rackwatch_collector")), points
    assert "inrow-a01" in result.stdout  # the live view's cooling row
    assert "ups-row-a" in result.stdout
    # The DC plant and the environment monitor: their points, the plant in the live view.
    dc_env = ("dc_power", "dc_rectifier", "dc_battery", "env_sensor", "env_contact")
    assert all(points[kind] > 0 for kind in dc_env), points
    assert "dc-plant-a" in result.stdout.split("DC_POWER", 1)[1]


DETECTED = {
    "apc-inrow": "apc_inrow",
    "apc_ap8853": "apc_rpdu2",
    "apc_ap8959eu3": "apc_rpdu2",
    "apc_emu": "apc_emu",
    "apc_smart1500": "apc_ups",
    "eaton-mgeups_9px": "eaton_ups",
    "eatonpdu_2": "eaton_epdu",
    "enexus_enexus": "eltek_enexus",
    "avtech_roomalert12e": "avtech_roomalert12e",
    "generex-ups_cs141": "ups_rfc1628",
    "liebert_weblbds": "liebert_gp",
    "raritan-pdu_px2": "raritan_pdu2",
    "rittal-lcp_cmciii-pu-lcp": "rittal_cmc3",
    "sentry4": "servertech_sentry4",
    "vertiv-pdu_mn03edr1": "vertiv_geist",
}


@pytest.mark.parametrize(("recording", "profile"), sorted(DETECTED.items()))
def test_probe_detects_every_shared_recording(
    snmpsim: Running, recording: str, profile: str
) -> None:
    result = rackwatch(
        "probe", f"{snmpsim.host}:{snmpsim.port}", "--community", recording, "--output", "table"
    )
    assert result.returncode == 0, result.stderr
    header, columns, *rows = result.stdout.splitlines()
    assert f"profile {profile}," in header
    assert columns.split() == ["MEASUREMENT", "ELEMENT", "FIELDS"]
    assert len(rows) >= 1
