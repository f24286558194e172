"""The built-in Iluvatar `ixsmi` and Enflame `efsmi` definitions (the `aligned` layout) read
against real outputs of the tools (tests/data/vendor_tools, sources in SOURCES.md there) through
a real subprocess; output cut short, another version's and another vendor's output are named,
counted failures that cost only what they must."""

from __future__ import annotations

import pytest

from agent.accelerators.config import AcceleratorSettings
from agent.accelerators.sources import Accelerators
from agent.accelerators.vendor_tools import VendorToolSource
from telemetry.lineproto import encode, parse_line
from telemetry.schema import schema
from tests import vendor_tool_fake
from tests.vendor_tool_fake import DATA, FAKE, MIB, FakeTool, assert_refused, builtin, by_index

tool = vendor_tool_fake.tool  # the fixture
TAGS = {"site": "hub", "room": "hall-3", "row": "E", "rack": "E07", "host": "gpu-e07-03"}
IXSMI = "ixsmi_bi_v150_x16_ixml41.txt"
EFSMI = "efsmi_l300_x1.txt"
EFSMI_1_2 = "efsmi_s60_x2.txt"


def source(name: str) -> VendorToolSource:
    return builtin(name, TAGS)


# --- every card as the capture prints it -------------------------------------------------------

# GPU: (Temp, power used) as each capture prints them; None where it prints `N/A / N/A`
BI_V150 = {
    IXSMI: (116, {
        "0": (32, None), "1": (30, 93), "2": (31, None), "3": (31, 94),
        "4": (30, None), "5": (31, 98), "6": (31, None), "7": (31, 95),
        "8": (32, None), "9": (32, 95), "10": (31, None), "11": (31, 94),
        "12": (30, None), "13": (32, 93), "14": (30, None), "15": (30, 94),
    }),
    "ixsmi_bi_v150_x16_ixml43.txt": (64, {
        "0": (35, None), "1": (34, 103), "2": (35, None), "3": (34, 106),
        "4": (35, None), "5": (35, 105), "6": (34, None), "7": (34, 106),
        "8": (34, None), "9": (35, 107), "10": (34, None), "11": (33, 103),
        "12": (34, None), "13": (35, 104), "14": (35, None), "15": (36, 107),
    }),
}  # fmt: skip


@pytest.mark.parametrize("recording", list(BI_V150))
async def test_ixsmi_sixteen_bi_v150_gpus(tool: FakeTool, recording: str) -> None:
    tool.prints(recording)
    iluvatar = source("iluvatar_ixsmi")
    used_mib, gpus = BI_V150[recording]

    cards = by_index(await iluvatar.collect())

    assert list(cards) == list(gpus)
    for index, (temp, power) in gpus.items():
        # | 1    Iluvatar BI-V150         | 00000000:16:00.0     | 1500MHz   1600MHz    |
        # | 0%   30C   P0    93W / 350W   | 116MiB / 32768MiB    | 0%        Default    |
        expected = {
            "util_pct": 0.0,
            "temp_c": float(temp),
            "mem_used_bytes": used_mib * MIB,
            "mem_total_bytes": 32768 * MIB,
            "sm_clock_mhz": 1500.0,
            "mem_clock_mhz": 1600.0,
        }
        if power is not None:
            expected |= {"power_w": float(power), "power_limit_w": 350.0}
        assert dict(cards[index].fields) == expected, index
        assert cards[index].tags["model"] == "Iluvatar BI-V150"
        assert cards[index].tags["vendor"] == "iluvatar"
    assert isinstance(cards["0"].fields["mem_used_bytes"], int)
    assert parse_line(encode(cards["1"])) == cards["1"]
    assert not iluvatar.failures  # N/A is no value, not a failure


async def test_efsmi_one_l300(tool: FakeTool) -> None:
    tool.prints(EFSMI)
    enflame = source("enflame_efsmi")

    cards = by_index(await enflame.collect())

    # | 0      Enflame L300         | 40.2.8.3          | 00:2d:00.0  Enable        |
    # | 35℃    LP1      68W / 300W  | 147456MiB Disable | 0%          A098Q50610048 |
    assert list(cards) == ["0"]
    assert dict(cards["0"].fields) == {
        "temp_c": 35.0,
        "power_w": 68.0,
        "power_limit_w": 300.0,
        "mem_total_bytes": 147456 * MIB,
        "util_pct": 0.0,
    }
    assert (cards["0"].tags["model"], cards["0"].tags["vendor"]) == ("Enflame L300", "enflame")
    assert parse_line(encode(cards["0"])) == cards["0"]
    assert not enflame.failures


async def test_efsmi_two_sr_iov_functions_of_an_s60g(tool: FakeTool) -> None:
    tool.prints("efsmi_s60g_sriov_x2.txt")
    enflame = source("enflame_efsmi")

    cards = by_index(await enflame.collect())

    # | 1      Enflame S60G         | 31.5.3            | 00:2f:00.0  Disable       |
    # | 34℃    LP0      N/A         | 23552MiB  SRIOV   | 0%          A018K30520031 |
    assert {i: dict(c.fields) for i, c in cards.items()} == {
        i: {"temp_c": 34.0, "mem_total_bytes": 23552 * MIB, "util_pct": 0.0} for i in ("0", "1")
    }
    assert cards["1"].tags["model"] == "Enflame S60G"
    assert not enflame.failures  # the functions print no power: N/A, not a failure


