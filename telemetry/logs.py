"""Log output: plain text for a terminal, or one JSON object per line for log shippers.

Under systemd, stderr goes to journald (`$JOURNAL_STREAM` names it). There each line starts
with a `<N>` syslog priority, which journald strips and stores as PRIORITY, so
`journalctl -p warning` works; and the time is left out, as the journal stamps every line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["plain", "json"]
FORMATS: tuple[LogFormat, ...] = ("plain", "json")
FORMAT_ENV = "RACKWATCH_LOG_FORMAT"

# logging levels -> syslog priorities (sd-daemon(3) prefixes)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def priority(level: int) -> int:
    if level >= logging.CRITICAL:
        return 2
    return next((p for lvl, p in sorted(_PRIORITY.items(), reverse=True) if level >= lvl), 7)


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message"}`, plus `exception` and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _RECORD_KEYS and key not in entry:
                entry[key] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


class JournalPrefix(logging.Formatter):
    """Puts `<priority>` before another formatter's lines."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


def _iso_time(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def to_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journald stream systemd connected (`$JOURNAL_STREAM`)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return f"{info.st_dev}:{info.st_ino}" == f"{device}:{inode}"


def formatter(fmt: LogFormat, journal: bool) -> logging.Formatter:
    if fmt == "json":
        inner: logging.Formatter = JsonFormatter()
    elif journal:
        inner = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JournalPrefix(inner) if journal else inner


def default_format() -> LogFormat:
    """`$RACKWATCH_LOG_FORMAT`, else plain; ValueError naming the variable if it is neither."""
    value = os.environ.get(FORMAT_ENV, "plain")
    if value == "json":
        return "json"
    if value != "plain":
        raise ValueError(f"{FORMAT_ENV}={value!r}: use plain or json")
    return "plain"


def configure(level: str, fmt: LogFormat, stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, to_journal(stream)))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every request at INFO, with the URL, which holds InfluxDB v1 credentials.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
