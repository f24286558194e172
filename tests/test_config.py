"""Config loading: every problem is reported as `file:line: key: problem`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.profile import Profile, load_profile
from agent.registry import builtin_profiles
from collector.config import CollectorConfig
from telemetry import config
from telemetry.config import ConfigError

GOOD_AGENT = """\
agent:
  name: a1-agent-01
  site: qiyang-a1
mqtt:
  host: 127.0.0.1
  port: 1883
credentials:
  default:
    community: {env: RW_TEST_COMMUNITY}
devices:
  - name: pdu-a01-a
    address: 10.20.0.11
    room: hall-1
    row: A
    rack: A01
  - name: pdu-a01-b
    address: "[fd00::12]:1161"
    profile: apc_rpdu2
    interval_s: 10
"""


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, model: type[AgentConfig] | type[CollectorConfig] = AgentConfig) -> str:
    with pytest.raises(ConfigError) as caught:
        config.load(path, model)
    return str(caught.value)


def test_good_agent_config_loads_with_secret_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "s3cret")
    loaded = config.load(write(tmp_path, GOOD_AGENT), AgentConfig)
    assert loaded.credentials["default"].community == "s3cret"
    assert loaded.devices[1].host_port() == ("fd00::12", 1161)
    assert loaded.devices[0].host_port() == ("10.20.0.11", 161)
    assert loaded.devices[1].interval_s == 10


def test_unknown_key_names_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "x")
    path = write(tmp_path, GOOD_AGENT.replace("    rack: A01\n", "    rack: A01\n    rakc: A02\n"))
    assert load_error(path) == f"{path}:16: devices[0].rakc: unknown key"


def test_wrong_type_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "x")
    path = write(tmp_path, GOOD_AGENT.replace("interval_s: 10", "interval_s: ten"))
    message = load_error(path)
    assert message.startswith(f"{path}:19: devices[1].interval_s: ")
    assert "number" in message


def test_missing_field_points_at_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "x")
    path = write(tmp_path, GOOD_AGENT.replace("    address: 10.20.0.11\n", ""))
    assert load_error(path) == f"{path}:11: devices[0].address: Field required"


def test_missing_environment_variable_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RW_TEST_COMMUNITY", raising=False)
    path = write(tmp_path, GOOD_AGENT)
    assert load_error(path) == (
        f"{path}:9: credentials.default.community: environment "
        "variable 'RW_TEST_COMMUNITY' is not set "
        "(or check without reading secrets: rackwatch check --skip-secrets)"
    )


def test_secret_from_file_and_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "community").write_text("from-file\n", encoding="utf-8")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "snmp-community").write_text("from-credential", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = GOOD_AGENT.replace("{env: RW_TEST_COMMUNITY}", f"{{file: {tmp_path / 'community'}}}")
    text = text.replace(
        "credentials:\n", "credentials:\n  sys:\n    community: {credential: snmp-community}\n"
    )
    loaded = config.load(write(tmp_path, text), AgentConfig)
    assert loaded.credentials["default"].community == "from-file"
    assert loaded.credentials["sys"].community == "from-credential"


def test_cross_references_and_duplicates_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "x")
    text = GOOD_AGENT.replace("pdu-a01-b", "pdu-a01-a").replace(
        "profile: apc_rpdu2", "profile: apc_nope\n    credentials: ops"
    )
    message = load_error(write(tmp_path, text)).splitlines()
    assert any(":16: devices[1].name: duplicate device name 'pdu-a01-a'" in m for m in message)
    assert any(":18: devices[1].profile: unknown profile 'apc_nope'" in m for m in message)
    assert any(":19: devices[1].credentials: no credentials named 'ops'" in m for m in message)


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "agent:\n  name: a\n  site: s\n  name: b\n")
    assert load_error(path) == f"{path}:4: agent.name: duplicate key"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "agent:\n  name: [a\n  site: s\n")
    assert load_error(path).startswith(f"{path}:")
    assert "YAML syntax" in load_error(path)


def test_bad_address_and_topic_unsafe_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RW_TEST_COMMUNITY", "x")
    text = GOOD_AGENT.replace("10.20.0.11", "10.20.0.11:snmp").replace(
        "site: qiyang-a1", "site: qiyang/a1"
    )
    message = load_error(write(tmp_path, text))
    assert ":3: agent.site: 'qiyang/a1' may hold only" in message
    assert ":12: devices[0].address: '10.20.0.11:snmp': port is not a number" in message


def test_collector_v2_needs_a_bucket(tmp_path: Path) -> None:
    path = write(tmp_path, "influxdb:\n  url: http://127.0.0.1:8086\n  api: v2\n", "collector.yaml")
    assert load_error(path, CollectorConfig) == (
        f"{path}:1: influxdb: api v2 needs bucket (and org, token for InfluxDB 2.x)"
    )


def test_shipped_profiles_load() -> None:
    profiles = builtin_profiles()
    assert "apc_rpdu2" in profiles
    assert all(isinstance(p, Profile) for p in profiles.values())


def test_broken_profile_is_refused_with_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
name: broken
vendor: x
kind: pdu
detect: {}
tables:
  - measurement: pdu
    entry: 1.3.6.1.4.1.9.9.9.1
    fallback_for: 1.3.6.1.4.1.9.9.9.2
    fields:
      power_w: {column: 5, scale: 0}
      state: {column: 6, type: enum}
      voltage_v: {column: 7, unit: V}
      current_a: {column: 8, units_of: A}
""",
        "profile.yaml",
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert f"{path}:10: tables[0].fields.power_w.scale: scale must not be zero" in message
    assert f"{path}:11: tables[0].fields.state: type enum needs an enum map" in message
    # `unit` takes only a conversion the language knows (fahrenheit), not a label
    assert f"{path}:12: tables[0].fields.voltage_v.unit: Input should be 'fahrenheit'" in message
    assert f"{path}:13: tables[0].fields.current_a.units_of: unknown key" in message


def test_check_command_reports_and_exits_nonzero(tmp_path: Path) -> None:
    good = write(tmp_path, "name: c1\ninfluxdb:\n  database: dc\n", "collector.yaml")
    bad = write(tmp_path, "agent:\n  name: a\n  site: s\ndevices:\n  - name: x\n", "bad.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "-c", str(good), "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{good}: ok (collector config)" in result.stdout
    assert f"{bad}:5: devices[0].address: Field required" in result.stderr


def test_example_configs_pass_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    examples = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))
    assert len(examples) >= 2
    # Site configs read their secrets as systemd credentials: give each one a file.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    text = "".join(path.read_text(encoding="utf-8") for path in examples)
    for name in set(re.findall(r"\{credential: ([\w.-]+)\}", text)):
        (credentials / name).write_text("credential-secret", encoding="utf-8")
    env = {
        "RACKWATCH_SNMP_COMMUNITY": "public",
        "RACKWATCH_SNMP_COMMUNITY_LEGACY": "old",
        "RACKWATCH_SNMP_AUTH_PASSWORD": "auth-secret",
        "RACKWATCH_SNMP_PRIV_PASSWORD": "priv-secret",
        "CREDENTIALS_DIRECTORY": str(credentials),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", *(f"-c{p}" for p in examples)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(examples)
