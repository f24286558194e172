"""Profiles a site owns: the add-a-device workflow of docs/devices.md, run as written.

A real recording (Gude EPC 1202, from the shared set) is walked off snmpsim with net-snmp,
converted to snmprec, served by a second snmpsim, and read with the profile taken verbatim
from docs/devices.md through `rackwatch check` and `probe`. rackwatch ships a profile for the
device (gude_epc1202): the site's, with the same sysObjectID prefix, takes it over, and reads
what the built-in reads.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.registry import BUILTIN_DIR, Registry, load_registry
from agent.service import Agent
from rackwatch import localservices
from rackwatch.loader import load_agent
from rackwatch.localservices import Running
from telemetry.lineproto import parse_line
from telemetry.sample import Sample

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "devices.md"
SNMPSIM_BIN = Path(sys.executable).parent


def rackwatch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def doc_profile() -> str:
    """The site profile exactly as docs/devices.md shows it."""
    after = DOC.read_text(encoding="utf-8").split("<!-- site profile: gude_epc.yaml -->", 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


@dataclass
class Site:
    profiles: Path  # the site's profile directory, holding the docs' profile
    device: Running  # snmpsim serving the site's own recording
    address: str


@pytest.fixture
def site(snmpsim: Running, tmp_path: Path) -> Iterator[Site]:
    # Step 1 of the docs: walk the device numerically, convert the walk to snmprec.
    walk = subprocess.run(
        ["snmpwalk", "-v2c", "-c", "gude-epc_1202", "-On", f"{snmpsim.host}:{snmpsim.port}", ".1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (tmp_path / "gude-epc.snmpwalk").write_text(walk.stdout)
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    subprocess.run(
        [
            SNMPSIM_BIN / "snmpsim-manage-records",
            "--source-record-type",
            "snmpwalk",
            "--input-file",
            tmp_path / "gude-epc.snmpwalk",
            "--output-file",
            recordings / "gude-epc.snmprec",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "gude_epc.yaml").write_text(doc_profile())
    device = localservices.start_snmpsim(recordings, tmp_path / "snmpsim")
    try:
        yield Site(profiles, device, f"{device.host}:{device.port}")
    finally:
        localservices.stop(device)


def probe(site: Site, *args: str | Path) -> tuple[str, list[Sample]]:
    result = rackwatch("probe", site.address, "--community", "gude-epc", *args)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    return header, [parse_line(line, default_time_ns=0) for line in lines if line[:1] != "#"]


def by_tag(samples: list[Sample], measurement: str, tag: str) -> dict[str, dict[str, object]]:
    return {s.tags[tag]: dict(s.fields) for s in samples if s.measurement == measurement}


def view(samples: list[Sample]) -> list[tuple[str, dict[str, str], dict[str, object]]]:
    return sorted(((s.measurement, dict(s.tags), dict(s.fields)) for s in samples), key=repr)


def test_a_profile_written_from_the_docs_takes_the_device_over_from_the_builtin(
    site: Site,
) -> None:
    # Step 2 of the docs: the built-in reads it today, as the page shows (address aside).
    builtin_header, builtin = probe(site)
    shown = builtin_header.split(": ", 1)[1]
    assert shown.startswith("profile gude_epc1202, vendor gude, model Expert Power Control 1202-1")
    assert f": {shown}\n" in DOC.read_text(encoding="utf-8")

    checked = rackwatch("check", "-c", site.profiles / "gude_epc.yaml")
    assert checked.returncode == 0, checked.stderr
    assert "ok (device profile)" in checked.stdout

    # Step 5: the same sysObjectID prefix as the built-in's, and the site's profile wins.
    header, samples = probe(site, "--profiles-dir", site.profiles)
    assert "profile gude_epc, vendor gude, model Expert Power Control 1202-1" in header
    assert view(samples) == view(builtin)
    # What the device shows (GUDEADS-EPC1202-MIB units; LibreNMS reads the same values).
    assert by_tag(samples, "pdu_inlet", "inlet") == {
        "1": {
            "energy_kwh": pytest.approx(2020.584),
            "power_w": 17,
            "current_a": pytest.approx(0.167),
            "voltage_v": 227,
            "frequency_hz": pytest.approx(49.99),
            "power_factor": pytest.approx(0.464),
            "apparent_power_va": 38,
        }
    }
    outlets = by_tag(samples, "pdu_outlet", "outlet")
    assert {name: fields["state"] for name, fields in outlets.items()} == {
        "1": "on",
        "2": "off",
        "3": "on",
        "4": "on",
    }

    # One file, without a directory: forced whatever the sysObjectID says.
    _, forced = probe(site, "--profile", site.profiles / "gude_epc.yaml")
    assert by_tag(forced, "pdu_inlet", "inlet")["1"]["power_w"] == 17


def agent_config(path: Path, profiles_dir: str, profile: str) -> Path:
    path.write_text(
        "agent: {name: a1, site: lab}\n"
        f"profiles_dir: {profiles_dir}\n"
        "credentials: {default: {community: public}}\n"
        "devices:\n"
        f"  - {{name: pdu-lab-01, address: 10.20.0.17, profile: {profile}}}\n"
    )
    return path


def test_agent_config_checks_device_profiles_against_the_site_directory(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "gude_epc.yaml").write_text(doc_profile())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # profiles_dir is relative to the config's folder, not the working directory.
    good = agent_config(tmp_path / "agent.yaml", "profiles", "gude_epc")
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "-c", good],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    typo = agent_config(tmp_path / "typo.yaml", "profiles", "gude_epx")
    result = rackwatch("check", "-c", typo)
    assert result.returncode == 1
    assert f"{typo}:5: devices[0].profile: unknown profile 'gude_epx'" in result.stderr

    # Without the directory the built-ins know no gude_epc (theirs is gude_epc1202);
    # --profiles-dir supplies it.
    bare = agent_config(tmp_path / "bare.yaml", "null", "gude_epc")
    assert rackwatch("check", "-c", bare).returncode == 1
    result = rackwatch("check", "-c", bare, "--profiles-dir", tmp_path / "profiles")
    assert result.returncode == 0, result.stderr

    missing = agent_config(tmp_path / "missing.yaml", "nowhere", "gude_epc")
    result = rackwatch("check", "-c", missing)
    assert result.returncode == 1
    assert "profiles_dir: " in result.stderr
    assert "is not a directory" in result.stderr


def test_a_broken_site_profile_is_named_with_file_and_line(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    broken = doc_profile().replace("power_w: {column: 4}", "power_w: {column: 0}")
    (profiles / "gude_epc.yaml").write_text(broken)
    line = broken.splitlines().index(
        next(text for text in broken.splitlines() if "column: 0" in text)
    )
    result = rackwatch("check", "-c", profiles / "gude_epc.yaml")
    assert result.returncode == 1
    assert f"gude_epc.yaml:{line + 1}: tables[0].fields.power_w.column:" in result.stderr
    # An agent config that uses the directory is refused with the profile's own position.
    config = agent_config(tmp_path / "agent.yaml", "profiles", "gude_epc")
    result = rackwatch("check", "-c", config)
    assert result.returncode == 1
    assert f"gude_epc.yaml:{line + 1}:" in result.stderr


def test_a_site_profile_off_the_schema_is_refused_with_what_the_schema_expects(
    tmp_path: Path,
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    off = doc_profile().replace("power_w: {column: 4}", "powerw: {column: 4}")
    off = off.replace(
        'state: {column: 3, type: enum, enum: {0: "off", 1: "on"}}', "state: {column: 3}"
    )
    (profiles / "gude_epc.yaml").write_text(off)
    lines = off.splitlines()
    powerw = 1 + next(i for i, text in enumerate(lines) if "powerw:" in text)
    state = 1 + next(i for i, text in enumerate(lines) if "state: {column: 3}" in text)

    result = rackwatch("check", "-c", profiles / "gude_epc.yaml")
    assert result.returncode == 1
    assert (
        f"gude_epc.yaml:{powerw}: tables[0].fields.powerw: field powerw: not in the schema's"
        " vocabulary for pdu_inlet; near: power_w"
    ) in result.stderr
    assert (
        f"gude_epc.yaml:{state}: tables[1].fields.state: field state: a gauge writes float,"
        " but pdu_outlet.state is string (enum) in the schema: needs type enum or string"
    ) in result.stderr
    # The agent refuses it too, at its own file and line, and the built-ins still load.
    config = agent_config(tmp_path / "agent.yaml", "profiles", "gude_epc")
    result = rackwatch("check", "-c", config)
    assert result.returncode == 1
    assert f"gude_epc.yaml:{powerw}: tables[0].fields.powerw: field powerw" in result.stderr
    assert "ups_rfc1628" in load_registry().profiles


def test_every_shipped_profile_checks_clean() -> None:
    files = sorted(BUILTIN_DIR.glob("*.yaml")) + sorted(BUILTIN_DIR.glob("fragments/*.yaml"))
    result = rackwatch("check", *(arg for path in files for arg in ("-c", path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (device profile)") == len(list(BUILTIN_DIR.glob("*.yaml")))


def test_a_site_profile_replaces_the_builtin_of_the_same_name(tmp_path: Path) -> None:
    builtin = (BUILTIN_DIR / "ups_rfc1628.yaml").read_text()
    (tmp_path / "ups_rfc1628.yaml").write_text(builtin.replace("vendor: generic", "vendor: site"))
    registry = load_registry(tmp_path)
    site_ups = registry.profiles["ups_rfc1628"]
    assert site_ups.vendor == "site"
    found = registry.detect("1.3.6.1.2.1.33", "")
    assert found is site_ups
    # The built-ins themselves are untouched.
    assert load_registry().profiles["ups_rfc1628"].vendor == "generic"


def test_a_site_fragment_replaces_the_builtin_one_for_every_profile(tmp_path: Path) -> None:
    (tmp_path / "fragments").mkdir()
    builtin = (BUILTIN_DIR / "fragments" / "ups_mib.yaml").read_text()
    (tmp_path / "fragments" / "ups_mib.yaml").write_text(builtin)
    registry = load_registry(tmp_path)
    site_mib = registry.fragments["ups_mib"]
    assert site_mib is not load_registry().fragments["ups_mib"]
    for name in ("ups_rfc1628", "liebert_gp"):  # profiles that include it get the site's
        assert any(part is site_mib for part in registry.with_includes(registry.profiles[name]))


def test_a_site_profile_wins_a_tie_with_a_builtin(tmp_path: Path) -> None:
    profile = doc_profile().replace("name: gude_epc", "name: site_ups")
    profile = profile.replace('"1.3.6.1.4.1.28507.43"', '"1.3.6.1.2.1.33"')
    (tmp_path / "site_ups.yaml").write_text(profile)
    found = load_registry(tmp_path).detect("1.3.6.1.2.1.33", "")
    assert found is not None
    assert found.name == "site_ups"


def test_the_longer_sysobjectid_prefix_wins_wherever_the_profile_comes_from(
    tmp_path: Path,
) -> None:
    def detected(registry: Registry, sys_object_id: str) -> str | None:
        profile = registry.detect(sys_object_id, "")
        return profile.name if profile else None

    (tmp_path / "gude_epc.yaml").write_text(doc_profile())
    assert detected(load_registry(tmp_path), "1.3.6.1.4.1.28507.43") == "gude_epc"
    assert detected(load_registry(), "1.3.6.1.4.1.28507.43") == "gude_epc1202"
    # A site profile for all of Gude's enterprise is shorter than the built-in's prefix.
    wide = doc_profile().replace('"1.3.6.1.4.1.28507.43"', '"1.3.6.1.4.1.28507"')
    (tmp_path / "gude_epc.yaml").write_text(wide)
    registry = load_registry(tmp_path)
    assert detected(registry, "1.3.6.1.4.1.28507.43") == "gude_epc1202"
    assert detected(registry, "1.3.6.1.4.1.28507.99") == "gude_epc"


# A site that knows its Gude sensor reads the external sensor port, which the built-in leaves
# out (GUDEADS-EPC1202-MIB states no unit for epc1202TempSensor), and keeps the rest.
EXTENDED = """\
name: gude_epc
vendor: gude
kind: pdu
detect:
  sys_object_id: ["1.3.6.1.4.1.28507.43"]
