"""SNMPv3 (USM) against net-snmp's snmpd: authPriv with SHA-2 and AES, and clear failures.

snmpd proxies the APC subtree to snmpsim over v2c, so the v3 user reads a real recording.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.config import SnmpCredentials
from agent.registry import builtin_profiles
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.localservices import Running, SnmpV3User

pytestmark = pytest.mark.integration

USERS = [
    SnmpV3User("noc-sha256", "SHA-256", "auth-secret-1", "AES", "priv-secret-1"),
    SnmpV3User("noc-sha512", "SHA-512", "auth-secret-2", "AES-256", "priv-secret-2"),
    SnmpV3User("noc-authonly", "SHA-256", "auth-secret-3"),
]


@pytest.fixture(scope="module")
def snmpd(snmpsim: Running, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    proxy = f"proxy -v 2c -c apc_ap8853 {snmpsim.host}:{snmpsim.port} .1.3.6.1.4.1.318"
    service = localservices.start_snmpd(tmp_path_factory.mktemp("snmpd"), USERS, extra_config=proxy)
    yield service
    localservices.stop(service)


def v3_device(
    snmpd: Running,
    user: str,
    auth_password: str,
    auth_protocol: str | None = None,
    priv_protocol: str | None = None,
    priv_password: str | None = None,
) -> SnmpDevice:
    target = SnmpTarget(
        snmpd.host,
        snmpd.port,
        version="3",
        timeout_s=1,
        retries=0,
        user=user,
        auth_protocol=auth_protocol,
        auth_password=auth_password,
        priv_protocol=priv_protocol,
        priv_password=priv_password,
    )
    return SnmpDevice("pdu-v3", target, {}, builtin_profiles()["apc_rpdu2"])


@pytest.mark.parametrize(
    ("user", "auth", "auth_password", "priv", "priv_password"),
    [
        ("noc-sha256", "sha256", "auth-secret-1", "aes", "priv-secret-1"),
        ("noc-sha512", "sha512", "auth-secret-2", "aes256", "priv-secret-2"),
    ],
)
async def test_auth_priv_reads_the_pdu(
    snmpd: Running, user: str, auth: str, auth_password: str, priv: str, priv_password: str
) -> None:
    device = v3_device(
        snmpd,
        user=user,
        auth_protocol=auth,
        auth_password=auth_password,
        priv_protocol=priv,
        priv_password=priv_password,
    )
    samples = await device.collect()
    phase = next(s for s in samples if s.measurement == "pdu_phase")
    assert phase.fields["current_a"] == 4.9
    assert next(s for s in samples if s.measurement == "pdu").fields["power_w"] == 1140.0


async def test_auth_no_priv_user(snmpd: Running) -> None:
    device = v3_device(snmpd, user="noc-authonly", auth_password="auth-secret-3")
    assert any(s.measurement == "pdu_phase" for s in await device.collect())


async def test_wrong_password_is_a_clear_error(snmpd: Running) -> None:
    device = v3_device(
        snmpd,
        user="noc-sha256",
        auth_password="not-the-password",
        priv_password="priv-secret-1",
    )
    with pytest.raises(DeviceError, match=r"pdu-v3 \(127\.0\.0\.1:\d+\): .*authentication"):
        await device.collect()


def test_probe_over_v3_with_passwords_from_the_environment(snmpd: Running) -> None:
    env = {
        **os.environ,
        "RACKWATCH_SNMP_AUTH_PASSWORD": "auth-secret-2",
        "RACKWATCH_SNMP_PRIV_PASSWORD": "priv-secret-2",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rackwatch",
            "probe",
            f"{snmpd.host}:{snmpd.port}",
            "--snmp-version",
            "3",
            "--user",
            "noc-sha512",
            "--auth-protocol",
            "sha512",
            "--priv-protocol",
            "aes256",
            "--profile",
            "apc_rpdu2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "current_a=4.9" in result.stdout


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"version": "3"}, "SNMP v3 needs user"),
        ({"version": "3", "user": "u", "community": "x"}, "community is for versions 1 and 2c"),
        ({"version": "3", "user": "u", "priv_password": "12345678"}, "needs authentication"),
        ({"version": "3", "user": "u", "auth_password": "short"}, "at least 8 characters"),
        ({"version": "2c"}, "SNMP v2c needs community"),
        ({"version": "3", "user": "u", "auth_protocol": "sha1x"}, "auth_protocol"),
    ],
)
def test_v3_credentials_are_validated(given: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SnmpCredentials.model_validate(given)


def test_v3_defaults_are_sha256_and_aes() -> None:
    user = SnmpTarget(
        "h", 1, version="3", user="u", auth_password="a" * 8, priv_password="p" * 8
    ).usm_user()
    assert type(user.auth_key).__name__ == "Sha256Key"
    assert type(user.priv_key).__name__ == "Aes128Key"
