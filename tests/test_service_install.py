"""The systemd units pass `systemd-analyze verify` and stay hardened; scripts/install-service
installs a working venv, the units and the configs into a DESTDIR, and never overwrites a
config that is already there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def relocated_units(target: Path, prefix: Path) -> list[Path]:
    """The units with /opt/rackwatch replaced by `prefix` (as the installer's PREFIX does)."""
    target.mkdir(parents=True, exist_ok=True)
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8").replace("/opt/rackwatch", str(prefix))
        (target / unit.name).write_text(text, encoding="utf-8")
    return sorted(target.glob("*.service"))


def verify(units: list[Path]) -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", *map(str, units)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # warnings too


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match[1])


def test_units_are_notify_services_with_watchdog_reload_and_check() -> None:
    assert [unit.name for unit in UNITS] == [
        "rackwatch-agent-worker@.service",
        "rackwatch-agent.service",
        "rackwatch-agent@.service",
        "rackwatch-collector.service",
    ]
    for unit in UNITS:
        lines = set(unit.read_text(encoding="utf-8").splitlines())
        for setting in (
            "Type=notify",
            "NotifyAccess=main",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "Restart=on-failure",
            "DynamicUser=yes",
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
        ):
            assert setting in lines, f"{unit.name}: {setting} missing"
        assert any(line.startswith("WatchdogSec=") for line in lines)
        assert any(line.startswith("ExecStartPre=") and " check -c " in line for line in lines)
        assert any(line.startswith("LoadCredential=") for line in lines)
        assert any(line.startswith("StateDirectory=") for line in lines)
        assert "PrivateDevices=yes" not in lines or "collector" in unit.name  # NVML on agents


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # The executables must exist: point the units at this checkout's rackwatch.
    prefix = tmp_path / "opt"
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "bin" / "rackwatch").symlink_to(Path(sys.executable).parent / "rackwatch")
    verify(relocated_units(tmp_path / "units", prefix))


@needs_analyze
def test_units_stay_hardened(tmp_path: Path) -> None:
    units = {u.name: u for u in relocated_units(tmp_path, Path("/opt/rackwatch"))}
    assert exposure(units["rackwatch-collector.service"]) <= 2.0
    assert exposure(units["rackwatch-agent.service"]) <= 2.0
    assert exposure(units["rackwatch-agent@.service"]) <= 2.0
    assert exposure(units["rackwatch-agent-worker@.service"]) <= 2.0


@pytest.mark.integration
def test_install_into_destdir_then_again_keeps_edited_configs(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    first = install(stage)
    venv_rackwatch = stage / "opt/rackwatch/venv/bin/rackwatch"
    assert venv_rackwatch.is_file()
    etc = stage / "etc/rackwatch"
    for name in ("agent.yaml", "collector.yaml", "examples/telecom/agent-telecom-room-4.yaml"):
        assert f"  config  /etc/rackwatch/{name}" in first
    assert "systemctl enable --now rackwatch-agent.service" in first
    assert (stage / "opt/rackwatch/docs/operations.md").is_file()  # Documentation= of the units
    # The broker settings, where Debian's Mosquitto reads drop-ins.
    assert "  config  /etc/mosquitto/conf.d/rackwatch.conf" in first
    broker_conf = stage / "etc/mosquitto/conf.d/rackwatch.conf"
    assert broker_conf.read_bytes() == (ROOT / "configs/mosquitto/rackwatch.conf").read_bytes()
    for role in ("agent", "collector"):
        assert (etc / "credentials" / role).stat().st_mode & 0o777 == 0o700

    # The installed units run the installed venv and read the installed configs.
    unit = (stage / "etc/systemd/system/rackwatch-collector.service").read_text(encoding="utf-8")
    assert (
        "ExecStart=/opt/rackwatch/venv/bin/rackwatch collector -c /etc/rackwatch/collector.yaml"
        in unit
    )
    if ANALYZE is not None:
        verify(relocated_units(tmp_path / "verify", stage / "opt/rackwatch"))

    # The installed rackwatch accepts the installed collector config, credentials and all.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in ("collector_mqtt-password", "collector_influxdb-password"):
        (credentials / name).write_text("secret", encoding="utf-8")
    checked = subprocess.run(
        [str(venv_rackwatch), "check", "-c", str(etc / "collector.yaml")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert checked.returncode == 0, checked.stderr

    # Again, over an edited config: the edit stays, the units are refreshed.
    edited = "agent:\n  name: edited\n  site: here\n"
    (etc / "agent.yaml").write_text(edited, encoding="utf-8")
    (stage / "etc/systemd/system/rackwatch-agent.service").write_text("stale", encoding="utf-8")
    second = install(stage)
    assert "  kept    /etc/rackwatch/agent.yaml (exists)" in second
    assert "  kept    /etc/mosquitto/conf.d/rackwatch.conf (exists)" in second
    assert (etc / "agent.yaml").read_text(encoding="utf-8") == edited
    refreshed = (stage / "etc/systemd/system/rackwatch-agent.service").read_text(encoding="utf-8")
    assert refreshed.startswith("# rackwatch agent")


def install(stage: Path) -> str:
    result = subprocess.run(
        [str(ROOT / "scripts/install-service")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DESTDIR": str(stage)},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
