"""What the alert evaluator's per-series state costs at hall scale: memory and CPU per sample.

    .venv/bin/python bench/bench_alerting_memory.py [--pdus 40000] [--cards 70000] [--runs 3]
        [--compare-ref REF]

Real samples first: three PDU recordings (apc_ap8959eu3: APC rPDU2, one phase and 24 outlets;
sentry4: ServerTech PRO2, two cords of three phases and banks; raritan-pdu_px2: inlet and
outlets) are polled once through snmpsim by the agent's own SnmpDevice, with the tags the agent
puts on every device sample (site, room, row, rack, device), plus each device's
`rackwatch_agent` health sample as the agent writes it. Accelerators: the line that
`rackwatch probe --nvml` wrote on a real H100 (tests/data/nvml/h100-single-probe.lp). Each is
then replicated with distinct tags: --pdus PDUs (the three recordings in turn, 20 per rack) and
--cards cards (8 per host, 32 per rack), each with its own device/host, uuid, serial and bus id.

Each measurement runs in a fresh process (`--child`) that generates the hall's lines round by
round (one round = one poll of every device, 30 s apart) and never keeps them:

- `none`: the lines are generated and validated (check_lines) but no evaluator sees them: the
  baseline RSS of the same process;
- `current` (this tree's evaluator) and, with --compare-ref, `REF` (collector/alerting/
  evaluator.py and points.py as committed at REF, loaded from git, with this tree's other
  modules): an
  Evaluator with the default rules (configs/alert-rules.yaml) sees two rounds; its growth is
  read as RSS over the baseline process's, and as tracemalloc's bytes still allocated (a second
  child, since tracing slows everything); per series = that over the series the evaluator holds.
  The ref's evaluator is traced only with --trace-ref (slow at its size).
  Then a third round is timed: evaluator CPU per line offered over check_lines' CPU per line on
  the same lines (the collector runs both on every line), best of that child's 3 passes.

Min/median/max over --runs runs of each child (several engineers share this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
from agent.scheduler import OK, PollStats  # noqa: E402
from agent.service import _poll_fields  # noqa: E402
from collector.alerting.rules import RuleFile  # noqa: E402
from rackwatch.demo import find_shared  # noqa: E402
from telemetry import config  # noqa: E402
from telemetry.lineproto import check_lines, encode  # noqa: E402
from telemetry.sample import Sample  # noqa: E402

RULES = ROOT / "configs" / "alert-rules.yaml"
RECORDINGS = find_shared(None) / "devices" / "snmprec"  # RACKWATCH_SHARED or ../shared
PDU_RECORDINGS = ("apc_ap8959eu3", "sentry4", "raritan-pdu_px2")
REF_MODULES = ("collector.alerting.points", "collector.alerting.evaluator")
GPU_PROBE = ROOT / "tests" / "data" / "nvml" / "h100-single-probe.lp"
T0_NS = 1_796_000_000_000_000_000
ROUND_S = 30
PDUS_PER_RACK, CARDS_PER_HOST, HOSTS_PER_RACK = 20, 8, 4
# Placeholders replaced per device; the capture is made with them as tag values.
DEV, RACK, ROW, STAMP = "DEVx", "RACKx", "ROWx", "1111111111111111111"
GPU_IDENTITY = {  # the probe's identity tags -> a per-card placeholder
    "host=vm": "host=HOSTx",
    "index=0": "index=IDXx",
    "uuid=GPU-5a9d83e6-84e6-871d-42cd-5b4a9b36db4b": "uuid=GPU-UUIDx",
    "serial=1653024107678": "serial=SERIALx",
    "pci_bus_id=00000000:00:06.0": "pci_bus_id=BUSx",
}


# --- the capture (once, in the parent) -----------------------------------------------------


async def _poll_recordings(workdir: Path) -> dict[str, list[str]]:
    from agent.snmp import SnmpDevice, SnmpTarget
    from rackwatch import localservices

    data = workdir / "data"
    data.mkdir()
    for name in PDU_RECORDINGS:
        (data / f"{name}.snmprec").write_bytes((RECORDINGS / f"{name}.snmprec").read_bytes())
    snmpsim = localservices.start_snmpsim(data, workdir / "snmpsim")
    try:
        where = {"site": "qiyang-a1", "room": "hall-1", "row": ROW, "rack": RACK, "device": DEV}
        health = Sample(
            "rackwatch_agent",
            {**where, "agent": "agent-ROWx", "kind": "pdu"},
            _poll_fields(PollStats(polls_ok=2880, samples_emitted=74880, state=OK)),
            int(STAMP),
        )
        templates = {}
        for name in PDU_RECORDINGS:
            device = SnmpDevice(DEV, SnmpTarget(snmpsim.host, snmpsim.port, name), where)
            samples = await device.collect()
            if not samples:
                raise SystemExit(f"{name}: the poll returned nothing")
            lines = [
                encode(Sample(s.measurement, {**where, **s.tags}, s.fields, int(STAMP)))
                for s in samples
            ]
            templates[name] = [*lines, encode(health)]
        return templates
    finally:
        localservices.stop(snmpsim)


def capture(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        templates = asyncio.run(_poll_recordings(Path(tmp)))
    probe = next(
        line for line in GPU_PROBE.read_text().splitlines() if line.startswith("accelerator,")
    )
    head, fields, _ = probe.rsplit(" ", 2)
    for old, new in GPU_IDENTITY.items():
        if old not in head:
            raise SystemExit(f"{GPU_PROBE}: no {old} in the probe's accelerator line")
        head = head.replace(old, new)
    head += f",rack={RACK},room=hall-1,row={ROW},site=qiyang-a1"
    templates["accelerator"] = [f"{head} {fields} {STAMP}"]
    path.write_text(json.dumps(templates))


# --- the hall (in each child) --------------------------------------------------------------


def hall(templates: dict[str, list[str]], pdus: int, cards: int, rnd: int) -> Iterator[list[bytes]]:
    """One round of every device's lines, a device (or a host's cards) at a time."""
    stamp = str(T0_NS + rnd * ROUND_S * 10**9).encode()
    pdu_blobs = [
        "\n".join(templates[name]).encode().replace(STAMP.encode(), stamp)
        for name in PDU_RECORDINGS
    ]
    for i in range(pdus):
        rack = i // PDUS_PER_RACK
        row = b"R%02d" % (rack // 40)
        blob = pdu_blobs[i % len(pdu_blobs)]
        blob = blob.replace(b"DEVx", b"pdu-%06d" % i).replace(b"RACKx", b"K%05d" % rack)
        yield blob.replace(b"ROWx", row).split(b"\n")
    card = templates["accelerator"][0].encode().replace(STAMP.encode(), stamp)
    for host in range(cards // CARDS_PER_HOST):
        rack = host // HOSTS_PER_RACK
        base = (
            card.replace(b"HOSTx", b"gpu-%06d" % host)
            .replace(b"RACKx", b"G%05d" % rack)
            .replace(b"ROWx", b"G%02d" % (rack // 40))
        )
        yield [
            base.replace(b"IDXx", b"%d" % i)
            .replace(b"UUIDx", b"%08x-0000-4000-8000-%012x" % (host, i))
            .replace(b"SERIALx", b"1653%09d" % (host * 8 + i))
            .replace(b"BUSx", b"00000000:%02X:00.0" % (0x18 + i * 0x10))
            for i in range(CARDS_PER_HOST)
        ]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def evaluator_module(ref: str) -> ModuleType:
    """This tree's evaluator, or the one committed at `ref` with the line reader it had."""
    if ref != "current":
        for name in REF_MODULES:  # in place of this tree's, for this process only
            path = name.replace(".", "/") + ".py"
            source = subprocess.run(
                ["git", "show", f"{ref}:{path}"], cwd=ROOT, check=True, capture_output=True
            ).stdout
            spec = importlib.util.spec_from_loader(name, loader=None)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up
            exec(compile(source, f"{ref}:{path}", "exec"), module.__dict__)
    return importlib.import_module("collector.alerting.evaluator")


