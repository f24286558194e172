"""Log output: JSON lines, and syslog priority prefixes when stderr is systemd's journal."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.NOTSET)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_level_logger_extras_and_exception() -> None:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    log = logging.getLogger("rackwatch.test")
    log.warning("device %s: poll failed", "pdu-1", extra={"device": "pdu-1"})
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("it broke")
    log.debug("not shown at INFO")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "device pdu-1: poll failed"
    assert first["level"] == "warning"
    assert first["logger"] == "rackwatch.test"
    assert first["device"] == "pdu-1"
    assert first["time"].endswith("Z")
    assert second["level"] == "error"
    assert "ValueError: bad value" in second["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_journal_stream_gets_priorities_and_no_timestamps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal"
    with path.open("w+", encoding="utf-8") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        logs.configure("INFO", "plain", stream)
        log = logging.getLogger("rackwatch.test")
        log.info("started")
        log.warning("two\nlines")
        log.error("failed")
    assert path.read_text(encoding="utf-8").splitlines() == [
        "<6>INFO rackwatch.test: started",
        "<4>WARNING rackwatch.test: two",
        "<4>lines",
        "<3>ERROR rackwatch.test: failed",
    ]


@pytest.mark.usefixtures("restore_logging")
def test_another_stream_is_not_taken_for_the_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    stream = io.StringIO()
    logs.configure("INFO", "plain", stream)
    logging.getLogger("rackwatch.test").info("hello")
    assert not stream.getvalue().startswith("<")
    assert stream.getvalue().rstrip().endswith("INFO rackwatch.test: hello")


def test_unknown_log_format_in_the_environment_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "-c", "/dev/null"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RACKWATCH_LOG_FORMAT": "xml"},
    )
    assert result.returncode == 2
    assert "RACKWATCH_LOG_FORMAT='xml': use plain or json" in result.stderr
