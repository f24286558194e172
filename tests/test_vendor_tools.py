"""Vendor tools described in YAML (agent/accelerators/tools/): each built-in definition read
against real outputs of its tool (tests/data/vendor_tools, sources in SOURCES.md there) through a
real subprocess; bad output (truncated, another layout, a card missing, a value that is not a
number) is a named, counted failure that costs only what it must."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from agent.accelerators.config import AcceleratorSettings, JobSettings
from agent.accelerators.jobs import JobFinder
from agent.accelerators.sources import Accelerators
from agent.accelerators.tool_formats import FORMATS
from agent.accelerators.tool_source import ToolError
from agent.accelerators.vendor_tools import (
    BUILTIN,
    DefinitionError,
    VendorTool,
    VendorToolSource,
    find_definition,
    load_definition,
)
from telemetry.lineproto import encode, parse_line
from telemetry.schema import schema
from tests import vendor_tool_fake
from tests.vendor_tool_fake import DATA, FAKE, MIB, FakeTool, builtin, by_index

tool = vendor_tool_fake.tool  # the fixture
TAGS = {"site": "hub", "room": "hall-3", "row": "C", "rack": "C11", "host": "dcu-c11-02"}


def source(name: str) -> VendorToolSource:
    return builtin(name, TAGS)


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


async def test_a_blank_line_between_table_rows_loses_no_card(tool: FakeTool) -> None:
    # the real K100_AI output with a blank line printed after DCU 1: DCUs 2 and 3 are still
    # cards (the rows' shape), and the blank line above the header and below the table is not
    # taken for one
    text = (DATA / "hy_smi_k100ai_x4.txt").read_text()
    row = "1       48.0C    120.0W     auto     800.0W     0%         0%        Normal\n"
    assert row in text
    tool.prints_text(text.replace(row, row + "\n"))
    hygon = source("hygon_hy_smi")

    cards = by_index(await hygon.collect())

    assert list(cards) == ["0", "1", "2", "3"]
    assert cards["3"].fields["power_w"] == 138.0
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
    assert any(DATA.glob(f"{program.replace('-', '_')}_*")), f"no capture of {program}"


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


async def test_a_value_of_more_parts_than_used_total_costs_those_fields(tool: FakeTool) -> None:
    # "60534/65536 MiB" read by part 0 and 1; a third number used to be ignored silently
    text = (DATA / "mx_smi_mxc500_x4.txt").read_text()
    tool.prints_text(text.replace("| 60534/65536 MiB ", "| 60534/65536/8 MiB", 1))  # card 1
    metax = source("metax_mx_smi")

    cards = by_index(await metax.collect())

    assert "mem_used_bytes" not in cards["1"].fields
    assert "mem_total_bytes" not in cards["1"].fields
    assert cards["1"].fields["power_w"] == 76.0
    assert cards["0"].fields["mem_total_bytes"] == 65536 * MIB
    assert metax.failures == {"card": 2}


def test_every_format_a_definition_may_name_has_a_parser() -> None:
    # the names are kept twice: VendorTool.format's Literal (checked when a definition loads)
    # and tool_formats.FORMATS (what reads the output)
    named = VendorTool.model_fields["format"].annotation
    assert set(get_args(named)) == set(FORMATS)


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


# --- the csv, keyvalue and json layouts --------------------------------------------------------


async def test_rocm_smi_json_of_a_hygon_dcu(tool: FakeTool) -> None:
    tool.prints("rocm_smi_hygon_dcu.json")
    hygon = source("hygon_rocm_smi")

    cards = by_index(await hygon.collect())

    # "card0": {"Average Graphics Package Power (W)": "80.0", ... "vram Total Used ...": "2"}
    assert list(cards) == ["0"]
    assert dict(cards["0"].fields) == {
        "power_w": 80.0,
        "temp_c": 41.0,
        "mem_temp_c": 44.0,
        "util_pct": 0.0,
        "mem_total_bytes": 65520 * MIB,
        "mem_used_bytes": 2 * MIB,
    }
    assert (cards["0"].tags["model"], cards["0"].tags["uuid"]) == ("DCU xxxx", "7100fa8866904061")
    assert parse_line(encode(cards["0"])) == cards["0"]
    assert not hygon.failures


async def test_json_cut_short_keeps_the_whole_cards(tool: FakeTool) -> None:
    text = (DATA / "rocm_smi_hygon_dcu.json").read_text()
    card = text[text.index("{", 1) : text.rindex("}", 0, text.rindex("}")) + 1]
    # two cards: the real one, and a copy of it as card1, cut inside card1
    two = f'{{\n  "card0": {card},\n  "card1": {card}\n}}\n'
    hygon = source("hygon_rocm_smi")
    tool.prints_text(two)
    assert list(by_index(await hygon.collect())) == ["0", "1"]

    tool.prints_text(two[: two.index('"Serial Number"', two.index('"card1"'))])
    cards = by_index(await hygon.collect())

    assert list(cards) == ["0"]
    assert cards["0"].fields["power_w"] == 80.0
    assert hygon.failures == {"truncated": 1, "card_missing": 1}

    tool.prints("hy_smi_k100ai_x4.txt")  # another layout
    with pytest.raises(ToolError, match="not a JSON object or array"):
        await hygon.collect()
    assert hygon.failures["output"] == 1


def site_definition(tmp_path: Path, text: str) -> VendorToolSource:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return VendorToolSource(TAGS, load_definition(path), FAKE, timeout_s=5)


XPU_SMI_DUMP = """
vendor: intel
command: [xpu-smi, dump, -d, "0", -m, "0,1,2,3"]
format: csv
header: Timestamp
index: DeviceId
model: {value: Intel Data Center GPU Flex 170}
fields:
  util_pct: {column: GPU Utilization (%), unit: "%"}
  power_w: {column: GPU Power (W), unit: W}
  sm_clock_mhz: {column: GPU Frequency (MHz), unit: MHz}
  temp_c: {column: GPU Core Temperature (Celsius Degree), unit: C}
