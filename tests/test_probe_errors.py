"""`rackwatch probe` as a newcomer meets it: a wrong community gets a hint, SNMPv3 without a
user is refused before anything is sent, and a profile that reads nothing is not a success."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rackwatch.localservices import Running

pytestmark = pytest.mark.integration


def probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", "probe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_wrong_community_gets_a_hint(snmpsim: Running) -> None:
    address = f"{snmpsim.host}:{snmpsim.port}"
    result = probe(address, "--community", "no-such", "--timeout", "0.3", "--retries", "0")
    assert result.returncode == 1
    assert result.stdout == ""
    problem, hint = result.stderr.splitlines()
    assert "no answer to system group GET" in problem
    assert hint.startswith("rackwatch probe: hint: a wrong community, or an ACL")


def test_snmpv3_without_a_user_is_refused_up_front() -> None:
    # 192.0.2.1 (TEST-NET-1) never answers: a refusal that came from trying would take seconds.
    result = probe("192.0.2.1", "--snmp-version", "3", "--timeout", "30")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "rackwatch probe: --snmp-version 3 needs --user (passwords in "
        "RACKWATCH_SNMP_AUTH_PASSWORD / RACKWATCH_SNMP_PRIV_PASSWORD)"
    ]


def test_a_forced_profile_that_reads_nothing_fails(snmpsim: Running) -> None:
    address = f"{snmpsim.host}:{snmpsim.port}"
    result = probe(address, "--community", "apc_ap8853", "--profile", "apc_inrow")  # a PDU
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "rackwatch probe: profile apc_inrow read nothing from this device "
        "(sysObjectID 1.3.6.1.4.1.318.1.3.4.6); is it the right profile?"
    ]
    assert "0 samples" in result.stdout.splitlines()[0]  # the header says what was tried
