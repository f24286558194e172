"""Silences (maintenance windows): alerts matching every matcher of an active silence are not
notified. They come from the collector config (`alerting.silences`) and from a silences file
that `rackwatch silence add|list|expire` manages and the collector re-reads when it changes.

The file is JSON, replaced atomically under an exclusive lock, so two operators adding
silences at once both land and the collector never reads half a file.

The command refuses what would silently miss or over-reach: a file in a folder that does not
exist (a mistyped path; `-c collector.yaml` names the collector's own file), a duration
without a unit, matchers that every alert passes, and silences over MAX_DURATION_S, the last
two unless `--force`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.alerting.durations import format_duration, parse_duration
from collector.alerting.matchers import Matcher, matches_all
from collector.alerting.settings import SilenceSettings
from telemetry.statefile import write_atomically

log = logging.getLogger(__name__)

KEEP_EXPIRED_S = 7 * 86400.0  # expired silences stay listed (`list --all`) this long
MAX_DURATION_S = 30 * 86400.0  # longer ones need --force: they would hide real faults


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str], now: float) -> bool:
        return self.active(now) and matches_all(self.matchers, labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(m) for m in self.matchers],
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "created_by": self.created_by,
            "comment": self.comment,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(data["id"]),
            matchers=tuple(Matcher.parse(m) for m in data["matchers"]),
            starts_at=datetime.fromisoformat(data["starts_at"]).timestamp(),
            ends_at=datetime.fromisoformat(data["ends_at"]).timestamp(),
            created_by=str(data.get("created_by", "")),
            comment=str(data.get("comment", "")),
        )

    @classmethod
    def from_settings(cls, index: int, settings: SilenceSettings) -> Silence:
        return cls(
            id=f"config-{index}",
            matchers=tuple(settings.matchers),
            starts_at=settings.starts_at.timestamp(),
            ends_at=settings.ends_at.timestamp(),
            created_by=settings.created_by,
            comment=settings.comment,
        )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class SilenceFile:
    """The silences file, read and changed under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Silence]:
        """Every silence in the file; a missing file holds none. Raises ValueError naming the
        file when it cannot be understood."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:  # a folder, no permission
            raise ValueError(f"{self.path}: cannot read: {exc.strerror}") from None
        try:
            data = json.loads(text)
            return [Silence.from_json(item) for item in data.get("silences", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path}: not a silences file: {exc}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # No mkdir: a folder that is not there means a path the collector does not read.
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, silences: Iterable[Silence], now: float) -> None:
        kept = [s for s in silences if now - s.ends_at < KEEP_EXPIRED_S]
        body = json.dumps({"silences": [s.to_json() for s in kept]}, indent=1, ensure_ascii=False)
        write_atomically(self.path, body.encode() + b"\n")

    def add(self, silence: Silence) -> None:
        with self._locked():
            self._write([*self.read(), silence], time.time())

    def expire(self, ids: Iterable[str], now: float) -> list[str]:
        """End the silences with these ids (or a unique prefix) now; returns the ids ended."""
        wanted = list(ids)
        with self._locked():
            silences = self.read()
            ended = []
            for prefix in wanted:
                found = [s for s in silences if s.id.startswith(prefix)]
                if len(found) != 1:
                    raise ValueError(
                        f"{prefix!r} names {len(found)} silences in {self.path}; "
                        "give more of the id"
                    )
                ended.append(found[0].id)
            silences = [
                replace(s, ends_at=min(s.ends_at, now)) if s.id in ended else s for s in silences
            ]
            self._write(silences, now)
        return ended


class Silences:
    """The silences the collector applies: from its config, and from the file as it changes."""

    def __init__(self, configured: list[SilenceSettings], path: Path | None) -> None:
        self.configured = [Silence.from_settings(i, s) for i, s in enumerate(configured)]
        self.file = SilenceFile(path) if path else None
        self._from_file: list[Silence] = []
        self._stamp: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed; a bad file keeps the silences last read."""
        if self.file is None:
            return
        try:
            stat = self.file.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._from_file = self.file.read()
        except ValueError as exc:
            log.error("%s; keeping the %d silences read before", exc, len(self._from_file))

    def muting(self, labels: Mapping[str, str], now: float) -> Silence | None:
        for silence in (*self.configured, *self._from_file):
            if silence.mutes(labels, now):
                return silence
        return None

    def all(self) -> list[Silence]:
        return [*self.configured, *self._from_file]


