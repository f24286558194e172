"""Writes batches of line protocol to InfluxDB over the v1 or v2 write API, gzip-compressed.

Every line ends one of two ways: written, or set aside in the dead-letter file with the
server's reason. Transient failures (network errors, 429, 5xx, and also 401/403/404, which an
operator can fix without data loss) are retried with capped, fully jittered exponential backoff
that honours `Retry-After`.

A partial write (InfluxDB 1.x: 400, 2.x: 422, "partial write: ... dropped=N") has stored the
acceptable points, or should have: the refused lines are picked out from the reason and from
what was seen stored (collector/refusal.py) when they tell which, and, for a cardinality limit,
the others are sent once more (InfluxDB 1.6 loses some of them). Otherwise `write` returns at
once and a background sorter sends parts of the batch again (harmless: InfluxDB stores a point
once per series and timestamp), one request at a time, never holding a write slot or the
batch's acknowledgements. Series refused for a cardinality limit are remembered for a while and
their next lines set aside without a request. A 400 that refused the whole batch, or a 413 (too
large), is split in halves until the offending lines are isolated, so one bad line never blocks
the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from collector.config import InfluxSettings, RetrySettings
from collector.deadletter import DeadLetters
from collector.refusal import (
    Refusal,
    RefusedSeries,
    StoredKeys,
    parse_refusal,
    shape_of,
)

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 300.0
# Series refused for a cardinality limit are set aside without a request for this long, then
# tried again (a raised limit or dropped series take effect); at most this many remembered.
REFUSED_SERIES_TTL_S = 600.0
REFUSED_SERIES_MAX = 200_000
# Lines of partial writes waiting to be sorted out; beyond this they are set aside unsorted.
SORT_BACKLOG_LINES = 500_000


class WriteAbandoned(Exception):
    """The caller gave up on a write that kept failing (the batch goes elsewhere)."""


@dataclass(slots=True)
class WriteStats:
    batches_written: int = 0
    lines_written: int = 0
    lines_rejected: int = 0
    partial_writes: int = 0
    # of lines_rejected: refused for a series or tag-value limit, a field type conflict; set
    # aside without a request (series refused lately); set aside without being sorted out
    lines_rejected_cardinality: int = 0
    lines_rejected_type_conflict: int = 0
    lines_set_aside_known: int = 0
    lines_unsorted: int = 0
    requests: int = 0  # write requests sent, sorting included
    sort_requests: int = 0
    retries: int = 0
    last_write_s: float = 0.0
    failing: bool = False
    failing_since: float = 0.0  # time.monotonic() of the first failure in a row


def _gzip(body: bytes) -> bytes:
    # Level 1: most of the size win for a fraction of the CPU of the default level.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:  # the other form: an HTTP date
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


class InfluxWriter:
    def __init__(
        self,
        settings: InfluxSettings,
        retry: RetrySettings,
        dead_letters: DeadLetters,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry
        self.dead_letters = dead_letters
        self.stats = WriteStats()
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)
        self._url, self._params, self._headers = self._endpoint()
        self._refused = RefusedSeries(REFUSED_SERIES_TTL_S, REFUSED_SERIES_MAX)
        self._stored = StoredKeys(REFUSED_SERIES_TTL_S, REFUSED_SERIES_MAX)
        self._backlog: deque[tuple[list[bytes], Refusal]] = deque()
        self._backlog_lines = 0
        self._sorted = asyncio.Event()
        self._sorted.set()
        self._sorter: asyncio.Task[None] | None = None

    def _endpoint(self) -> tuple[str, dict[str, str], dict[str, str]]:
        s = self.settings
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if s.gzip:
            headers["Content-Encoding"] = "gzip"
        base = s.url.rstrip("/")
        if s.api == "v2":
            params = {"bucket": s.bucket, "precision": "ns"}
            if s.org:
                params["org"] = s.org
            if s.token:
                headers["Authorization"] = f"Token {s.token}"
            return f"{base}/api/v2/write", params, headers
        params = {"db": s.database, "precision": "ns"}
        if s.retention_policy:
            params["rp"] = s.retention_policy
        if s.username:
            params["u"] = s.username
            params["p"] = s.password or ""
        return f"{base}/write", params, headers

    def reconfigure(self, settings: InfluxSettings, retry: RetrySettings) -> None:
        """Send later requests, retries of batches in flight included, with new settings (a
        reload). `gzip` stays: a batch in flight is compressed, or not, already."""
        self.settings = settings.model_copy(update={"gzip": self.settings.gzip})
        self.retry = retry
        self._client.timeout = httpx.Timeout(settings.timeout_s)
        self._url, self._params, self._headers = self._endpoint()

    def describe(self) -> str:
        s = self.settings
        target = f"bucket {s.bucket}" if s.api == "v2" else f"database {s.database}"
        return f"InfluxDB {s.url} ({s.api}, {target})"

    async def aclose(self) -> None:
        """Stop sorting (what is left is set aside unsorted) and close the connections."""
        if self._sorter is not None:
            self._sorter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sorter
        while self._backlog:
            lines, refusal = self._backlog.popleft()
            self._unsorted(lines, refusal, "collector stopping")
        self._backlog_lines = 0
        self._sorted.set()
        await self._client.aclose()

    @property
    def sorting_lines(self) -> int:
        """Lines of partial writes still being sorted out (stored or refused)."""
        return self._backlog_lines

    async def settled(self) -> None:
        """Wait until every partial write is sorted out."""
        await self._sorted.wait()

    async def write(self, lines: list[bytes], give_up: Callable[[], bool] | None = None) -> None:
        """Deliver `lines` or dead-letter the ones the server refuses; retries until done, or
        until `give_up()` says so after a failed attempt (then raises `WriteAbandoned`).

        Returns once each line is stored, set aside, or (partial writes) stored or refused
        for sure and left to the sorter to tell which."""
        lines, known = self._refused.split(lines)
        if known:
            self.stats.lines_set_aside_known += len(known)
            self._reject(
                known,
                "series refused by InfluxDB lately (cardinality limit); "
                f"set aside without sending for up to {REFUSED_SERIES_TTL_S:.0f} s",
            )
        if lines:
            await self._write_or_split(lines, give_up)

    async def _write_or_split(
        self, lines: list[bytes], give_up: Callable[[], bool] | None = None
    ) -> None:
        status, reason = await self._post_until_answered(lines, give_up)
        if status < 300:
            self._written(lines)
            return
        if "partial write" in reason:
            self.stats.partial_writes += 1
            again = self._sort_out(lines, parse_refusal(f"HTTP {status}: {reason}"))
            if again:
                await self._write_or_split(again, give_up)
            return
        if len(lines) == 1:
            self._reject(lines, f"HTTP {status}: {reason}")
            return
        middle = len(lines) // 2
        await self._write_or_split(lines[:middle], give_up)
        await self._write_or_split(lines[middle:], give_up)

    def _written(self, lines: list[bytes]) -> None:
        self.stats.batches_written += 1
        self.stats.lines_written += len(lines)
        self._stored.learn(lines)

    def _sort_out(self, lines: list[bytes], refusal: Refusal) -> list[bytes]:
        """Set aside the lines of a partial write that InfluxDB refused, at once when the
        reason tells which, else through the sorter. Returns the others if they are to be sent
        again: InfluxDB 1.6 loses points of existing series from a batch it refused new series
        or tag values of, without counting them as dropped (tests/test_cardinality.py shows
        it); type conflicts and parse errors do not."""
        if refusal.dropped == 0:
            return []
        if refusal.cardinality:
            self._stored.watch(refusal)
        again = self._set_aside_refused(lines, refusal)
        if again is not None:
            return again
        if self._backlog_lines + len(lines) > SORT_BACKLOG_LINES:
            self._unsorted(lines, refusal, "sorting backlog full")
            return []
        self._backlog.append((lines, refusal))
        self._backlog_lines += len(lines)
        self._sorted.clear()
        if self._sorter is None or self._sorter.done():
            self._sorter = asyncio.create_task(self._sort_forever(), name="sort partial writes")
        return []

    def _set_aside_refused(self, lines: list[bytes], refusal: Refusal) -> list[bytes] | None:
        """Set aside the refused lines if the reason, and what was seen stored, tell which;
        returns the lines to send again, or None when it cannot tell."""
        dropped = refusal.dropped
        if len(lines) == 1:
            self._refuse(lines, refusal)
            return []
        if dropped is not None and dropped >= len(lines):
            candidates: list[bytes] | None = lines
        else:
            candidates = refusal.candidates(lines)
            if refusal.cardinality:
                candidates = self._stored.unknown(
                    refusal, lines if candidates is None else candidates
                )
        if candidates is None or len(candidates) != dropped:
            return None
        if refusal.kind == "series_limit" and len({shape_of(line) for line in candidates}) > 1:
            # InfluxDB refuses all new series of a batch that would pass the limit, so a
            # device's few new series may share the fate of a burst's: sorted out by shape,
            # they may get in on their own.
            return None
        self._refuse(candidates, refusal)
        if refusal.kind in ("type_conflict", "parse"):
            return []  # InfluxDB 1.6 stored the others (checked)
        refused = set(candidates)
        return [line for line in lines if line not in refused]

    async def _sort_forever(self) -> None:
        """Send parts of partially written batches again, one request at a time, until each
        part is all stored or all refused."""
        while self._backlog:
            lines, refusal = self._backlog[0]  # left there if cancelled: set aside unsorted
            # What was learned since it was queued may tell the refused lines apart now.
            again = self._set_aside_refused(lines, refusal)
            parts = deque(_parts(lines) if again is None else [again] if again else [])
            while parts:
                part = parts.popleft()
                status, reason = await self._post_until_answered(part, None)
                self.stats.sort_requests += 1
                if status < 300:
                    self._written(part)
                    continue
                answer = f"HTTP {status}: {reason}"
                if "partial write" in reason:
                    again = self._sort_out(part, parse_refusal(answer))
                else:  # the whole part refused (413, or a server that refuses all): split it
                    again = self._sort_out(part, Refusal("other", answer, None))
                if again:
                    parts.appendleft(again)
            self._backlog.popleft()
            self._backlog_lines -= len(lines)
        self._sorted.set()

    def _refuse(self, lines: list[bytes], refusal: Refusal) -> None:
        if refusal.cardinality:
            self.stats.lines_rejected_cardinality += len(lines)
            self._refused.remember(lines)
        elif refusal.kind == "type_conflict":
            self.stats.lines_rejected_type_conflict += len(lines)
        self._reject(lines, refusal.text)

    def _unsorted(self, lines: list[bytes], refusal: Refusal, why: str) -> None:
        self.stats.lines_unsorted += len(lines)
        self._reject(
            lines,
            f"{refusal.text} ({why}: {len(lines)} lines not sorted out, of which InfluxDB "
            f"refused {refusal.dropped if refusal.dropped is not None else 'some'})",
        )

    def _reject(self, lines: list[bytes], reason: str) -> None:
        self.stats.lines_rejected += len(lines)
        self.dead_letters.add(lines, reason, self.describe())

    async def _post_until_answered(
        self, lines: list[bytes], give_up: Callable[[], bool] | None
    ) -> tuple[int, str]:
        """POST until the server answers 2xx, 400, 413 or 422; everything else is retried."""
        body = b"\n".join(lines)
        if self.settings.gzip:
            body = _gzip(body)
        attempt = 0
        while True:
            started = time.perf_counter()
            delay: float | None = None
            self.stats.requests += 1
            try:
                response = await self._client.post(
                    self._url, params=self._params, headers=self._headers, content=body
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                self.stats.last_write_s = time.perf_counter() - started
                if response.status_code < 300 or response.status_code in (400, 413, 422):
                    if self.stats.failing:
                        log.info("%s: writing again", self.describe())
                        self.stats.failing = False
                    return response.status_code, _error_text(response)
                problem = f"HTTP {response.status_code}: {_error_text(response)}"
                delay = _retry_after(response)
            attempt += 1
            self.stats.retries += 1
            if delay is None:
                cap = min(self.retry.max_s, self.retry.initial_s * 2 ** min(attempt, 20))
                delay = random.uniform(0, cap)
            if not self.stats.failing:
                self.stats.failing_since = time.monotonic()
                log.warning("%s: write failed: %s; retrying", self.describe(), problem)
                self.stats.failing = True
            if give_up is not None and give_up():
                raise WriteAbandoned(problem)
            await asyncio.sleep(delay)


def _parts(lines: list[bytes]) -> list[list[bytes]]:
    """Split lines to sort out: by measurement and tag keys when they differ (a burst of new
    series is usually one such shape), else in halves of the sorted lines (so the series of a
    burst, new values of one tag, stay together)."""
    groups: dict[bytes, list[bytes]] = {}
    for line in lines:
        groups.setdefault(shape_of(line), []).append(line)
    if len(groups) > 1:
        return list(groups.values())
    ordered = sorted(lines)
    middle = len(ordered) // 2
    return [ordered[:middle], ordered[middle:]]
