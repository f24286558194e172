"""Vendor tools described in YAML (agent/accelerators/tools/): each built-in definition read
against real outputs of its tool (tests/data/vendor_tools, sources in SOURCES.md there) through a
real subprocess; bad output (truncated, another layout, a card missing, a value that is not a
number) is a named, counted failure that costs only what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.accelerators.config import AcceleratorSettings, JobSettings
from agent.accelerators.jobs import JobFinder
from agent.accelerators.sources import Accelerators
from agent.accelerators.tool_source import ToolError
from agent.accelerators.vendor_tools import (
    BUILTIN,
    DefinitionError,
    VendorToolSource,
    find_definition,
    load_definition,
)
from telemetry.lineproto import encode, parse_line
from telemetry.sample import Sample
from telemetry.schema import schema

DATA = Path(__file__).parent / "data" / "vendor_tools"
FAKE = str(DATA / "fake-tool")
MIB = 1024**2
TAGS = {"site": "hub", "room": "hall-3", "row": "C", "rack": "C11", "host": "dcu-c11-02"}


class FakeTool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prints(self, recording: str) -> None:
        self.prints_text((DATA / recording).read_text(encoding="utf-8"))

    def prints_text(self, text: str) -> None:
        (self.directory / "output.txt").write_text(text, encoding="utf-8")


@pytest.fixture
def tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTool:
    monkeypatch.setenv("FAKE_TOOL_DIR", str(tmp_path))
    return FakeTool(tmp_path)


def source(name: str) -> VendorToolSource:
    return VendorToolSource(TAGS, load_definition(find_definition(name)), FAKE, timeout_s=5)


def by_index(samples: list[Sample]) -> dict[str, Sample]:
    return {s.tags["index"]: s for s in samples if s.measurement == "accelerator"}


# --- the built-in definitions on their captures ------------------------------------------------


async def test_hy_smi_four_idle_k100_ai(tool: FakeTool) -> None:
    tool.prints("hy_smi_k100ai_x4.txt")
    hygon = source("hygon_hy_smi")

    cards = by_index(await hygon.collect())

    assert list(cards) == ["0", "1", "2", "3"]
    # 0       49.0C    118.0W     auto     800.0W     0%         0%        Normal
    assert dict(cards["0"].fields) == {
        "temp_c": 49.0,
        "power_w": 118.0,
        "power_limit_w": 800.0,
        "util_pct": 0.0,
        "mem_used_pct": 0.0,
    }
    assert cards["3"].fields["power_w"] == 138.0
    assert {k: cards["0"].tags[k] for k in ("vendor", "model", "rack")} == {
        "vendor": "hygon",
        "model": "Hygon DCU",
        "rack": "C11",
    }
    assert not hygon.failures


async def test_hy_smi_eight_dcus_under_load(tool: FakeTool) -> None:
    tool.prints("hy_smi_x8_load.txt")
    cards = by_index(await source("hygon_hy_smi").collect())
    assert len(cards) == 8
    # 0       67.0C    8.0W       manual   600.0W     87%        74%       Normal
    assert (cards["0"].fields["util_pct"], cards["0"].fields["mem_used_pct"]) == (74.0, 87.0)
    assert (cards["5"].fields["temp_c"], cards["5"].fields["util_pct"]) == (73.0, 17.0)


@pytest.mark.parametrize(
    ("recording", "card", "expected"),
    [
        # | 0           MXC500                 | 0000:05:00.0        | 0%                   |
        # | 51C         71W                    | 60982/65536 MiB     |                      |
        (
            "mx_smi_mxc500_x4.txt",
            "0",
            {"util_pct": 0.0, "temp_c": 51.0, "power_w": 71.0, "mem_used_bytes": 60982 * MIB},
        ),
        # | 2           MXC500                 | 0000:0e:00.0        | 24%                  |
        # | 53C         122W                   | 59830/65536 MiB     |                      |
        (
            "mx_smi_mxc500_x4_load.txt",
            "2",
            {"util_pct": 24.0, "temp_c": 53.0, "power_w": 122.0, "mem_used_bytes": 59830 * MIB},
        ),
    ],
)
async def test_mx_smi_four_mxc500(
    tool: FakeTool, recording: str, card: str, expected: dict[str, float]
) -> None:
    tool.prints(recording)
    metax = source("metax_mx_smi")
    cards = by_index(await metax.collect())
    assert list(cards) == ["0", "1", "2", "3"]
    assert dict(cards[card].fields) == {**expected, "mem_total_bytes": 65536 * MIB}
    assert isinstance(cards[card].fields["mem_used_bytes"], int)
    assert cards[card].tags["model"] == "MXC500"
    assert parse_line(encode(cards[card])) == cards[card]
    assert not metax.failures


@pytest.mark.parametrize("name", sorted(p.stem for p in BUILTIN.glob("*.yaml")))
def test_every_builtin_definition_loads_and_has_a_capture(name: str) -> None:
    definition = load_definition(BUILTIN / f"{name}.yaml")
    program = definition.command[0]
    assert any(DATA.glob(f"{program.replace('-', '_')}_*.txt")), f"no capture of {program}"


# --- bad output --------------------------------------------------------------------------------


async def test_a_truncated_output_keeps_the_whole_cards_and_counts_the_rest(
    tool: FakeTool,
) -> None:
    text = (DATA / "hy_smi_k100ai_x4.txt").read_text()
    hygon = source("hygon_hy_smi")
    tool.prints_text(text)
    await hygon.collect()

    tool.prints_text(text[: text.index("800.0W     0%         0%        Normal\n3")])  # mid-card 2

    cards = by_index(await hygon.collect())
    assert list(cards) == ["0", "1"]
    assert cards["1"].fields["power_w"] == 120.0
    # card 2's line lacks its last columns; the end line never came; cards 2 and 3 are missing
    assert hygon.failures == {"card": 1, "truncated": 1, "card_missing": 2}


async def test_another_layout_fails_the_poll_with_its_reason(tool: FakeTool) -> None:
    tool.prints("mx_smi_mxc500_x4.txt")  # not what hy-smi prints
    hygon = source("hygon_hy_smi")
    with pytest.raises(ToolError, match=r"fake-tool: unparseable output: no header line .*'DCU'"):
        await hygon.collect()
    assert hygon.failures == {"output": 1}


async def test_a_value_that_is_not_a_number_costs_only_that_field(tool: FakeTool) -> None:
    text = (DATA / "mx_smi_mxc500_x4.txt").read_text()
    tool.prints_text(text.replace("| 50C         74W ", "| 50C         ERR "))  # card 2
    metax = source("metax_mx_smi")

    cards = by_index(await metax.collect())

    assert "power_w" not in cards["2"].fields
    assert cards["2"].fields["temp_c"] == 50.0
    assert cards["3"].fields["power_w"] == 71.0
    assert metax.failures == {"card": 1}


def test_a_definition_naming_a_field_the_schema_lacks_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "acme.yaml"
    text = (BUILTIN / "hygon_hy_smi.yaml").read_text().replace("temp_c:", "temperature:")
    bad.write_text(text)
    with pytest.raises(DefinitionError, match=rf"{bad}: .*fields.temperature: not a field"):
        load_definition(bad)


# --- through the agent's accelerators config ---------------------------------------------------


async def test_a_configured_tool_polls_with_host_totals_and_its_failure_counts(
    tool: FakeTool,
) -> None:
    tool.prints("hy_smi_x8_load.txt")
    settings = AcceleratorSettings.model_validate(
        {
            "host": TAGS["host"],
            "rack": "C11",
            "tools": [{"definition": "hygon_hy_smi", "program": FAKE, "timeout_s": 5}],
        }
    )
    accelerators = Accelerators(settings, "hub", lambda samples: None)

    samples = await accelerators.polls["hygon"]()

    (host,) = [s for s in samples if s.measurement == "accelerator_host"]
    assert dict(host.fields) == {
        "count": 8,
        "power_w": 64.0,
        "tool_failures_card_total": 0,
        "tool_failures_truncated_total": 0,
        "tool_failures_card_missing_total": 0,
    }
    problems = sorted({p for s in samples for p in schema().sample_problems(s, ())})
    assert problems == []


async def test_the_process_table_gives_each_gpu_its_slurm_job(
    tool: FakeTool, tmp_path: Path
) -> None:
    # |  0                    15652         python                       60032          |
    # |  1                    22854         ray::RayWorkerW              59584          |
    tool.prints("mx_smi_mxc500_x4.txt")
    slurm = Path(__file__).parent / "data" / "slurm"
    for pid, recording in (
        (15652, "cgroup_v2_job_840392.txt"),
        (22854, "cgroup_v1_job_280678.txt"),
    ):
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "cgroup").write_text((slurm / recording).read_text())
    finder = JobFinder(JobSettings(slurm=True, proc_root=str(tmp_path / "proc")))
    metax = VendorToolSource(
        TAGS, load_definition(find_definition("metax_mx_smi")), FAKE, timeout_s=5, jobs=finder
    )

    cards = by_index(await metax.collect())

    jobs = {index: card.fields["job"] for index, card in cards.items()}
    # GPUs 2 and 3: their processes have no /proc entry here, so no job
    assert jobs == {"0": "slurm:840392", "1": "slurm:280678", "2": "", "3": ""}
