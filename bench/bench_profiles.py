"""CPU time to read the built-in profile registry, as agent start-up and `rackwatch probe` do.

    .venv/bin/python bench/bench_profiles.py [--repeat 5]

Compares the registry read now (one libyaml parse per file, giving data and line numbers) with
how it was read before 2026-12-06 (PyYAML's pure-Python parser, run twice per file: once for
line numbers, once for the data), both followed by the same pydantic validation, in the same
process. Each figure is the best of --repeat runs of process CPU time.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.profile import Fragment, Profile
from agent.registry import BUILTIN_DIR
from telemetry import config
from telemetry.config import KeyPath


def parse_before(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """The parse as it was: pure-Python compose for the line numbers, then safe_load."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    lines: dict[KeyPath, int] = {}
    if node is not None:
        config._index_lines(node, (), lines, source)
    return data, lines


def read_all(
    texts: list[tuple[str, str]], parse: Callable[[str, str], tuple[Any, dict[KeyPath, int]]]
) -> None:
    for source, text in texts:
        data, lines = parse(text, source)
        config.validate(data, Profile if "detect" in data else Fragment, source, lines)


def best_cpu_s(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    paths = sorted(BUILTIN_DIR.glob("*.yaml")) + sorted(BUILTIN_DIR.glob("fragments/*.yaml"))
    texts = [(str(path), Path(path).read_text(encoding="utf-8")) for path in paths]
    size_kib = sum(len(text) for _, text in texts) / 1024
    before = best_cpu_s(lambda: read_all(texts, parse_before), args.repeat)
    now = best_cpu_s(lambda: read_all(texts, config.parse_yaml), args.repeat)
    print(f"{len(texts)} profile files, {size_kib:.0f} KiB, libyaml: {yaml.__with_libyaml__}")
    print(f"before: {before * 1000:.0f} ms CPU ({before / len(texts) * 1000:.2f} ms a file)")
    print(f"now:    {now * 1000:.0f} ms CPU ({now / len(texts) * 1000:.2f} ms a file)")
    print(f"before/now: {before / now:.1f}x")


if __name__ == "__main__":
    main()