def child(args: argparse.Namespace) -> dict[str, Any]:
    templates = json.loads(Path(args.templates).read_text())
    rules = config.load(RULES, RuleFile)
    now = [T0_NS / 1e9]
    evaluator: Any = None
    if args.child != "none":
        module = evaluator_module(args.child)
    lines_per_round = 0
    gc.collect()
    if args.trace:
        tracemalloc.start()
    before = rss_bytes()
    if args.child != "none":
        evaluator = module.Evaluator(rules, lambda t: None, clock=lambda: now[0])
    for rnd in range(2):
        now[0] = T0_NS / 1e9 + rnd * ROUND_S + 1
        lines_per_round = 0
        for lines in hall(templates, args.pdus, args.cards, rnd):
            good, bad = check_lines(b"\n".join(lines))
            if bad:
                raise SystemExit(f"invalid lines in the hall: {bad[:1]}")
            lines_per_round += len(good)
            if evaluator is not None:
                evaluator.observe(good)
    gc.collect()
    result: dict[str, Any] = {"lines_per_round": lines_per_round, "rss_before": before}
    result["rss"] = rss_bytes()
    if args.trace:
        result["traced"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    if evaluator is not None:
        result["series"] = len(evaluator._series)
        result["alerts"] = len(evaluator.alerts)
        result["parsed"] = evaluator.stats.lines_parsed
    if evaluator is not None and not args.trace:
        # The third round, timed: the same batches through check_lines and the evaluator.
        now[0] = T0_NS / 1e9 + 2 * ROUND_S + 1
        batches = [b"\n".join(lines) for lines in hall(templates, args.pdus, args.cards, 2)]
        checked = [check_lines(batch)[0] for batch in batches]
        check_s, observe_s = [], []
        for _ in range(3):
            started = time.process_time()
            for batch in batches:
                check_lines(batch)
            check_s.append(time.process_time() - started)
            # Each pass re-sees the same samples: repeated timestamps, as a replay would be;
            # every line is still read and judged up to the timestamp check.
            started = time.process_time()
            for good in checked:
                evaluator.observe(good)
            observe_s.append(time.process_time() - started)
        result["check_us"] = min(check_s) / lines_per_round * 1e6
        result["observe_us"] = min(observe_s) / lines_per_round * 1e6
    return result


# --- the parent ----------------------------------------------------------------------------


def run_child(args: argparse.Namespace, variant: str, trace: bool, templates: Path) -> Any:
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--templates",
        str(templates),
        "--pdus",
        str(args.pdus),
        "--cards",
        str(args.cards),
    ]
    if trace:
        command.append("--trace")
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {variant}{' traced' if trace else ''}: {json.dumps(result)}", flush=True)
    return result


