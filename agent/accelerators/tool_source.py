"""Accelerator sources built on a vendor's command-line tool (npu-smi, hy-smi, cnmon, amd-smi).

The tool runs without a shell, one command at a time, each under its own timeout; a command
that does not answer in time is killed and reaped. Every way a run can fail (tool missing, non-zero
exit, timeout, output the parser does not understand) becomes a `ToolError` that names the command
line and the problem, and is counted by kind in `failures`. A vendor adds a parser and a `read()`
that chooses which commands to run; turning its readings into `accelerator` samples (one schema
for every vendor, docs/schema.md) happens here.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from agent.accelerators.jobs import JobFinder
from agent.accelerators.repeated_warnings import RepeatedWarnings
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

MEASUREMENT = "accelerator"
MESSAGE_CHARS = 200  # of the tool's own error message, quoted in ours
T = TypeVar("T")


class OutputError(ValueError):
    """Raised by a parser: the text is not what the tool prints; the message says where."""


class ToolError(Exception):
    """One run of the tool failed. `kind` is "missing", "exit", "timeout" or "output"."""

    def __init__(self, command: str, kind: str, problem: str) -> None:
        super().__init__(f"{command}: {problem}")
        self.command = command
        self.kind = kind
        self.problem = problem


class ToolRunner:
    """Runs one program with arguments and returns what it printed on stdout."""

    def __init__(self, program: str, timeout_s: float) -> None:
        self.program = program
        self.timeout_s = timeout_s
        self.runs = 0
        self.failures: Counter[str] = Counter()  # by ToolError.kind
        # Vendor tools are not made for concurrent calls (npu-smi says so): one at a time.
        self._one_at_a_time = asyncio.Lock()

    def command(self, args: tuple[str, ...]) -> str:
        return shlex.join((self.program, *args))

    async def run(self, *args: str) -> str:
        async with self._one_at_a_time:
            return await self._run(args)

    async def _run(self, args: tuple[str, ...]) -> str:
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                self.program,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise self._failed(args, "missing", f"{self.program!r} not found") from None
        except PermissionError:
            raise self._failed(args, "missing", f"{self.program!r} is not executable") from None
        except OSError as exc:
            raise self._failed(args, "missing", f"cannot start {self.program!r}: {exc}") from None
        try:
            async with asyncio.timeout(self.timeout_s):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            raise self._failed(
                args, "timeout", f"no answer within {self.timeout_s:g} s; killed"
            ) from None
        finally:
            if process.returncode is None:  # timed out or cancelled: never leave it running
                process.kill()
                await process.wait()
        out = stdout.decode("utf-8", errors="replace")
        returncode = process.returncode
        if returncode:
            message = _first_line(stderr.decode("utf-8", errors="replace")) or _first_line(out)
            status = (
                f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
            )
            raise self._failed(args, "exit", f"{status}: {message or '(no message)'}")
        return out

    async def read(self, parse: Callable[[str], T], *args: str) -> T:
        """Run the command and parse what it printed; a parser's OutputError becomes a
        ToolError of kind "output" that quotes the command line."""
        text = await self.run(*args)
        try:
            return parse(text)
        except OutputError as exc:
            raise self._failed(args, "output", f"unparseable output: {exc}") from None

    def _failed(self, args: tuple[str, ...], kind: str, problem: str) -> ToolError:
        self.failures[kind] += 1
        return ToolError(self.command(args), kind, problem)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:MESSAGE_CHARS]
    return ""


@dataclass(frozen=True, slots=True)
class Reading:
    """One accelerator, or one chip of a card that holds several, as its tool reported it."""

    index: str
    model: str
    fields: Mapping[str, FieldValue]
    chip: str | None = None  # only where one card holds several chips
    uuid: str | None = None  # None until the tool has told us a stable identity
    # For job attribution only (not tags): the keys the kubelet names this card by
    # (agent/accelerators/kubelet.py) and the processes the tool says run on it.
    device_ids: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()


class ToolSource(ABC):
    """Polls one host's accelerators through a vendor tool. `collect()` is the whole poll.

    A failure of the main command fails the poll (the PeriodicPoller logs and counts it, and
    polls again next tick); subclasses report failures of secondary commands with `warn`, keep
    what they have, and carry on.
    """

    vendor: str  # the `vendor` tag

    def __init__(
        self,
        tags: Mapping[str, str],
        command: str,
        timeout_s: float,
        jobs: JobFinder | None = None,
    ) -> None:
        self._tags = {key: value for key, value in tags.items() if value}
        self.jobs = jobs
        self.tool = ToolRunner(command, timeout_s)
        self._warnings = RepeatedWarnings()

    @property
    def failures(self) -> Counter[str]:
        """Failed runs of the tool by kind: missing, exit, timeout, output."""
        return self.tool.failures

    async def collect(self) -> list[Sample]:
        started_ns = time.time_ns()  # one timestamp for the whole poll, as for every device
        readings = await self.read()
        if self.jobs is not None:
            lookup = await self.jobs.lookup()
            readings = [
                replace(r, fields={**r.fields, **lookup.fields(r.device_ids, r.pids)})
                for r in readings
            ]
        return [self._sample(reading, started_ns) for reading in readings]

    @abstractmethod
    async def read(self) -> list[Reading]:
        """Run the tool and return what it reported; raise ToolError if nothing can be read."""

    def warn(self, key: str, message: str) -> None:
        self._warnings.note(key, message)

    def recovered(self, key: str) -> None:
        self._warnings.clear(key)

    def _sample(self, reading: Reading, time_ns: int) -> Sample:
        tags = {**self._tags, "vendor": self.vendor, "model": reading.model}
        tags["index"] = reading.index
        if reading.chip is not None:
            tags["chip"] = reading.chip
        if reading.uuid:
            tags["uuid"] = reading.uuid
        return Sample(MEASUREMENT, tags, reading.fields, time_ns)
