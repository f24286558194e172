"""The built-in Cambricon `cnmon` and Kunlunxin `xpu-smi` definitions (the `aligned` layout) read
against real outputs of the tools (tests/data/vendor_tools, sources in SOURCES.md there) through
a real subprocess; output cut short, another vendor's output and a card whose line moved are
named, counted failures that cost only what they must."""

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
TAGS = {"site": "hub", "room": "hall-3", "row": "D", "rack": "D04", "host": "mlu-d04-01"}
CNMON = "cnmon_mlu370x8_x2.txt"
XPU_SMI = "xpu_smi_p800_x8.txt"


def source(name: str) -> VendorToolSource:
    return builtin(name, TAGS)


# --- every card as the capture prints it -------------------------------------------------------


async def test_cnmon_two_mlu370_x8(tool: FakeTool) -> None:
    tool.prints(CNMON)
    cambricon = source("cambricon_cnmon")

    cards = by_index(await cambricon.collect())

    # | 0     /   MLU370-X8    v1.1.6 |         0000:39:00.0 | 0%                N/A |
    # |  0%   32C        106 W/ 250 W |     0 MiB/ 23374 MiB | N/A           Default |
    # | 1     /   MLU370-X8    v1.1.6 |         0000:3D:00.0 | 0%                N/A |
    # |  0%   39C        106 W/ 250 W |     0 MiB/ 23374 MiB | N/A           Default |
    assert {index: dict(card.fields) for index, card in cards.items()} == {
        index: {
            "util_pct": 0.0,
            "temp_c": temp,
            "power_w": 106.0,
            "power_limit_w": 250.0,
            "mem_used_bytes": 0,
            "mem_total_bytes": 23374 * MIB,
        }
        for index, temp in (("0", 32.0), ("1", 39.0))
    }
    assert {(c.tags["vendor"], c.tags["model"], c.tags["rack"]) for c in cards.values()} == {
        ("cambricon", "MLU370-X8", "D04")
    }
    assert all(parse_line(encode(card)) == card for card in cards.values())
    assert not cambricon.failures


# (temperature, power) of each P800 as printed: | N/A   37C  N/A     88W / 400W | ...
P800_TEMP_POWER = {
    "0": (37.0, 88.0),
    "1": (41.0, 90.0),
    "2": (36.0, 89.0),
    "3": (36.0, 89.0),
    "4": (40.0, 88.0),
    "5": (40.0, 90.0),
    "6": (39.0, 90.0),
    "7": (40.0, 87.0),
}


async def test_xpu_smi_eight_p800(tool: FakeTool) -> None:
    tool.prints(XPU_SMI)
    kunlunxin = source("kunlunxin_xpu_smi")

    cards = by_index(await kunlunxin.collect())

    # every card: 0MiB / 98304MiB, 0% XPU-Util, 400W cap, 0 volatile uncorrected ECC errors
    assert {index: dict(card.fields) for index, card in cards.items()} == {
        index: {
            "util_pct": 0.0,
            "temp_c": temp,
            "power_w": power,
            "power_limit_w": 400.0,
            "mem_used_bytes": 0,
            "mem_total_bytes": 98304 * MIB,
            "ecc_uncorrected_total": 0,
        }
        for index, (temp, power) in P800_TEMP_POWER.items()
    }
    # "P800 OAM": two words under `Name`, one column
    assert {(c.tags["vendor"], c.tags["model"]) for c in cards.values()} == {
        ("kunlunxin", "P800 OAM")
    }
    assert all(parse_line(encode(card)) == card for card in cards.values())
    assert not kunlunxin.failures


async def test_a_configured_xpu_smi_polls_with_host_totals(tool: FakeTool) -> None:
    tool.prints(XPU_SMI)
    settings = AcceleratorSettings.model_validate(
        {
            "host": TAGS["host"],
            "rack": TAGS["rack"],
            "tools": [{"definition": "kunlunxin_xpu_smi", "program": FAKE, "timeout_s": 5}],
        }
    )
    accelerators = Accelerators(settings, "hub", lambda samples: None)

    samples = await accelerators.polls["kunlunxin"]()

    (host,) = [s for s in samples if s.measurement == "accelerator_host"]
    assert (host.fields["count"], host.fields["power_w"]) == (
        8,
        sum(power for _, power in P800_TEMP_POWER.values()),
    )
    assert sorted({p for s in samples for p in schema().sample_problems(s, ())}) == []


# --- bad output --------------------------------------------------------------------------------