def spread(values: list[float], fmt: str) -> str:
    return "/".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Alert evaluator memory and CPU at scale.")
    parser.add_argument("--pdus", type=int, default=40_000)
    parser.add_argument("--cards", type=int, default=70_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compare-ref", default="", help="a git ref whose evaluator to compare")
    parser.add_argument(
        "--trace-ref", action="store_true", help="tracemalloc the ref's evaluator too (slow)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--templates", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        templates = Path(tmp) / "templates.json"
        capture(templates)
        counts = {k: len(v) for k, v in json.loads(templates.read_text()).items()}
        print(f"lines per device and round (with its health sample): {counts}", flush=True)
        variants = ["current", *([args.compare_ref] if args.compare_ref else [])]
        results: dict[str, list[Any]] = {v: [] for v in ["none", *variants]}
        traced_variants = ["none", *(variants if args.trace_ref else variants[:1])]
        traced: dict[str, list[Any]] = {v: [] for v in traced_variants}
        for _ in range(args.runs):
            for variant in results:
                results[variant].append(run_child(args, variant, False, templates))
            for variant in traced:
                traced[variant].append(run_child(args, variant, True, templates))
    mib = 1 << 20
    base = results["none"]
    print(
        f"{args.pdus:,} PDUs + {args.cards:,} cards: {base[0]['lines_per_round']:,} lines a round;"
        f" baseline RSS (no evaluator) {spread([r['rss'] / mib for r in base], '.0f')} MiB"
        " (min/median/max)"
    )
    for variant in variants:
        runs = results[variant]
        series = runs[0]["series"]
        grown = [r["rss"] - b["rss"] for r, b in zip(runs, base, strict=True)]
        ratio = [r["observe_us"] / r["check_us"] for r in runs]
        held = [
            t["traced"] - b["traced"]
            for t, b in zip(traced.get(variant, []), traced["none"], strict=False)
        ]
        traced_text = (
            f"tracemalloc {spread([h / mib for h in held], '.0f')} MiB,"
            f" {spread([h / series for h in held], '.0f')} B/series"
            if held
            else "not traced (--trace-ref)"
        )
        print(
            f"{variant:>12}: {series:,} series, {runs[0]['alerts']} alerts;"
            f" RSS over baseline {spread([g / mib for g in grown], '.0f')} MiB"
            f" (x{spread([r['rss'] / b['rss'] for r, b in zip(runs, base, strict=True)], '.2f')}"
            f" of the baseline's RSS); {traced_text};"
            f" evaluator/check_lines CPU per line {spread(ratio, '.3f')}"
            f" ({spread([r['observe_us'] for r in runs], '.2f')} µs vs"
            f" {spread([r['check_us'] for r in runs], '.2f')} µs)"
        )


if __name__ == "__main__":
    main()
