"""The site configs in configs/: the telecom facility's generated files are current and cover
its 1,664 racks; the A1 config names a profile for every device. (`rackwatch check` on all of
them: tests/test_config.py.)"""

from __future__ import annotations

import importlib.util
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
