"""Silences from the config and from `rackwatch silence add|list|expire`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.alerting.matchers import Matcher
from collector.alerting.settings import SilenceSettings
from collector.alerting.silences import Silence, SilenceFile, Silences

LABELS = {"alertname": "PduPhaseCurrentHigh", "site": "s1", "rack": "A01", "device": "pdu-1"}


def rackwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", "silence", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_add_list_expire_through_the_command(tmp_path: Path) -> None:
    path = tmp_path / "silences.json"
    added = rackwatch(
        "-f",
        str(path),
        "add",
        'rack="A01"',
        'alertname=~"Pdu.*"',
        "--duration",
        "2h",
        "--comment",
        "PDU swap CHG-1234",
        "--author",
        "li.wei",
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    (silence,) = SilenceFile(path).read()
    assert silence.id == silence_id
    assert silence.created_by == "li.wei"
    assert silence.ends_at - silence.starts_at == pytest.approx(7200, abs=1)
    assert silence.mutes(LABELS, time.time())
    assert not silence.mutes({**LABELS, "rack": "A02"}, time.time())

    listed = rackwatch("-f", str(path), "list")
    assert silence_id[:8] in listed.stdout
    assert 'rack="A01" alertname=~"Pdu.*"' in listed.stdout
    assert "PDU swap CHG-1234" in listed.stdout

    expired = rackwatch("-f", str(path), "expire", silence_id[:8])
    assert expired.returncode == 0, expired.stderr
    assert expired.stdout.strip() == f"expired {silence_id}"
    assert not SilenceFile(path).read()[0].active(time.time() + 1)
    assert silence_id[:8] not in rackwatch("-f", str(path), "list").stdout
    assert silence_id[:8] in rackwatch("-f", str(path), "list", "--all").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "rack", "--comment", "x"], "is not a matcher"),
        (["add", 'rack="A01"', "--comment", "x", "--duration", "soon"], "is not a duration"),
        (["add", 'rack="A01"', "--comment", "x", "--end", "2001-01-01T00:00:00"], "in the past"),
        (["expire", "nope"], "names 0 silences"),
    ],
)
def test_mistakes_are_reported_not_raised(tmp_path: Path, args: list[str], message: str) -> None:
    result = rackwatch("-f", str(tmp_path / "silences.json"), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_concurrent_adds_all_land(tmp_path: Path) -> None:
    file = SilenceFile(tmp_path / "silences.json")
    now = time.time()

    def add(i: int) -> None:
        file.add(Silence(f"id-{i}", (Matcher.parse(f'rack="R{i}"'),), now, now + 60, "t", ""))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(s.id for s in file.read()) == sorted(f"id-{i}" for i in range(8))


def test_the_collector_applies_config_and_file_silences_and_sees_changes(tmp_path: Path) -> None:
    tomorrow = int(time.time()) // 86400 * 86400 + 86400
    window = SilenceSettings.model_validate(
        {
            "matchers": ['site="s1"', 'rack="A01"'],
            "starts_at": datetime.fromtimestamp(tomorrow + 2 * 3600, UTC),
            "ends_at": datetime.fromtimestamp(tomorrow + 4 * 3600, UTC),
            "comment": "monthly PDU firmware window",
        }
    )
    path = tmp_path / "silences.json"
    silences = Silences([window], path)
    inside = tomorrow + 3 * 3600.0
    after = tomorrow + 5 * 3600.0
    assert silences.muting(LABELS, inside) is not None
    assert silences.muting(LABELS, after) is None

    SilenceFile(path).add(
        Silence("file-1", (Matcher.parse('device="pdu-1"'),), after - 60, after + 60, "ops", "")
    )
    assert silences.muting(LABELS, after) is None  # not read yet
    silences.refresh()
    muting = silences.muting(LABELS, after)
    assert muting is not None
    assert muting.id == "file-1"


def test_a_broken_silences_file_keeps_the_silences_read_before(tmp_path: Path) -> None:
    path = tmp_path / "silences.json"
    now = time.time()
    SilenceFile(path).add(Silence("s", (Matcher.parse('rack="A01"'),), now - 1, now + 60, "", ""))
    silences = Silences([], path)
    path.write_text("{ not json")
    silences.refresh()
    assert silences.muting(LABELS, now) is not None


def test_a_mistyped_path_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "rackwatch-colector" / "silences.json"
    result = rackwatch("-f", str(path), "add", 'rack="A01"', "--comment", "swap")
    assert result.returncode == 2
    assert f"folder {path.parent} does not exist; a mistyped path?" in result.stderr
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("action", [["add", 'rack="A01"', "--comment", "x"], ["list"]])
def test_a_folder_given_as_the_file_is_a_clear_error(tmp_path: Path, action: list[str]) -> None:
    result = rackwatch("-f", str(tmp_path), *action)
    assert result.returncode == 2
    assert f"{tmp_path} is a folder; give the silences file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_collector_config_names_the_file(tmp_path: Path) -> None:
    silences = tmp_path / "state" / "silences.json"
    silences.parent.mkdir()
    config = tmp_path / "collector.yaml"
    config.write_text(
        "alerting:\n"
        "  rules_file: rules.yaml\n"
        f"  silences_file: {silences}\n"
        "  receivers: [{name: noc, kind: webhook, url: {env: RW_UNSET_HOOK_URL}}]\n"
        "  route: {receiver: noc}\n",
        encoding="utf-8",
    )
    added = rackwatch("-c", str(config), "add", 'rack="A01"', "--comment", "CHG-1")
    assert added.returncode == 0, added.stderr  # secrets are not needed to find the file
    assert [s.id for s in SilenceFile(silences).read()] == [added.stdout.strip()]
    config.write_text(config.read_text().replace(str(silences), "silences.json"))
    relative = rackwatch("-c", str(config), "list")
    assert relative.returncode == 2
    assert "alerting.silences_file silences.json is relative" in relative.stderr
    config.write_text(config.read_text().replace("  silences_file: silences.json\n", ""))
    unset = rackwatch("-c", str(config), "list")
    assert unset.returncode == 2
    assert f"{config}: alerting.silences_file is not set" in unset.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "5"], "--duration 5: give a unit (30m, 2h, 1d)"),
        (["--duration", "100000d"], "would last 100000d, over 30d"),
        (["--end", "2999-01-01T00:00:00"], "over 30d: a silence that long hides real faults"),
    ],
)
def test_durations_need_a_unit_and_long_ones_need_force(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "silences.json"
    refused = rackwatch("-f", str(path), "add", 'rack="A01"', "--comment", "x", *args)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert not path.exists()
    if "unit" not in message:
        forced = rackwatch("-f", str(path), "add", 'rack="A01"', "--comment", "x", "--force", *args)
        assert forced.returncode == 0, forced.stderr
        (silence,) = SilenceFile(path).read()
        assert silence.ends_at - silence.starts_at > 30 * 86400


@pytest.mark.parametrize(
    "matchers",
    [['alertname=~".*"'], ['rack!="A01"'], ['rack=""', 'site=~".*"']],
)
def test_matchers_every_alert_passes_need_force(tmp_path: Path, matchers: list[str]) -> None:
    path = tmp_path / "silences.json"
    refused = rackwatch("-f", str(path), "add", *matchers, "--comment", "x")
    assert refused.returncode == 2
    assert "would silence every alert" in refused.stderr
    assert not path.exists()
    forced = rackwatch("-f", str(path), "add", *matchers, "--comment", "x", "--force")
    assert forced.returncode == 0, forced.stderr
    (silence,) = SilenceFile(path).read()
    assert silence.mutes({"alertname": "AnythingAtAll"}, time.time())


def test_listing_before_any_silence_says_there_is_no_file_yet(tmp_path: Path) -> None:
    path = tmp_path / "silences.json"
    listed = rackwatch("-f", str(path), "list")
    assert listed.returncode == 0
    assert f"{path}: no silences file yet (none added)" in listed.stderr
    assert listed.stdout.startswith("ID ")
