"""Lines that can never be written go here, one JSON object a line, with the reason.

The file is capped: once it would pass `max_bytes` it is rotated (`path` -> `path.1` -> ...,
`keep` old files, the oldest deleted), so a flood of bad input cannot fill the disk. Lines
that cannot be recorded (the disk refuses) are counted in `dropped`, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024, keep: int = 4) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.count = 0  # lines set aside
        self.dropped = 0  # of those, lines the file could not take
        self.rotations = 0
        self._failing = False

    def add(self, lines: list[bytes], reason: str, origin: str) -> None:
        """Record rejected lines; a failure to write the file is counted and logged."""
        self.count += len(lines)
        if self.count == len(lines) or self.count % 1000 < len(lines):
            log.warning(
                "%d line(s) from %s set aside in %s: %s (%d in all)",
                len(lines),
                origin,
                self.path,
                reason,
                self.count,
            )
        now = time.time()
        records = [
            (
                json.dumps(
                    {
                        "time": now,
                        "origin": origin,
                        "reason": reason,
                        "line": line.decode("utf-8", "replace"),
                    }
                )
                + "\n"
            ).encode()
            for line in lines
        ]
        written = 0
        try:
            written = self._append(records)
        except OSError as exc:
            self.dropped += len(records) - written
            if not self._failing:
                log.error("cannot write dead-letter file %s: %s", self.path, exc)
                self._failing = True
        else:
            if self._failing:
                log.info("dead-letter file %s: writing again", self.path)
                self._failing = False

    def _append(self, records: list[bytes]) -> int:
        """Append records, rotating whenever the next would take the file past max_bytes
        (a file holds at least one record). Returns how many were written."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        written = 0
        while written < len(records):
            chunk: list[bytes] = []
            for record in records[written:]:
                if size + len(record) > self.max_bytes and (size or chunk):
                    break
                chunk.append(record)
                size += len(record)
            if chunk:
                with self.path.open("ab") as out:
                    out.write(b"".join(chunk))
                written += len(chunk)
            if written < len(records):
                self._rotate()
                size = 0
        return written

    def _rotate(self) -> None:
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path.with_name(f"{self.path.name}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                os.replace(newer, older)
        self.path.unlink(missing_ok=True)  # keep == 0: no old files at all
        self.rotations += 1
