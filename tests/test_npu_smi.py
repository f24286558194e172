"""Huawei Ascend source: npu-smi parsers on real outputs, and the source through a real subprocess.

Every recording in tests/data/npu_smi/ is a real npu-smi output; its .source file names the
Huawei documentation page or the public issue it was copied from. The expected values below are
read off those recordings (the row or key named in each comment). The only made-up tool answers
are the failures the error tests need: an exit with a message, garbage, a hang.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from agent.accelerators.ascend_faults import parse_codes, table
from agent.accelerators.hccn import parse_link, parse_optical, parse_stat, parse_status
from agent.accelerators.npu_smi import (
    MIB,
    NpuSmiSource,
    detail_fields,
    die_id,
    fault_fields,
    parse_key_values,
    parse_summary,
)
from agent.accelerators.tool_source import OutputError, ToolError
from telemetry.lineproto import encode, parse_line
from telemetry.sample import Sample

DATA = Path(__file__).parent / "data" / "npu_smi"
HOST_TAGS = {"host": "npu-node-01", "site": "qiyang-a1", "room": "hall-1", "row": "B", "rack": ""}
# npu-smi's wording for a query a card cannot answer, as it prints it for "-t topo"
UNSUPPORTED = "This device does not support querying {}.\n"


def recording(name: str) -> str:
    return (DATA / name).read_text()


# --- the summary table -------------------------------------------------------------------------


def test_910b3_summary_reads_hbm_power_temperature_and_aicore_of_eight_npus() -> None:
    chips = parse_summary(recording("info_910b3_x8.txt"))
    assert [(chip.npu, chip.chip, chip.model) for chip in chips] == [
        (npu, 0, "910B3") for npu in range(8)
    ]
    first, last = chips[0], chips[7]
    # | 0 910B3 | OK | 124.9 41 0 / 0 |  and  | 0 | 0000:C1:00.0 | 27 0 / 0 59718/ 65536 |
    assert first.fields == {
        "health": "OK",
        "power_w": 124.9,
        "temp_c": 41.0,
        "util_pct": 27.0,
        "mem_used_bytes": 59718 * MIB,
        "mem_total_bytes": 65536 * MIB,
    }
    assert (last.fields["power_w"], last.fields["mem_used_bytes"]) == (128.6, 59715 * MIB)
    assert all(not chip.missing for chip in chips)
    assert all(isinstance(chip.fields["mem_total_bytes"], int) for chip in chips)


def test_old_910a_layout_without_hugepages_takes_hbm_not_the_control_cpu_ddr() -> None:
    chips = parse_summary(recording("info_910a_x8.txt"))
    assert len(chips) == 8
    # | 3 910A | OK | 65.7 37 |  and  | 0 | 0000:01:00.0 | 0 3168 / 15088 0 / 32768 |
    assert chips[3].fields == {
        "health": "OK",
        "power_w": 65.7,
        "temp_c": 37.0,
        "util_pct": 0.0,
        "mem_used_bytes": 0,
        "mem_total_bytes": 32768 * MIB,
    }


def test_a3_prints_the_npu_power_on_chip_zero_only() -> None:
    chips = parse_summary(recording("info_a3_x16.txt"))
    assert [(chip.npu, chip.chip) for chip in chips] == [(n, c) for n in range(8) for c in (0, 1)]
    chip0, chip1 = chips[14], chips[15]  # NPU 7: power 184.2 on chip 0, "-" on chip 1
    assert chip0.fields["power_w"] == 184.2
    assert "power_w" not in chip1.fields
    assert "power_w" not in chip1.missing  # "-" is not NA: nothing to ask for
    assert (chip1.fields["temp_c"], chip1.fields["mem_used_bytes"]) == (38.0, 3201 * MIB)


def test_310p3_duo_two_chips_of_one_npu_with_power_not_available() -> None:
    chips = parse_summary(recording("info_310p3_duo.txt"))
    assert [(chip.npu, chip.chip, chip.model) for chip in chips] == [
        (2, 0, "310P3"),
        (2, 1, "310P3"),
    ]
    assert all(chip.missing == {"power_w"} for chip in chips)
    # | 1 1 | 0000:01:00.0 | 0 1412 / 43693 |: no HBM column, so Memory-Usage is the device's
    assert chips[1].fields == {
        "health": "OK",
        "temp_c": 43.0,
        "util_pct": 0.0,
        "mem_used_bytes": 1412 * MIB,
        "mem_total_bytes": 43693 * MIB,
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no '| NPU Name | Health | ...'"),
        ("Segmentation fault\n", "no '| NPU Name | Health | ...'"),
        (
            recording("info_310b.txt").replace("7.6          42", "7.6           "),
            "line 7: 2 values",
        ),
        (
            recording("info_310b.txt").replace("| 0       0  ", "| x       0  "),
            "line 8: 'x       0'",
        ),
        (recording("info_310b.txt").replace("1003 / 10810", "1003 / 10k10"), "'used / total'"),
        ("\n".join(recording("info_310b.txt").splitlines()[:7]), "line 7: a chip's first row"),
    ],
)
def test_malformed_summary_is_an_error_that_says_where(text: str, problem: str) -> None:
    with pytest.raises(OutputError, match=re.escape(problem)):
        parse_summary(text)


# --- detail outputs (npu-smi info -t TYPE -i N [-c C]) ------------------------------------------


@pytest.mark.parametrize(
    ("name", "chips", "expected"),
    [
        (
            "usages_i0_310b.txt",
            [0],
            {
                "util_pct": 0.0,
                "mem_util_pct": 0.0,  # Memory Bandwidth Usage Rate(%), not Memory Usage Rate 35
                "aicpu_util_pct": 0.0,
                "ctrl_cpu_util_pct": 1.0,
                "mem_total_bytes": 10810 * MIB,
            },
        ),
        (
            "usages_i0_c0_310b.txt",  # tab-indented, no Chip ID line
            [0],
            {
                "util_pct": 0.0,
                "mem_util_pct": 1.0,
                "aicpu_util_pct": 9.0,
                "ctrl_cpu_util_pct": 86.0,
                "mem_total_bytes": 10810 * MIB,
            },
        ),
        ("power_i0_310b.txt", [0], {"power_w": 9.1}),  # not the MCU's card power 16.9
        ("power_i0_c0_310b.txt", [0], {"power_w": 9.1}),
        ("temp_i0_310b.txt", [0], {"temp_c": 50.0}),  # "Temperature (C)"; MCU sensors left out
        ("temp_i0_c0_310b.txt", [0], {"temp_c": 50.0}),
        ("health_i0_310b.txt", [0], {"health": "OK"}),
        ("health_i0_c0_310b.txt", [0], {"health": "OK"}),  # "Health Status"
        (
            "memory_i0_310b.txt",  # Capacity, not Total
            [0],
            {"mem_total_bytes": 10810 * MIB, "mem_clock_mhz": 2131.0},
        ),
    ],
)
def test_detail_outputs_give_schema_fields(
    name: str, chips: list[int], expected: Mapping[str, object]
) -> None:
    assert detail_fields(recording(name), chips) == {chips[0]: expected}


def test_detail_output_of_several_chips_is_split_by_chip_id() -> None:
    text = recording("temp_i0_310b.txt")
    assert detail_fields(text, [0, 1]) == {0: {"temp_c": 50.0}, 1: {}}


def test_board_gives_the_die_id_as_uuid() -> None:
    # Die ID : V1,010A88C4 00A1A210 00000000 00000000 00180000
    uuid = die_id(recording("board_i0_c0_310b.txt"), chip=0)
    assert uuid == "V1,010A88C4-00A1A210-00000000-00000000-00180000"


def test_detail_garbage_is_an_error_that_says_where() -> None:
    with pytest.raises(OutputError, match="line 2: 'this is not npu-smi' is not 'key : value'"):
        detail_fields("Chip ID : 0\nthis is not npu-smi\n", [0])
    with pytest.raises(OutputError, match="'many' is not a number"):
        detail_fields("Aicore Usage Rate(%) : many\n", [0])
    with pytest.raises(OutputError, match="'nan' is not a reading"):
        detail_fields("Aicore Usage Rate(%) : nan\n", [0])


def a_310b_not_ok(fake: FakeNpuSmi, health: str, detail: str) -> NpuSmiSource:
    """The real 310B summary with its health turned to `health`, its board, and `detail` as
    its `-t health` answer."""
    summary = recording("info_310b.txt").replace("| OK ", f"| {health} ", 1)
    assert summary != recording("info_310b.txt")
    fake.garbage("info", summary)
    fake.answer("info -t board -i 0 -c 0", "board_i0_c0_310b.txt")
    fake.answer("info -t health -i 0 -c 0", detail)
    return NpuSmiSource(HOST_TAGS, timeout_s=5)


async def test_a_chip_in_alarm_gets_its_three_fault_codes(fake: FakeNpuSmi) -> None:
    # the health detail is the 910A's
    source = a_310b_not_ok(fake, "Alarm", "health_i0_c0_910a_alarm.txt")

    sample = only(await source.collect())

    assert sample.fields["health"] == "Alarm"
    assert sample.fields["health_error_codes"] == "A4025021,8C03A000,8C084E00"
    assert sample.fields["health_fault_handling"] == "RestartNPU"
    assert source.failures == {}


# --- the source, through a real subprocess -----------------------------------------------------


class FakeNpuSmi:
    """tests/data/npu_smi/npu-smi on PATH, answering from a scenario directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def answer(self, command: str, recording_name: str) -> None:
        shutil.copy(DATA / recording_name, self._file(command, "txt"))

    def fail(self, command: str, stderr: str) -> None:
        self._file(command, "fail").write_text(stderr)

    def garbage(self, command: str, text: str) -> None:
        self._file(command, "txt").write_text(text)

    def hang(self, command: str) -> None:
        self._file(command, "hang").touch()

    def calls(self) -> list[str]:
        path = self.directory / "calls"
        return path.read_text().splitlines() if path.exists() else []

    def _file(self, command: str, suffix: str) -> Path:
        return self.directory / f"{'_'.join(command.split())}.{suffix}"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNpuSmi:
    monkeypatch.setenv("PATH", f"{DATA}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(tmp_path))
    return FakeNpuSmi(tmp_path)


def only(samples: list[Sample]) -> Sample:
    assert len(samples) == 1
    return samples[0]


async def test_atlas_200i_a2_poll_with_usages_and_die_id(fake: FakeNpuSmi) -> None:
    fake.answer("info", "info_310b.txt")
    fake.answer("info -t board -i 0 -c 0", "board_i0_c0_310b.txt")
    fake.answer("info -t usages -i 0", "usages_i0_310b.txt")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5, usages=True)

    sample = only(await source.collect())

    assert sample.measurement == "accelerator"
    assert dict(sample.tags) == {
        "host": "npu-node-01",
        "site": "qiyang-a1",
        "room": "hall-1",
        "row": "B",
        "vendor": "huawei",
        "model": "310B",
        "index": "0",
        "uuid": "V1,010A88C4-00A1A210-00000000-00000000-00180000",
    }
    assert dict(sample.fields) == {
        "health": "OK",
        "healthy": True,
        "power_w": 7.6,  # the summary's values win over the detail's (util 0, capacity 10810)
        "temp_c": 42.0,
        "util_pct": 0.0,
        "mem_used_bytes": 1003 * MIB,
        "mem_total_bytes": 10810 * MIB,
        "mem_util_pct": 0.0,
        "aicpu_util_pct": 0.0,
        "ctrl_cpu_util_pct": 1.0,
    }
    assert parse_line(encode(sample)) == sample

    second = only(await source.collect())
    assert second.tags == sample.tags
    assert fake.calls() == [
        "info",
        "info -t usages -i 0",
        "info -t board -i 0 -c 0",
        "info",
        "info -t usages -i 0",
    ]
    assert not source.failures


