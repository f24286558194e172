"""A bounded, crash-safe on-disk queue of byte records, for data that cannot be sent yet.

Records are appended to numbered segment files (`000000000001.seg`, ...). Each record is
`magic (2 bytes) | length (4) | crc32 (4) | payload`, so a reader can prove every record whole.
Writes go straight to the file; `sync()` fsyncs what was written since the last sync (the owner
calls it at most every few hundred milliseconds, so a power cut loses at most that window and
fsync costs stay bounded). The read position is kept in `cursor` (segment, offset), written
atomically; delivery is at-least-once: after a crash, records after the last saved cursor are
read again.

On open every segment from the cursor on is scanned. A torn tail (a record cut short by a power
loss) is cut off and counted; a corrupt record in the middle is skipped by searching for the
next whole record, and counted. When the spool would exceed `max_bytes`, whole oldest segments
are dropped and their records counted: the newest data is what an operator needs after an
outage. A full disk makes `append` return False and count the loss; nothing raises.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"\xa5\x5a"
HEADER = struct.Struct(">2sII")  # magic, payload length, crc32 of the payload
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class SpoolStats:
    records: int = 0  # waiting to be read
    bytes: int = 0  # on disk
    appended: int = 0
    dropped_records: int = 0  # oldest records dropped to stay under max_bytes
    torn_records: int = 0  # cut-short records found at a segment's end on open
    corrupt_records: int = 0  # records failing their checksum, skipped
    write_errors: int = 0  # appends lost to a full or failing disk


@dataclass(slots=True)
class _Entry:
    segment: int
    offset: int  # of the header
    length: int  # of the payload


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None):
        # Several segments per spool, so dropping the oldest one frees a small share of it.
        segment_bytes = segment_bytes or min(4 * 1024 * 1024, max(max_bytes // 8, 4096))
        if max_bytes < segment_bytes:
            raise ValueError("max_bytes must be at least one segment")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.stats = SpoolStats()
        directory.mkdir(parents=True, exist_ok=True)
        self._entries: deque[_Entry] = deque()
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._dirty = False
        self._writer: int | None = None  # fd of the segment being appended to
        self._write_segment = 0
        self._load()

    # --- opening -------------------------------------------------------------------------

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _load(self) -> None:
        cursor_segment, cursor_offset = self._read_cursor()
        segments = sorted(int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit())
        for segment in segments:
            if segment < cursor_segment:
                self._segment_path(segment).unlink(missing_ok=True)  # read before the crash
                continue
            start = cursor_offset if segment == cursor_segment else 0
            self._scan(segment, start)
        self._write_segment = (segments[-1] + 1) if segments else max(cursor_segment, 1)
        self.stats.records = len(self._entries)
        self.stats.bytes = sum(self._sizes.values())
        if self.stats.records:
            log.info(
                "spool %s: %d records (%d bytes) waiting from before",
                self.directory,
                self.stats.records,
                self.stats.bytes,
            )

    def _scan(self, segment: int, start: int) -> None:
        path = self._segment_path(segment)
        data = path.read_bytes()
        position, good_end = start, start
        while position < len(data):
            record = self._record_at(data, position)
            if record is not None:
                self._entries.append(_Entry(segment, position, record))
                position += HEADER.size + record
                good_end = position
                continue
            following = self._next_record(data, position + 1)
            if following is None:  # nothing whole after this: a torn tail
                self.stats.torn_records += 1
                log.warning(
                    "spool %s: torn record at the end of %s (offset %d) cut off",
                    self.directory,
                    path.name,
                    position,
                )
                with path.open("r+b") as f:
                    f.truncate(good_end)
                data = data[:good_end]
                break
            self.stats.corrupt_records += 1
            log.warning(
                "spool %s: corrupt record in %s at offset %d skipped",
                self.directory,
                path.name,
                position,
            )
            position = following
        self._sizes[segment] = len(data)

    @staticmethod
    def _record_at(data: bytes, position: int) -> int | None:
        """The payload length of a whole, valid record at `position`, else None."""
        if position + HEADER.size > len(data):
            return None
        magic, length, crc = HEADER.unpack_from(data, position)
        end = position + HEADER.size + length
        if magic != MAGIC or length > MAX_RECORD_BYTES or end > len(data):
            return None
        if zlib.crc32(data[position + HEADER.size : end]) != crc:
            return None
        return int(length)

    def _next_record(self, data: bytes, position: int) -> int | None:
        while (position := data.find(MAGIC, position)) != -1:
            if self._record_at(data, position) is not None:
                return position
            position += 1
        return None

    def _read_cursor(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / "cursor").read_text().split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return 0, 0

    # --- writing -------------------------------------------------------------------------

    def append(self, payload: bytes) -> bool:
        """Add one record; False (and counted) if the disk refused it."""
        record = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        try:
            current = self._sizes.get(self._write_segment, 0)
            if self._writer is None or (current and current + len(record) > self.segment_bytes):
                self._rotate()
            assert self._writer is not None
            offset = self._sizes.get(self._write_segment, 0)
            written = os.write(self._writer, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
        except OSError as exc:
            self.stats.write_errors += 1
            if self.stats.write_errors == 1 or self.stats.write_errors % 1000 == 0:
                log.error(
                    "spool %s: cannot write: %s (%d records lost so far)",
                    self.directory,
                    exc,
                    self.stats.write_errors,
                )
            self._close_writer(truncate_to=self._sizes.get(self._write_segment, 0))
            return False
        self._sizes[self._write_segment] = offset + len(record)
        self._entries.append(_Entry(self._write_segment, offset, len(payload)))
        self._dirty = True
        self.stats.appended += 1
        self.stats.records += 1
        self.stats.bytes += len(record)
        self._enforce_limit()
        return True

    def _rotate(self) -> None:
        self._close_writer()
        if self._sizes.get(self._write_segment):
            self._write_segment += 1
        path = self._segment_path(self._write_segment)
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes.setdefault(self._write_segment, os.fstat(self._writer).st_size)

    def _close_writer(self, truncate_to: int | None = None) -> None:
        if self._writer is not None:
            try:
                if truncate_to is not None:
                    os.ftruncate(self._writer, truncate_to)  # no half record left behind
                os.close(self._writer)
            except OSError:
                pass
            self._writer = None

    def _enforce_limit(self) -> None:
        while self.stats.bytes > self.max_bytes and self._entries:
            oldest = self._entries[0].segment
            if oldest == self._write_segment:
                break  # never drop the segment being written
            dropped = 0
            while self._entries and self._entries[0].segment == oldest:
                self._entries.popleft()
                dropped += 1
            self.stats.dropped_records += dropped
            self.stats.records -= dropped
            self.stats.bytes -= self._sizes.pop(oldest, 0)
            self._segment_path(oldest).unlink(missing_ok=True)
            log.warning(
                "spool %s: full (%d bytes): dropped the oldest %d records",
                self.directory,
                self.max_bytes,
                dropped,
            )

    def sync(self) -> None:
        """fsync what was appended since the last sync, and save the read position."""
        if self._dirty and self._writer is not None:
            try:
                os.fsync(self._writer)
            except OSError as exc:
                log.error("spool %s: fsync failed: %s", self.directory, exc)
            self._dirty = False
        self._save_cursor()

    # --- reading -------------------------------------------------------------------------

    def peek(self) -> bytes | None:
        """The oldest record not yet acknowledged, or None."""
        while self._entries:
            entry = self._entries[0]
            try:
                with self._segment_path(entry.segment).open("rb") as f:
                    f.seek(entry.offset)
                    data = f.read(HEADER.size + entry.length)
            except OSError:
                data = b""
            if self._record_at(data, 0) == entry.length:
                return data[HEADER.size :]
            self.stats.corrupt_records += 1  # changed under us since it was written
            self.ack()
        return None

    def ack(self) -> None:
        """Forget the oldest record; its segment goes once fully read."""
        if not self._entries:
            return
        entry = self._entries.popleft()
        self.stats.records -= 1
        following = self._entries[0].segment if self._entries else self._write_segment
        if entry.segment != following and entry.segment != self._write_segment:
            self.stats.bytes -= self._sizes.pop(entry.segment, 0)
            self._segment_path(entry.segment).unlink(missing_ok=True)

    def _save_cursor(self) -> None:
        if self._entries:
            segment, offset = self._entries[0].segment, self._entries[0].offset
        else:
            segment, offset = self._write_segment, self._sizes.get(self._write_segment, 0)
        temporary = self.directory / "cursor.tmp"
        try:
            temporary.write_text(f"{segment} {offset}\n")
            os.replace(temporary, self.directory / "cursor")
        except OSError as exc:
            log.error("spool %s: cannot save the read position: %s", self.directory, exc)

    def close(self) -> None:
        self.sync()
        self._close_writer()