identity:  # not included: a profile's own
  model: [{oid: 1.3.6.1.4.1.28507.43.1.1.2.1.0}]
include: [gude_epc1202]
tables:
  - measurement: env_sensor
    entry: 1.3.6.1.4.1.28507.43.1.6.1.1
    index: [sensor]
    tags:
      sensor: {index: sensor}
    fields:
      temperature_c: {column: 2, scale: 0.1}
      humidity_pct: {column: 3, scale: 0.1}
"""


def test_a_site_profile_can_include_the_builtin_it_takes_over(site: Site) -> None:
    (site.profiles / "gude_epc.yaml").write_text(EXTENDED)
    registry = load_registry(site.profiles)
    ours = registry.detect("1.3.6.1.4.1.28507.43", "")
    assert ours is registry.profiles["gude_epc"]
    assert registry.with_includes(ours) == [ours, load_registry().profiles["gude_epc1202"]]

    _, builtin = probe(site)
    header, samples = probe(site, "--profiles-dir", site.profiles)
    assert "profile gude_epc, vendor gude" in header
    # The recording has no sensor on the port: what the built-in reads, and nothing more.
    assert view(samples) == view(builtin)


async def test_reload_reads_changed_site_profiles_again(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "gude_epc.yaml").write_text(doc_profile())
    path = agent_config(tmp_path / "agent.yaml", "profiles", "gude_epc")
    agent = Agent(load_agent(path))
    first = agent.pollers["pdu-lab-01"]
    await agent.reload(load_agent(path))
    assert agent.pollers["pdu-lab-01"] is first  # nothing changed: the poller keeps its state
    changed = doc_profile().replace("power_w: {column: 4}", "power_w: {column: 4, absent: [-1]}")
    (profiles / "gude_epc.yaml").write_text(changed)
    await agent.reload(load_agent(path))
    assert agent.pollers["pdu-lab-01"] is not first


def test_site_fragments_are_included_by_name_and_checked(tmp_path: Path) -> None:
    profile, outlets = doc_profile().split("  - measurement: pdu_outlet\n")
    (tmp_path / "fragments").mkdir()
    fragment = tmp_path / "fragments" / "gude_outlets.yaml"
    fragment.write_text("tables:\n  - measurement: pdu_outlet\n" + outlets)
    (tmp_path / "gude_epc.yaml").write_text(
        profile.replace("tables:\n", "include: [gude_outlets]\ntables:\n")
    )
    registry = load_registry(tmp_path)
    parts = registry.with_includes(registry.profiles["gude_epc"])
    assert [t.measurement for part in parts for t in part.tables] == ["pdu_inlet", "pdu_outlet"]

    result = rackwatch("check", "-c", fragment, "-c", tmp_path / "gude_epc.yaml")
    assert result.returncode == 1  # the profile's include is unknown without its directory
    assert f"{fragment}: ok (profile fragment)" in result.stdout
    assert "include: no profile or fragment named 'gude_outlets'" in result.stderr
    result = rackwatch("check", "-c", tmp_path / "gude_epc.yaml", "--profiles-dir", tmp_path)
    assert result.returncode == 0, result.stderr