# --- `rackwatch silence ...` ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "-c",
        "--config",
        type=Path,
        help="the collector config: use the file its alerting.silences_file names",
    )
    where.add_argument(
        "-f",
        "--file",
        type=Path,
        help="the silences file (alerting.silences_file); its folder must exist",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="silence alerts matching every matcher for a while")
    add.add_argument("matchers", nargs="+", help='e.g. rack="A01" alertname=~"Pdu.*"')
    add.add_argument(
        "--duration", default="2h", help="how long, with a unit (30m, 2h, 1d); default 2h"
    )
    add.add_argument("--start", help="when it begins (ISO 8601; default now; local time if naive)")
    add.add_argument("--end", help="when it ends (ISO 8601), instead of --duration")
    add.add_argument("--comment", required=True, help="why: the ticket or the planned work")
    add.add_argument("--author", default=None, help="who (default: the login name)")
    add.add_argument(
        "--force",
        action="store_true",
        help="allow matchers that every alert passes and silences over "
        f"{format_duration(MAX_DURATION_S)}",
    )
    listing = actions.add_parser("list", help="show silences")
    listing.add_argument("--all", action="store_true", help="include expired ones")
    expire = actions.add_parser("expire", help="end silences now")
    expire.add_argument("ids", nargs="+", help="silence ids (a unique prefix will do)")


def command(args: argparse.Namespace, now: float | None = None) -> int:
    now = time.time() if now is None else now
    try:
        file = SilenceFile(_silences_path(args))
        if args.action == "add":
            silence = _new_silence(args, now)
            file.add(silence)
            print(silence.id)
        elif args.action == "list":
            if not file.path.exists():
                print(f"{file.path}: no silences file yet (none added)", file=sys.stderr)
            _print_table(
                [s for s in file.read() if args.all or s.ends_at > now], now, sys.stdout.write
            )
        else:
            for ended in file.expire(args.ids, now):
                print(f"expired {ended}")
    except ValueError as exc:
        print(f"rackwatch silence: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rackwatch silence: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def _silences_path(args: argparse.Namespace) -> Path:
    """The silences file: the one the collector config names, or `-f`, checked to be a
    file (or a new one) in a folder that exists."""
    if args.config is not None:
        from collector.config import CollectorConfig
        from telemetry import config

        collector = config.load(args.config, CollectorConfig, skip_secrets=True)
        path = collector.alerting.silences_file if collector.alerting else None
        if path is None:
            raise ValueError(f"{args.config}: alerting.silences_file is not set")
        if not path.is_absolute():
            raise ValueError(
                f"{args.config}: alerting.silences_file {path} is relative: the collector reads "
                "it from its own working directory; give it as an absolute path"
            )
    else:
        path = args.file
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the silences file (e.g. silences.json)")
    if not path.parent.is_dir():
        raise ValueError(
            f"{path}: folder {path.parent} does not exist; a mistyped path? Give the file the "
            "collector's alerting.silences_file names, or -c with the collector config"
        )
    return Path(path)


def _new_silence(args: argparse.Namespace, now: float) -> Silence:
    matchers = tuple(Matcher.parse(text) for text in args.matchers)
    if not args.force and all(m.matches({}) for m in matchers):
        raise ValueError(
            f"{' '.join(map(str, matchers))} matches alerts without those labels too, so it "
            'would silence every alert; name something they carry (rack="A01", '
            'alertname="PduPhaseCurrentHigh"), or --force'
        )
    starts = _when(args.start, "--start") if args.start else now
    ends = _when(args.end, "--end") if args.end else starts + _duration(args.duration)
    if ends <= now:
        raise ValueError("the silence would end in the past")
    if ends <= starts:
        raise ValueError("the silence would end before it begins")
    if ends - max(starts, now) > MAX_DURATION_S and not args.force:
        raise ValueError(
            f"the silence would last {format_duration(round(ends - max(starts, now)))}, over "
            f"{format_duration(MAX_DURATION_S)}: a silence that long hides real faults; "
            "--force if that is meant"
        )
    return Silence(
        id=str(uuid.uuid4()),
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        created_by=args.author or _login(),
        comment=args.comment,
    )


def _duration(text: str) -> float:
    try:
        float(text)
    except ValueError:
        return float(parse_duration(text))
    raise ValueError(f"--duration {text}: give a unit (30m, 2h, 1d)")


def _when(text: str, option: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()  # naive: local time
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an ISO 8601 time") from None


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return os.environ.get("USER", "unknown")


def _print_table(silences: list[Silence], now: float, write: Any) -> None:
    rows = [("ID", "STATE", "ENDS (UTC)", "LEFT", "BY", "MATCHERS", "COMMENT")]
    for s in sorted(silences, key=lambda s: s.ends_at):
        state = "active" if s.active(now) else "pending" if s.starts_at > now else "expired"
        left = format_duration(round(s.ends_at - now)) if s.ends_at > now else "-"
        rows.append(
            (
                s.id[:8],
                state,
                _iso(s.ends_at).replace("+00:00", ""),
                left,
                s.created_by,
                " ".join(str(m) for m in s.matchers),
                s.comment,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        write("  ".join([*cells, row[-1]]) + "\n")