async def test_eight_910b3_npus_need_no_detail_command(fake: FakeNpuSmi) -> None:
    fake.answer("info", "info_910b3_x8.txt")
    for npu in range(8):
        fake.fail(f"info -t board -i {npu} -c 0", "Permission denied\n")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    samples = await source.collect()

    assert [s.tags["index"] for s in samples] == [str(npu) for npu in range(8)]
    assert all("chip" not in s.tags and "uuid" not in s.tags for s in samples)
    assert [s.fields["util_pct"] for s in samples] == [
        27.0,
        29.0,
        29.0,
        29.0,
        30.0,
        29.0,
        29.0,
        29.0,
    ]
    assert len({s.time_ns for s in samples}) == 1
    # a failed board query is counted, costs the poll nothing, and is tried again next poll
    assert source.failures == {"exit": 8}
    await source.collect()
    assert fake.calls().count("info -t board -i 7 -c 0") == 2
    assert not any(" -t usages" in call or " -t power" in call for call in fake.calls())


async def test_power_na_asks_the_detail_once_and_invents_nothing(fake: FakeNpuSmi) -> None:
    fake.answer("info", "info_310p3_duo.txt")
    fake.fail("info -t power -i 2", UNSUPPORTED.format("power"))
    for chip in (0, 1):
        fake.fail(f"info -t board -i 2 -c {chip}", UNSUPPORTED.format("board"))
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    first = await source.collect()
    second = await source.collect()

    assert [(s.tags["index"], s.tags["chip"]) for s in first] == [("2", "0"), ("2", "1")]
    assert all("power_w" not in s.fields and "uuid" not in s.tags for s in first + second)
    assert first[0].fields["mem_total_bytes"] == 44280 * MIB
    assert fake.calls() == [
        "info",
        "info -t power -i 2",
        "info -t board -i 2 -c 0",
        "info -t board -i 2 -c 1",
        "info",
    ]
    assert source.unsupported == {(2, "power")}