async def test_xpu_smi_cut_short_keeps_the_whole_cards_and_counts_the_rest(
    tool: FakeTool,
) -> None:
    text = (DATA / XPU_SMI).read_text()
    kunlunxin = source("kunlunxin_xpu_smi")
    tool.prints_text(text)
    await kunlunxin.collect()

    # the cut falls in card 3's second line: that line is not whole, card 3 is one line short
    tool.prints_text(text[: text.index("36C  N/A     89W", text.index("|   3  P800"))])
    cards = by_index(await kunlunxin.collect())

    assert list(cards) == ["0", "1", "2"]
    assert cards["2"].fields["temp_c"] == 36.0
    # card 3 misshapen; no process box (the end) came; cards 3 to 7 missing
    assert kunlunxin.failures == {"card": 1, "truncated": 1, "card_missing": 5}


async def test_cnmon_cut_between_cards_is_truncated(tool: FakeTool) -> None:
    text = (DATA / CNMON).read_text()
    cambricon = source("cambricon_cnmon")
    tool.prints_text(text)
    await cambricon.collect()

    tool.prints_text(text[: text.index("| 1     /   MLU370-X8")])  # after card 0's border
    cards = by_index(await cambricon.collect())

    assert list(cards) == ["0"]
    assert cards["0"].fields["power_w"] == 106.0
    assert cambricon.failures == {"truncated": 1, "card_missing": 1}


@pytest.mark.parametrize(
    ("definition", "recording", "reason"),
    [
        ("cambricon_cnmon", XPU_SMI, "no '| Card ...' header in a box"),
        ("kunlunxin_xpu_smi", CNMON, "no '| XPU ...' header in a box"),
        ("kunlunxin_xpu_smi", "mx_smi_mxc500_x4.txt", "no '| XPU ...' header in a box"),
        ("cambricon_cnmon", "hy_smi_k100ai_x4.txt", "no '| Card ...' header in a box"),
    ],
)
async def test_another_vendors_output_fails_the_poll_with_its_reason(
    tool: FakeTool, definition: str, recording: str, reason: str
) -> None:
    tool.prints(recording)
    await assert_refused(source(definition), reason)


async def test_a_card_line_that_moved_costs_only_that_card(tool: FakeTool) -> None:
    text = (DATA / CNMON).read_text()
    # card 1's second line one column wider: its `|` are no longer under the header's
    tool.prints_text(text.replace("|  0%   39C ", "|  0%    39C "))
    cambricon = source("cambricon_cnmon")

    cards = by_index(await cambricon.collect())

    assert list(cards) == ["0"]
    assert cambricon.failures == {"card": 1}


async def test_a_value_that_is_not_a_number_costs_only_that_field(tool: FakeTool) -> None:
    text = (DATA / XPU_SMI).read_text()
    tool.prints_text(text.replace("| N/A   41C  N/A     90W", "| N/A   ERR  N/A     90W"))  # card 1
    kunlunxin = source("kunlunxin_xpu_smi")

    cards = by_index(await kunlunxin.collect())

    assert "temp_c" not in cards["1"].fields
    assert cards["1"].fields["power_w"] == 90.0
    assert cards["2"].fields["temp_c"] == 36.0
    assert kunlunxin.failures == {"card": 1}


async def test_words_under_no_column_cost_only_that_card(
    tool: FakeTool, caplog: pytest.LogCaptureFixture
) -> None:
    text = (DATA / XPU_SMI).read_text()
    blank = "|                               |      0MiB /    96MiB |"  # third line of each card
    at = text.index(blank, text.index("|   5  P800"))  # card 5's
    tool.prints_text(text[:at] + blank.replace("|   ", "| L3", 1) + text[at + len(blank) :])
    kunlunxin = source("kunlunxin_xpu_smi")

    cards = by_index(await kunlunxin.collect())

    assert sorted(cards) == ["0", "1", "2", "3", "4", "6", "7"]
    assert kunlunxin.failures == {"card": 1}
    assert "'L3' is under no column" in caplog.text


@pytest.mark.parametrize(
    ("definition", "recording", "card", "below"),
    [
        ("cambricon_cnmon", CNMON, "| 1     /   MLU370-X8", ["1"]),
        ("metax_mx_smi", "mx_smi_mxc500_x4.txt", "| 2           MXC500", ["2", "3"]),
    ],
)
async def test_a_card_below_a_blank_line_in_the_box_is_counted_not_dropped(
    tool: FakeTool, definition: str, recording: str, card: str, below: list[str]
) -> None:
    # the box ends at its first blank line (the process box follows): a blank line printed
    # before a card used to end the box there and drop the cards below it without a word
    text = (DATA / recording).read_text()
    at = text.index(card)
    tool.prints_text(text[:at] + "\n" + text[at:])
    vendor = source(definition)

    cards = by_index(await vendor.collect())

    assert "0" in cards
    assert not set(below) & set(cards)
    assert vendor.failures == {"card": len(below)}