"""


async def test_a_site_definition_reads_a_csv_dump(tool: FakeTool, tmp_path: Path) -> None:
    tool.prints("xpu_smi_dump_flex170.csv")
    intel = site_definition(tmp_path, XPU_SMI_DUMP)

    cards = by_index(await intel.collect())

    # 18:38:55.000,    0,     , 43.70, 2050,   (the last row of card 0 wins; empty: no field)
    assert list(cards) == ["0"]
    assert dict(cards["0"].fields) == {"power_w": 43.70, "sm_clock_mhz": 2050.0}
    assert not intel.failures


async def test_csv_cut_short_and_another_layout(tool: FakeTool, tmp_path: Path) -> None:
    text = (DATA / "xpu_smi_dump_flex170.csv").read_text()
    intel = site_definition(tmp_path, XPU_SMI_DUMP)
    tool.prints_text(text[: text.index(" 43.70")])  # the last row stops mid-way

    cards = by_index(await intel.collect())

    assert cards["0"].fields["power_w"] == 43.72  # the row before the cut
    assert intel.failures == {"truncated": 1}

    tool.prints_text(text.replace("    0,     , 43.74", "    0, 43.74"))  # a row missing a cell
    await intel.collect()
    assert intel.failures == {"truncated": 1, "card": 1}

    tool.prints("mx_smi_mxc500_x4.txt")
    with pytest.raises(ToolError, match="no CSV header line starting with 'Timestamp'"):
        await intel.collect()


NPU_SMI_COMMON = """
vendor: huawei
command: [npu-smi, info, -t, common, -i, "1"]
format: keyvalue
header: Chip ID
index: Chip ID
model: {value: Ascend 910B1}
fields:
  util_pct: {column: Aicore Usage Rate(%), unit: "%"}
  aicore_clock_mhz: {column: Aicore curFreq(MHZ), unit: MHz}
  temp_c: {column: Temperature(C), unit: C}
  power_w: {column: NPU Real-time Power(W), unit: W}
"""


async def test_a_site_definition_reads_key_value_blocks(tool: FakeTool, tmp_path: Path) -> None:
    # the real `npu-smi info -t common -i 1` of a 910B1 (tests/data/npu_smi/SOURCES)
    text = (Path(__file__).parent / "data" / "npu_smi" / "common_i1_910b1.txt").read_text()
    tool.prints_text(text)
    npu = site_definition(tmp_path, NPU_SMI_COMMON)

    cards = by_index(await npu.collect())

    # Chip ID : 0 ... Temperature(C) : 46, NPU Real-time Power(W) : 93.4; the MCU block's
    # Temperature(C) : 38 is outside the card
    assert dict(cards["0"].fields) == {
        "util_pct": 0.0,
        "aicore_clock_mhz": 800.0,
        "temp_c": 46.0,
        "power_w": 93.4,
    }
    assert not npu.failures

    tool.prints_text(text[: text.index("        Temperature(C)                 : 46")])
    cards = by_index(await npu.collect())
    assert dict(cards["0"].fields) == {"util_pct": 0.0, "aicore_clock_mhz": 800.0}
    assert npu.failures == {"card": 2}  # no Temperature(C), no NPU Real-time Power(W)

    tool.prints("mx_smi_mxc500_x4.txt")
    with pytest.raises(ToolError, match=re.escape("no 'Chip ID : ...' line")):
        await npu.collect()