async def test_efsmi_1_2_keeps_what_it_prints_alike_and_counts_the_rest(tool: FakeTool) -> None:
    # efsmi 1.2 (two S60): same box and columns, but `39 C` and `105W  300W`
    tool.prints(EFSMI_1_2)
    enflame = source("enflame_efsmi")

    cards = by_index(await enflame.collect())

    assert {i: dict(c.fields) for i, c in cards.items()} == {
        "0": {"mem_total_bytes": 49120 * MIB, "util_pct": 0.0},
        "1": {"mem_total_bytes": 42976 * MIB, "util_pct": 0.0},
    }
    assert cards["1"].tags["model"] == "S60"
    # per card: TEMP not in ℃, power used and power cap not "used / cap"
    assert enflame.failures == {"card": 6}


# --- bad output --------------------------------------------------------------------------------


async def test_ixsmi_cut_short_keeps_the_whole_gpus_and_counts_the_rest(tool: FakeTool) -> None:
    text = (DATA / IXSMI).read_text(encoding="utf-8")
    iluvatar = source("iluvatar_ixsmi")
    tool.prints_text(text)
    await iluvatar.collect()

    tool.prints_text(text[: text.index("| 0%   32C   P0    95W / 350W")])  # inside GPU 9

    cards = by_index(await iluvatar.collect())

    assert list(cards) == [str(i) for i in range(9)]
    assert cards["7"].fields["power_w"] == 95.0
    # GPU 9 has one line of two; no process box came; GPUs 9-15 are missing
    assert iluvatar.failures == {"card": 1, "truncated": 1, "card_missing": 7}


async def test_efsmi_cut_short_counts_the_card(tool: FakeTool) -> None:
    text = (DATA / EFSMI).read_text(encoding="utf-8")
    enflame = source("enflame_efsmi")
    tool.prints_text(text)
    await enflame.collect()

    tool.prints_text(text[: text.index("| 35℃")])  # the card's second line never came

    assert by_index(await enflame.collect()) == {}
    assert enflame.failures == {"card": 1, "card_missing": 1}


@pytest.mark.parametrize(
    ("definition", "recording", "reason"),
    [
        ("iluvatar_ixsmi", EFSMI, "no '| GPU ...' header in a box"),
        ("iluvatar_ixsmi", "hy_smi_k100ai_x4.txt", "no '| GPU ...' header in a box"),
        ("enflame_efsmi", IXSMI, "no '| DEV ...' header in a box"),
        ("enflame_efsmi", "mx_smi_mxc500_x4.txt", "no '| DEV ...' header in a box"),
    ],
)
async def test_another_vendors_output_fails_the_poll_with_its_reason(
    tool: FakeTool, definition: str, recording: str, reason: str
) -> None:
    tool.prints(recording)
    await assert_refused(source(definition), reason)


async def test_mx_smi_output_through_ixsmi_names_each_column_it_lacks(tool: FakeTool) -> None:
    # mx-smi's box also starts `| GPU ...`: its cards come through with the columns both tools
    # print, and every column ixsmi's definition names but mx-smi lacks is a counted failure
    tool.prints("mx_smi_mxc500_x4.txt")
    iluvatar = source("iluvatar_ixsmi")

    cards = by_index(await iluvatar.collect())

    assert list(cards) == ["0", "1", "2", "3"]
    # | 0           MXC500                 | 0000:05:00.0        | 0%                   |
    # | 51C         71W                    | 60982/65536 MiB     |                      |
    assert dict(cards["0"].fields) == {
        "util_pct": 0.0,
        "temp_c": 51.0,
        "mem_used_bytes": 60982 * MIB,
        "mem_total_bytes": 65536 * MIB,
    }
    assert cards["0"].tags["model"] == "unknown"  # mx-smi's column is NAME, not Name
    # per card: no Pwr:Usage/Cap (twice: power used and cap), no Clock-SM, no Clock-Mem; and
    # mx-smi's process box is "Process:", not "Processes:"
    assert iluvatar.failures == {"card": 4 * 4, "truncated": 1}


# --- through the agent's accelerators config ---------------------------------------------------


async def test_a_configured_ixsmi_polls_with_host_totals(tool: FakeTool) -> None:
    tool.prints(IXSMI)
    settings = AcceleratorSettings.model_validate(
        {
            "host": TAGS["host"],
            "rack": "E07",
            "tools": [{"definition": "iluvatar_ixsmi", "program": FAKE, "timeout_s": 5}],
        }
    )
    accelerators = Accelerators(settings, "hub", lambda samples: None)

    samples = await accelerators.polls["iluvatar"]()

    (host,) = [s for s in samples if s.measurement == "accelerator_host"]
    assert dict(host.fields) == {
        "count": 16,
        "power_w": 93.0 + 94 + 98 + 95 + 95 + 94 + 93 + 94,  # the eight GPUs that report it
        "tool_failures_card_total": 0,
        "tool_failures_truncated_total": 0,
        "tool_failures_card_missing_total": 0,
    }
    assert sorted({p for s in samples for p in schema().sample_problems(s, ())}) == []
