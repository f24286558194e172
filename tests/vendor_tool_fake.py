"""The stand-in for a vendor's tool that the vendor-tool tests share (a test module takes the
fixture as `tool = vendor_tool_fake.tool`).

tests/data/vendor_tools/fake-tool is a real executable that prints $FAKE_TOOL_DIR/output.txt, so
the agent runs it through a real subprocess; what it prints is a verbatim capture of the real
tool (sources in SOURCES.md there), or a capture cut or edited the way a test names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.accelerators.jobs import JobFinder
from agent.accelerators.tool_source import ToolError
from agent.accelerators.vendor_tools import VendorToolSource, find_definition, load_definition
from telemetry.sample import Sample

DATA = Path(__file__).parent / "data" / "vendor_tools"
FAKE = str(DATA / "fake-tool")
MIB = 1024**2


class FakeTool:
    """What the stand-in program prints at its next run."""

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


def by_index(samples: list[Sample]) -> dict[str, Sample]:
    """The `accelerator` samples of one poll by their card index."""
    return {s.tags["index"]: s for s in samples if s.measurement == "accelerator"}


def builtin(name: str, tags: Mapping[str, str], jobs: JobFinder | None = None) -> VendorToolSource:
    """A built-in definition reading the stand-in."""
    definition = load_definition(find_definition(name))
    return VendorToolSource(tags, definition, FAKE, timeout_s=5, jobs=jobs)


async def assert_refused(vendor: VendorToolSource, reason: str) -> None:
    """The poll fails as a whole with `reason`, counted once as unreadable output."""
    with pytest.raises(ToolError, match=f"fake-tool: unparseable output: {re.escape(reason)}"):
        await vendor.collect()
    assert vendor.failures == {"output": 1}