async def test_a3_chip_one_power_is_not_fetched_and_not_doubled(fake: FakeNpuSmi) -> None:
    fake.answer("info", "info_a3_x16.txt")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    samples = await source.collect()

    assert len(samples) == 16
    assert sum(1 for s in samples if "power_w" in s.fields) == 8
    assert not any(" -t power" in call for call in fake.calls())
    assert {s.tags["chip"] for s in samples} == {"0", "1"}


async def test_garbled_detail_output_is_counted_and_the_poll_goes_on(fake: FakeNpuSmi) -> None:
    fake.answer("info", "info_310b.txt")
    fake.answer("info -t board -i 0 -c 0", "board_i0_c0_310b.txt")
    fake.garbage("info -t usages -i 0", "\x00\x01 binary junk\n")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5, usages=True)

    sample = only(await source.collect())

    assert "aicpu_util_pct" not in sample.fields
    assert sample.fields["power_w"] == 7.6
    assert source.failures == {"output": 1}


async def test_missing_binary_fails_the_poll_and_the_source_recovers(
    fake: FakeNpuSmi, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.answer("info", "info_310b.txt")
    fake.answer("info -t board -i 0 -c 0", "board_i0_c0_310b.txt")
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", path.replace(f"{DATA}{os.pathsep}", ""))
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    with pytest.raises(ToolError, match=r"^npu-smi info: 'npu-smi' not found$") as caught:
        await source.collect()
    assert caught.value.kind == "missing"
    assert source.failures == {"missing": 1}

    monkeypatch.setenv("PATH", path)
    assert only(await source.collect()).fields["temp_c"] == 42.0


async def test_exit_status_with_message_names_command_and_message(fake: FakeNpuSmi) -> None:
    fake.fail("info", "dcmi module initialize failed. ret is -8005\n")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    with pytest.raises(ToolError) as caught:
        await source.collect()

    assert (
        str(caught.value)
        == "npu-smi info: exit status 1: dcmi module initialize failed. ret is -8005"
    )
    assert source.failures == {"exit": 1}


async def test_garbage_summary_is_an_output_error(fake: FakeNpuSmi) -> None:
    fake.garbage("info", "Segmentation fault\n")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5)

    with pytest.raises(ToolError, match=r"^npu-smi info: unparseable output: no '") as caught:
        await source.collect()

    assert caught.value.kind == "output"


