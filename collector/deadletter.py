"""Lines that can never be written go here, one JSON object a line, with the reason."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._warned_write_failure = False

    def add(self, lines: list[bytes], reason: str, origin: str) -> None:
        """Record rejected lines; a failure to write the file is logged, never raised."""
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
        try:
            with self.path.open("a", encoding="utf-8") as out:
                for line in lines:
                    out.write(
                        json.dumps(
                            {
                                "time": now,
                                "origin": origin,
                                "reason": reason,
                                "line": line.decode("utf-8", "replace"),
                            }
                        )
                        + "\n"
                    )
        except OSError as exc:
            if not self._warned_write_failure:
                log.error("cannot write dead-letter file %s: %s", self.path, exc)
                self._warned_write_failure = True
