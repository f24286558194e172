"""Warnings about failures that do not fail a poll: logged once, and again when they change."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class RepeatedWarnings:
    """Logs a failure that does not fail the poll once, and again only when its text changes."""

    last: dict[str, str] = field(default_factory=dict)

    def note(self, key: str, message: str) -> None:
        if self.last.get(key) != message:
            self.last[key] = message
            log.warning("%s", message)

    def clear(self, key: str) -> None:
        if self.last.pop(key, None) is not None:
            log.info("%s: answering again", key)