async def test_hung_tool_is_killed_after_the_timeout(fake: FakeNpuSmi) -> None:
    fake.hang("info")
    source = NpuSmiSource(HOST_TAGS, timeout_s=0.5)

    with pytest.raises(ToolError, match=r"^npu-smi info: no answer within 0.5 s; killed$"):
        await source.collect()

    pid = int((fake.directory / "hung.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running
    assert source.failures == {"timeout": 1}


# --- HBM ECC and the RoCE network (hccn_tool) --------------------------------------------------

HCCN = Path(__file__).parent / "data" / "hccn_tool"


def test_hbm_ecc_counts_from_the_ecc_detail() -> None:
    # HBM Single Bit Error Count : 0 ... HBM Double Bit Aggregate Total Err Cnt : 0
    found = detail_fields(recording("ecc_i0_910.txt"), chips=[0])[0]
    assert found == {
        "ecc_corrected_total": 0,
        "ecc_uncorrected_total": 0,
        "ecc_corrected_aggregate_total": 0,
        "ecc_uncorrected_aggregate_total": 0,
    }
    assert all(isinstance(value, int) for value in found.values())


def test_hccn_tool_link_counters_and_optical_power() -> None:
    assert parse_link((HCCN / "link_i0.txt").read_text()) == {"roce_link_up": True}
    assert parse_stat((HCCN / "stat_i0.txt").read_text()) == {
        "roce_tx_pfc_packets_total": 0,
        "roce_qp_errors_total": 0,
        "roce_tx_packets_total": 122404,
        "roce_tx_bytes_total": 16921741,
        "roce_rx_packets_total": 6414803,
        "roce_rx_bytes_total": 482237805,
    }
    optical = parse_optical((HCCN / "optical_i0.txt").read_text())
    assert optical == pytest.approx(
        {
            "optical_tx_power_w": 0.0044035,
            "optical_rx_power_w": 0.0010189,
            "optical_rx_power_low_w": 0.0001445,
        }
    )
    # the FaultDiag guide's excerpt elides the temperature line: no field, and no failure


def test_a_four_lane_module_gives_its_temperature_and_its_weakest_lane() -> None:
    # temperature : 47 C; Tx Power0 .. Rx Power3 per lane; RxPower Low Thres : 0.1445 mW
    assert parse_optical((HCCN / "optical_i0_910a.txt").read_text()) == pytest.approx(
        {
            "optical_temp_c": 47.0,
            # lanes 0-3 transmit 4.4035, 1.3968, 1.4140, 1.4988 mW: the weakest
            "optical_tx_power_w": 0.0013968,
            # lane 1 receives 0.0054 mW, far below the module's own 0.1445 mW alarm threshold
            # (the others 1.0189, 0.9907, 1.0213): the weakest lane is what the NOC must see
            "optical_rx_power_w": 0.0000054,
            "optical_rx_power_low_w": 0.0001445,
        }
    )
    no_reading = "optical info:\ntemperature          : NA\nRx Power0            : not supported\n"
    assert parse_optical(no_reading) == {}


@pytest.mark.parametrize(
    ("parse", "text", "problem"),
    [
        (parse_link, "link status: FLAPPING\n", "is not 'link status: UP|DOWN'"),
        (parse_stat, "packet statistics:\nnic_tx_all_pkg_num:12x\n", "line 2: nic_tx_all_pkg_num"),
        (parse_stat, "Usage: hccn_tool -i <id> ...\n", "none of nic_tx_all_pkg_num"),
        (parse_optical, "Tx Power             : -inf dBm\n", "line 1: Tx Power"),
        (parse_optical, "Rx Power2            : nan mW\n", "line 1: Rx Power2 'nan mW' is no mW"),
        (parse_optical, "optical info:\ntemperature          : hot\n", "line 2: temperature 'hot'"),
    ],
)
def test_bad_hccn_tool_output_says_where(
    parse: Callable[[str], object], text: str, problem: str
) -> None:
    with pytest.raises(OutputError, match=re.escape(problem)):
        parse(text)


async def test_ecc_and_network_are_read_on_their_interval_and_failures_cost_only_them(
    fake: FakeNpuSmi,
) -> None:
    fake.answer("info", "info_910b3_x8.txt")
    fake.answer("info -t ecc -i 0", "ecc_i0_910.txt")
    for option in ("link", "stat", "optical"):
        shutil.copy(HCCN / f"{option}_i0.txt", fake.directory / f"-i_0_-{option}_-g.txt")
    # the only real -status output is of device 3 of another host: device 0 answers with it
    shutil.copy(HCCN / "status_i3.txt", fake.directory / "-i_0_-status_-g.txt")
    for npu in range(8):
        fake.fail(f"info -t board -i {npu} -c 0", "Permission denied\n")
    now = [100.0]
    source = NpuSmiSource(
        HOST_TAGS,
        timeout_s=5,
        ecc=True,
        hccn_tool=str(DATA / "npu-smi"),  # the same stand-in, answering hccn_tool's arguments
        details_interval_s=60,
        clock=lambda: now[0],
    )

    samples = await source.collect()

    first = samples[0].fields
    assert first["ecc_uncorrected_total"] == 0
    assert first["roce_link_up"] is True
    assert first["roce_rx_bytes_total"] == 482237805
    assert first["util_pct"] == 27.0  # the summary's fields are all still there
    assert "roce_link_up" not in samples[1].fields  # NPU 1: no recording, no invented value
    assert first["roce_link_speed_gbps"] == 200.0
    # NPUs 1-7: ecc, 4 hccn_tool commands and the board each exit non-zero: counted, logged
    assert source.failures == {"exit": 7 * 6 + 1}
    calls = len(fake.calls())

    now[0] += 30  # within details_interval_s: the summary only
    await source.collect()
    assert fake.calls()[calls:] == ["info"] + [f"info -t board -i {n} -c 0" for n in range(8)]


async def test_optical_temperature_of_one_chip_and_a_bad_one_costs_only_its_command(
    fake: FakeNpuSmi,
) -> None:
    fake.answer("info", "info_910b3_x8.txt")
    # device 0 answers -optical with the 910A capture; device 1 has a module temperature that
    # is no number (made up: the failure under test), and the real -link of the guide
    shutil.copy(HCCN / "optical_i0_910a.txt", fake.directory / "-i_0_-optical_-g.txt")
    shutil.copy(HCCN / "link_i0.txt", fake.directory / "-i_1_-link_-g.txt")
    (fake.directory / "-i_1_-optical_-g.txt").write_text("optical info:\ntemperature : hot\n")
    for npu in range(8):
        fake.fail(f"info -t board -i {npu} -c 0", "Permission denied\n")
    source = NpuSmiSource(HOST_TAGS, timeout_s=5, hccn_tool=str(DATA / "npu-smi"))

    samples = await source.collect()

    assert samples[0].fields["optical_temp_c"] == 47.0
    assert "optical_temp_c" not in samples[1].fields
    assert samples[1].fields["roce_link_up"] is True  # its other commands' fields are kept
    assert samples[1].fields["power_w"] == 122.0  # and the summary's (| 1 910B3 | OK | 122.0 ...)
    assert not any("optical_temp_c" in sample.fields for sample in samples[2:])
    # NPU 0: 3 commands without a recording, NPU 1: 2, NPUs 2-7: 4 each, 8 boards; one output
    assert source.failures == {"exit": 3 + 2 + 6 * 4 + 8, "output": 1}


def test_vector_core_use_and_the_ai_core_clock_of_a_910b1() -> None:
    # Aivector Usage Rate(%) : 0 (usages), Aicore curFreq(MHZ) : 800 of a rated 1800 (common)
    usages = detail_fields(recording("usages_i0_910b1.txt"), chips=[0])[0]
    assert usages["vector_util_pct"] == 0.0
    assert usages["mem_total_bytes"] == 65536 * MIB
    common = detail_fields(recording("common_i1_910b1.txt"), chips=[0])[0]
    assert common["aicore_clock_mhz"] == 800.0
    assert common["temp_c"] == 46.0  # the chip's, not the MCU block's 38


def test_hccn_tool_status_gives_the_port_speed() -> None:
    # Speed: 200000Mb/s   # <-- 200Gbps 网卡
    assert parse_status((HCCN / "status_i3.txt").read_text()) == {"roce_link_speed_gbps": 200.0}
    assert parse_status("Settings for eth3:\n        Speed: Unknown!\n") == {}


# --- memory clock and fault codes --------------------------------------------------------------


def test_memory_detail_gives_the_memory_clock() -> None:
    # Clock Speed(MHz) : 2131 (the 310B's LPDDR); "Total Capacity(MB)" 12288 is not the usable
    found = detail_fields(recording("memory_i0_310b.txt"), chips=[0])[0]
    assert found == {"mem_total_bytes": 10810 * MIB, "mem_clock_mhz": 2131.0}


def test_memory_detail_of_an_hbm_card_gives_its_clock_and_temperature() -> None:
    # HBM Capacity(MB) : 131072, HBM Clock Speed(MHz) : 3200, HBM Temperature(C) : 63
    found = detail_fields(recording("memory_i0_hbm.txt"), chips=[0])[0]
    assert found == {
        "mem_total_bytes": 131072 * MIB,
        "mem_clock_mhz": 3200.0,  # not "DDR Clock Speed(MHz) : 0"
        "mem_temp_c": 63.0,
    }


def test_health_detail_without_fault_codes() -> None:
    # Health Status : OK / Error Code : NA / Error Information : NA
    assert fault_fields(recording("health_i0_c0_310b.txt"), chip=0) == {"health_error_codes": ""}
    with pytest.raises(OutputError, match="prints no 'Error Code'"):
        fault_fields(recording("health_i0_310b.txt"), chip=0)  # the -i form prints none
    with pytest.raises(OutputError, match="'busy' is not an 8-digit hex fault code"):
        fault_fields("Health Status : Warning\nError Code : busy\n", chip=0)


def test_health_detail_with_three_fault_codes_and_their_information_entries() -> None:
    # Health Status : Alarm / Error Code : A4025021 8C03A000 8C084E00 / one "Error Information"
    # entry per code, the second and third on lines with an empty key after a blank line
    text = recording("health_i0_c0_910a_alarm.txt")
    found = fault_fields(text, chip=0)
    assert found["health_error_codes"] == "A4025021,8C03A000,8C084E00"
    # NotHandleFault, RestartNPU, FreeRestartNPU in MindCluster's table: the most severe wins
    assert found["health_fault_handling"] == "RestartNPU"
    assert str(found["health_fault_meaning"]).startswith("A4025021: undocumented; NotHandleFault")
    information = parse_key_values(text).rest["errorinformation"]
    assert information.split("; ") == [
        "ascend_monitor adda heart beat lost error",
        "node type=process-manager, sensor type=General Software,"
        " event state=The process start failed or exit abnormally",
        "node type=adda, sensor type=Heartbeat Sensor, event state=Heartbeat Lost.",
    ]
    # an empty key with nothing before it to continue is still not 'key : value'
    with pytest.raises(OutputError, match="line 1: ': node type=adda' is not 'key : value'"):
        fault_fields("                               : node type=adda\nError Code : NA\n", 0)


def test_fault_codes_take_the_most_severe_level_of_huaweis_table() -> None:
    faults = table()
    # every code of MindCluster's faultCode.json (two listed twice there)
    assert len(faults.level_of) == 350
    assert next(iter(faults.levels)) == "SeparateNPU"
    uce = faults.describe(parse_codes("80E01801"))
    assert (uce.handling, uce.meaning) == (
        "RestartBusiness",
        "80E01801: HBM (on-chip memory) multi-bit ECC error, uncorrectable",
    )
    both = faults.describe(parse_codes("0x80e01801, 80E18402"))
    assert both.codes == ("80E01801", "80E18402")
    assert both.handling == "SeparateNPU"
    assert faults.level_of["A2301001"] == "SeparateNPU"  # also under RestartBusiness there
    quiet = faults.describe(parse_codes("80E21007"))
    assert quiet.handling == "NotHandleFault"
    assert quiet.meaning.startswith("80E21007: undocumented; NotHandleFault")
    assert faults.describe(parse_codes("12345678")).handling == "unknown"
    assert parse_codes("NA") == ()


async def test_a_chip_not_ok_is_asked_for_its_fault_codes_each_poll(fake: FakeNpuSmi) -> None:
    source = a_310b_not_ok(fake, "Warning", "health_i0_c0_310b.txt")

    sample = only(await source.collect())

    assert sample.fields["health"] == "Warning"  # the summary's, not the detail's OK
    assert sample.fields["healthy"] is False
    assert sample.fields["health_error_codes"] == ""
    assert fake.calls() == ["info", "info -t board -i 0 -c 0", "info -t health -i 0 -c 0"]

    fake.garbage("info -t health -i 0 -c 0", "Error Code : busy\n")
    sample = only(await source.collect())
    assert "health_error_codes" not in sample.fields
    assert sample.fields["power_w"] == 7.6  # the rest of the chip is kept
    assert source.failures == {"output": 1}
