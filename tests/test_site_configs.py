"""The site configs in configs/: every one checks clean out of the box, as its header says;
the telecom facility's generated files are current and cover its 1,664 racks; the A1 config
names a profile for every device. (`rackwatch check` with their secrets at hand:
tests/test_config.py.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from agent.registry import builtin_profiles

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_telecom", CONFIGS / "generate_telecom.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def devices(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = data["devices"]
    return found


def test_generated_telecom_configs_are_current() -> None:
    committed = sorted((CONFIGS / "telecom").glob("*.yaml"))
    expected: dict[Path, str] = generator().files()
    assert sorted(expected) == committed
    for path, text in expected.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date: run python configs/generate_telecom.py"
        )


def test_generator_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = generator()
    monkeypatch.setattr(module, "OUT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["generate_telecom.py"])
    assert module.main() == 0
    monkeypatch.setattr(sys, "argv", ["generate_telecom.py", "--check"])
    assert module.main() == 0
    stale = tmp_path / "agent-telecom-room-2.yaml"
    stale.write_text(stale.read_text(encoding="utf-8") + "# hand edit\n", encoding="utf-8")
    assert module.main() == 1
    assert f"{stale}: out of date" in capsys.readouterr().err


def test_telecom_facility_has_1664_racks_each_with_two_feeds() -> None:
    feeds: dict[tuple[str, str], set[str]] = {}
    names: list[str] = []
    for path in sorted((CONFIGS / "telecom").glob("*.yaml")):
        for device in devices(path):
            names.append(device["name"])
            if device["name"].startswith("pdu-"):
                feeds.setdefault((device["room"], device["rack"]), set()).add(
                    device["tags"]["feed"]
                )
    assert len(feeds) == 1664
    assert all(found == {"A", "B"} for found in feeds.values())
    assert len(names) == len(set(names))  # unique across the facility, not only per agent


def test_a1_devices_name_known_profiles_of_every_kind() -> None:
    profiles = builtin_profiles()
    listed = devices(CONFIGS / "a1-datacenter.agent.yaml")
    kinds = {profiles[device["profile"]].kind for device in listed}
    assert kinds == {"pdu", "cooling", "ups", "env_sensor"}


def test_every_config_checks_clean_out_of_the_box(tmp_path: Path) -> None:
    """As a newcomer runs it: no secrets in the environment, no credentials, another working
    directory; the files each config names (alert rules) are found beside it."""
    configs = sorted(CONFIGS.rglob("*.yaml"))
    assert len(configs) >= 10
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RACKWATCH_") and key != "CREDENTIALS_DIRECTORY"
    }
    env["PYTHONPATH"] = str(CONFIGS.parent)
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "--skip-secrets"]
        + [f"-c{path}" for path in configs],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{path}: ok ({kind}; secrets not read)"
        for path, kind in zip(configs, map(kind_of, configs), strict=True)
    ]


def kind_of(path: Path) -> str:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "agent" in data:
        return "agent config"
    if "rules" in data:
        return "alert rules"
    return "rack inventory" if "racks" in data else "collector config"
