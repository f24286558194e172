"""`rackwatch check` loads what the service would load: the config and every file it names
(alert rules, rack inventory, silences), so a config that checks clean starts. Files that are
empty, not UTF-8 or not files are clear errors, never tracebacks; secrets can be checked by
form when their values are not at hand (`--skip-secrets`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rackwatch.loader import load_collector

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "configs" / "alert-rules.yaml"
INVENTORY = ROOT / "configs" / "inventory.example.yaml"

COLLECTOR = """\
name: c1
influxdb:
  database: dc
alerting:
  rules_file: {rules}
  silences_file: {silences}
  receivers:
    - {{name: noc, kind: webhook, url: 'http://127.0.0.1:9/hook'}}
  route: {{receiver: noc}}
"""


def rackwatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def collector_config(tmp_path: Path, rules: Path | str, silences: str = "silences.json") -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(COLLECTOR.format(rules=rules, silences=silences), encoding="utf-8")
    return path


def test_a_missing_rules_file_fails_check_as_it_fails_the_collector(tmp_path: Path) -> None:
    missing = tmp_path / "rules.yaml"
    path = collector_config(tmp_path, missing)
    expected = f"{path}:5: alerting.rules_file: {missing}: cannot read: No such file or directory"
    checked = rackwatch("check", "-c", str(path))
    assert checked.returncode == 1
    assert checked.stderr.strip() == expected
    started = rackwatch("collector", "-c", str(path))
    assert started.returncode == 2
    assert expected in started.stderr
    assert "Traceback" not in started.stderr


def test_problems_inside_named_files_carry_their_own_position(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - alert: X\n    measurement: m\n    field: f\n    for: soon\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("racks:\n  - site: s1\n    rakc: A01\n")
    path = collector_config(tmp_path, rules)
    path.write_text(
        path.read_text() + f"rollup:\n  inventory: {inventory}\n  interval_s: 5\n",
        encoding="utf-8",
    )
    checked = rackwatch("check", "-c", str(path))
    assert checked.returncode == 1
    assert f"{rules}:5: rules[0].for: 'soon' is not a duration" in checked.stderr
    assert f"{inventory}:3: racks[0].rakc: unknown key" in checked.stderr
    assert ": ok" not in checked.stdout


def test_a_relative_rules_file_is_read_beside_the_config(tmp_path: Path) -> None:
    site = tmp_path / "etc"
    site.mkdir()
    (site / "alert-rules.yaml").write_bytes(RULES.read_bytes())
    path = collector_config(site, "alert-rules.yaml")
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    checked = rackwatch("check", "-c", str(path), cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"{path}: ok (collector config)\n"
    loaded = load_collector(path)
    assert loaded.alerting is not None
    assert loaded.alerting.rules_file == site / "alert-rules.yaml"
    assert loaded.alerting.silences_file == Path("silences.json")  # state: the working dir


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", ":1: (top level): the file is empty"),
        (b"# only a comment\n\n", ":1: (top level): the file is empty"),
        (b"name: c1\ninfluxdb:\n  database: caf\xe9\n", ":3: not UTF-8 text (byte 0xe9)"),
        (b"\xff\xfename: c1\n", ":1: not UTF-8 text (byte 0xff)"),
    ],
)
def test_empty_and_non_utf8_files_are_errors_not_defaults_or_tracebacks(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "collector.yaml"
    path.write_bytes(content)
    checked = rackwatch("check", "-c", str(path))
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"{path}{problem}"), checked.stderr
    assert "Traceback" not in checked.stderr
    started = rackwatch("collector", "-c", str(path))
    assert started.returncode == 2
    assert f"{path}{problem}" in started.stderr


def test_a_folder_or_a_missing_file_is_named(tmp_path: Path) -> None:
    checked = rackwatch("check", "-c", str(tmp_path), "-c", str(tmp_path / "nope.yaml"))
    assert checked.returncode == 1
    assert f"{tmp_path}: cannot read: Is a directory" in checked.stderr
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_a_silences_file_the_collector_cannot_read_is_reported(tmp_path: Path) -> None:
    (tmp_path / "silences.json").write_text("{ not json", encoding="utf-8")
    path = collector_config(tmp_path, RULES)
    checked = rackwatch("check", "-c", str(path), cwd=tmp_path)  # state paths: the working dir
    assert checked.returncode == 1
    assert checked.stderr.startswith(
        f"{path}:6: alerting.silences_file: silences.json: not a silences file"
    )
    (tmp_path / "silences.json").unlink()  # none yet: the collector starts without any
    assert rackwatch("check", "-c", str(path), cwd=tmp_path).returncode == 0


def test_secrets_are_read_unless_skipped(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent: {name: a1, site: s1}\n"
        "credentials:\n"
        "  default: {community: {env: RW_CHECK_UNSET_COMMUNITY}}\n"
        "  v3:\n"
        "    version: '3'\n"
        "    user: noc\n"
        "    auth_password: {credential: snmp-auth}\n",
        encoding="utf-8",
    )
    env_free = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    full = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env_free,
    )
    assert full.returncode == 1
    assert (
        f"{path}:3: credentials.default.community: environment variable "
        "'RW_CHECK_UNSET_COMMUNITY' is not set (or check without reading secrets: "
        "rackwatch check --skip-secrets)" in full.stderr
    )
    assert f"{path}:7: credentials.v3.auth_password: credential 'snmp-auth'" in full.stderr
    skipped = rackwatch("check", "--skip-secrets", "-c", str(path))
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout == f"{path}: ok (agent config; secrets not read)\n"
    # The form of a secret is still checked.
    path.write_text(path.read_text().replace("{env: RW_CHECK_UNSET_COMMUNITY}", "{vault: x}"))
    malformed = rackwatch("check", "--skip-secrets", "-c", str(path))
    assert malformed.returncode == 1
    assert f"{path}:3: credentials.default.community: unknown secret source 'vault'" in (
        malformed.stderr
    )
