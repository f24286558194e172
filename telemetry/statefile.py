"""State a service keeps across restarts in one JSON file: alert state (so a collector restart
neither pages again nor forgets a firing alert), roll-up peaks.

The file is replaced atomically (write a temporary file, fsync, rename, fsync the directory):
after a crash it is the old one or the new one, never a mix. A file that cannot be read is
moved aside (`.corrupt-<time>`) and the service starts empty rather than not at all.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class StateFile:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # for messages: "alert state", "roll-up peaks"
        self.saves = 0
        self.errors = 0

    def load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("%s %s: cannot read: %s; starting empty", self.what, self.path, exc.strerror)
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"not a version {VERSION} {self.what}")
        except ValueError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("%s %s: %s; moved to %s, starting empty", self.what, self.path, exc, aside)
            return {}
        return data

    def save(self, data: dict[str, Any]) -> bool:
        """Write the state; False (logged, counted) if the disk refused."""
        body = json.dumps({"version": VERSION, **data}, ensure_ascii=False, separators=(",", ":"))
        try:
            write_atomically(self.path, body.encode())
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error(
                    "%s %s: cannot write: %s (%d so far)", self.what, self.path, exc, self.errors
                )
            return False
        self.saves += 1
        return True
