"""Moore Threads `mthreads-gmi` through the built-in definition (moorethreads_mthreads_gmi, the
`ruled` layout), read from real outputs (tests/data/vendor_tools/mthreads_gmi_*.txt, sources in
SOURCES.md there) printed by a real subprocess: every card's values as printed; output cut
short, another tool's output, a card gone and a value that is not a number are named, counted
failures that cost only what they must."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.accelerators.config import JobSettings
from agent.accelerators.jobs import JobFinder
from agent.accelerators.tool_source import ToolError
from agent.accelerators.vendor_tools import VendorToolSource
from telemetry.lineproto import encode, parse_line
from tests import vendor_tool_fake
from tests.vendor_tool_fake import DATA, MIB, FakeTool, builtin, by_index

tool = vendor_tool_fake.tool  # the fixture
TAGS = {"site": "hub", "room": "hall-3", "row": "D", "rack": "D04", "host": "mtt-d04-01"}
S5000 = "mthreads_gmi_s5000_x8.txt"


def gmi(jobs: JobFinder | None = None) -> VendorToolSource:
    return builtin("moorethreads_mthreads_gmi", TAGS, jobs)


def s5000() -> str:
    return (DATA / S5000).read_text(encoding="utf-8")


async def test_eight_idle_s5000_every_card_as_printed(tool: FakeTool) -> None:
    tool.prints(S5000)
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    # 5    MTT S5000            |00000000:ba:00.0    |0%    0MiB(81920MiB)
    #      Physical      P0     |16x(16x)            |50C   YES
    temps = {"0": 48, "1": 48, "2": 49, "3": 48, "4": 48, "5": 50, "6": 48, "7": 49}
    assert list(cards) == list(temps)
    for index, temp in temps.items():
        assert dict(cards[index].fields) == {
            "util_pct": 0.0,
            "temp_c": float(temp),
            "mem_used_bytes": 0,
            "mem_total_bytes": 81920 * MIB,
        }, index
        assert isinstance(cards[index].fields["mem_total_bytes"], int)
    assert {k: cards["5"].tags[k] for k in ("vendor", "model", "rack")} == {
        "vendor": "moorethreads",
        "model": "MTT S5000",
        "rack": "D04",
    }
    assert parse_line(encode(cards["7"])) == cards["7"]
    assert not mthreads.failures


async def test_the_older_columns_of_mthreads_gmi_1_12(tool: FakeTool) -> None:
    # gmi 1.12.2 has no Perf column; the page that printed this S4000 stops after its card,
    # before the closing rule, so the output counts as cut short
    tool.prints("mthreads_gmi_s4000_faq.txt")
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    # 0    MTT S4000      |00000000:08:00.0    |88%   44302MiB(32768MiB)
    #      Physical       |16x(16x)            |65C   YES
    # (used above total as printed: the page is about a wrong total when IOMMU is off)
    assert dict(cards["0"].fields) == {
        "util_pct": 88.0,
        "temp_c": 65.0,
        "mem_used_bytes": 44302 * MIB,
        "mem_total_bytes": 32768 * MIB,
    }
    assert cards["0"].tags["model"] == "MTT S4000"
    assert mthreads.failures == {"truncated": 1}


async def test_an_s80_under_load_and_its_processes_slurm_jobs(
    tool: FakeTool, tmp_path: Path
) -> None:
    # 0    MTT S80        |00000000:01:00.0    |98%   1339MiB(16384MiB)
    #      Physical       |16x(16x)            |56C   YES
    # 0    120       ...ird_party/bin/llama-box/llama-box       2MiB
    # 0    2022      ...ird_party/bin/llama-box/llama-box    1333MiB
    tool.prints("mthreads_gmi_s80_load.txt")
    slurm = Path(__file__).parent / "data" / "slurm"
    for pid, recording in ((120, "cgroup_v1_job_280678.txt"), (2022, "cgroup_v2_job_840392.txt")):
        (tmp_path / "proc" / str(pid)).mkdir(parents=True)
        (tmp_path / "proc" / str(pid) / "cgroup").write_text((slurm / recording).read_text())
    mthreads = gmi(JobFinder(JobSettings(slurm=True, proc_root=str(tmp_path / "proc"))))

    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0"]
    fields = dict(cards["0"].fields)
    assert fields.pop("job") == "slurm:280678,840392"  # both processes of the card were read
    assert fields == {
        "util_pct": 98.0,
        "temp_c": 56.0,
        "mem_used_bytes": 1339 * MIB,
        "mem_total_bytes": 16384 * MIB,
        "slurm_job_id": "280678,840392",
    }
    assert cards["0"].tags["model"] == "MTT S80"
    assert not mthreads.failures


async def test_output_cut_inside_a_card_keeps_the_whole_cards_and_counts_the_rest(
    tool: FakeTool,
) -> None:
    text = s5000()
    mthreads = gmi()
    tool.prints(S5000)
    await mthreads.collect()

    # after card 2's first line: its other two lines never came
    tool.prints_text(text[: text.index("     Physical      P0     |16x(16x)            |49C")])
    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0", "1"]
    assert cards["1"].fields["temp_c"] == 48.0
    # card 2 is one line where the header has three; no closing rule; cards 2-7 are missing
    assert mthreads.failures == {"card": 1, "truncated": 1, "card_missing": 6}


async def test_output_cut_between_cards_is_counted_truncated(tool: FakeTool) -> None:
    text = s5000()
    mthreads = gmi()
    tool.prints_text(text[: text.index("4    MTT S5000")])  # right after card 3's rule

    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0", "1", "2", "3"]
    assert mthreads.failures == {"truncated": 1}


async def test_another_tools_output_fails_the_poll_with_its_reason(tool: FakeTool) -> None:
    mthreads = gmi()
    for recording in ("mx_smi_mxc500_x4.txt", "hy_smi_k100ai_x4.txt"):
        tool.prints(recording)
        with pytest.raises(ToolError, match=r"unparseable output: no 'ID \.\.\. \| \.\.\.' header"):
            await mthreads.collect()
    assert mthreads.failures == {"output": 2}


async def test_a_card_gone_from_the_output_is_counted_missing(tool: FakeTool) -> None:
    text = s5000()
    mthreads = gmi()
    tool.prints_text(text)
    await mthreads.collect()

    card3 = text.index("3    MTT S5000")
    tool.prints_text(text[:card3] + text[text.index("4    MTT S5000") :])  # card 3 and its rule
    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0", "1", "2", "4", "5", "6", "7"]
    assert cards["4"].fields["temp_c"] == 48.0
    assert mthreads.failures == {"card_missing": 1}


async def test_a_value_that_is_not_a_number_costs_only_that_field(tool: FakeTool) -> None:
    text = s5000()
    line = "     Physical      P0     |16x(16x)            |50C   YES"  # card 5
    tool.prints_text(text.replace(line, line.replace("50C", "ERR")))
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    assert "temp_c" not in cards["5"].fields
    assert cards["5"].fields["mem_total_bytes"] == 81920 * MIB
    assert cards["7"].fields["temp_c"] == 49.0
    assert mthreads.failures == {"card": 1}


async def test_a_line_shaped_unlike_the_header_costs_only_that_card(tool: FakeTool) -> None:
    text = s5000()
    line = "1    MTT S5000            |00000000:3a:00.0    |0%    0MiB(81920MiB)"
    tool.prints_text(text.replace(line, line.replace("|0%    ", "|")))  # card 1 lost %GPU
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0", "2", "3", "4", "5", "6", "7"]
    assert mthreads.failures == {"card": 1}


async def test_no_running_processes_gives_no_job(tool: FakeTool, tmp_path: Path) -> None:
    # the process table of this capture says "No running processes found": no card has a job
    tool.prints(S5000)
    finder = JobFinder(JobSettings(slurm=True, proc_root=str(tmp_path / "proc")))

    cards = by_index(await gmi(finder).collect())

    assert {index: card.fields["job"] for index, card in cards.items()} == dict.fromkeys(
        map(str, range(8)), ""
    )


async def test_a_blank_line_between_cards_loses_none(tool: FakeTool) -> None:
    # only the plain ---- rule ends the table: a blank line used to end it as if finished,
    # dropping the cards below it without a word
    text = s5000()
    at = text.index("4    MTT S5000")
    tool.prints_text(text[:at] + "\n" + text[at:])
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    assert list(cards) == [str(index) for index in range(8)]
    assert cards["4"].fields["temp_c"] == 48.0
    assert not mthreads.failures


async def test_output_cut_short_stays_truncated_with_a_blank_line_after(tool: FakeTool) -> None:
    # the 1.12.2 capture stops after its card, with no end rule; a whitespace-only line after
    # the cut used to count as the end of the table
    tool.prints_text((DATA / "mthreads_gmi_s4000_faq.txt").read_text() + "   \n")
    mthreads = gmi()

    cards = by_index(await mthreads.collect())

    assert list(cards) == ["0"]
    assert mthreads.failures == {"truncated": 1}
