"""Writes batches of line protocol to InfluxDB over the v1 or v2 write API, gzip-compressed.

Every batch ends one of two ways: written, or set aside in the dead-letter file with the
server's reason. Transient failures (network errors, 429, 5xx, and also 401/403/404, which an
operator can fix without data loss) are retried with capped, fully jittered exponential backoff
that honours `Retry-After`. A 400 (bad lines) or 413 (too large) is answered by splitting the
batch in halves until the offending lines are isolated, so one bad line never blocks the rest.
Rewriting the good half is harmless: InfluxDB stores a point once per series and timestamp.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from collector.config import InfluxSettings, RetrySettings
from collector.deadletter import DeadLetters

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 300.0


class WriteAbandoned(Exception):
    """The caller gave up on a write that kept failing (the batch goes elsewhere)."""


@dataclass(slots=True)
class WriteStats:
    batches_written: int = 0
    lines_written: int = 0
    lines_rejected: int = 0
    partial_writes: int = 0
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
        await self._client.aclose()

    async def write(self, lines: list[bytes], give_up: Callable[[], bool] | None = None) -> None:
        """Deliver `lines` or dead-letter the ones the server refuses; retries until done, or
        until `give_up()` says so after a failed attempt (then raises `WriteAbandoned`)."""
        if lines:
            await self._write_or_split(lines, give_up)

    async def _write_or_split(
        self, lines: list[bytes], give_up: Callable[[], bool] | None = None
    ) -> None:
        status, reason = await self._post_until_answered(lines, give_up)
        if status < 300:
            self.stats.batches_written += 1
            self.stats.lines_written += len(lines)
            return
        if status == 400 and "partial write" in reason:
            self.stats.partial_writes += 1
        if len(lines) == 1:
            self.stats.lines_rejected += 1
            self.dead_letters.add(lines, f"HTTP {status}: {reason}", self.describe())
            return
        middle = len(lines) // 2
        await self._write_or_split(lines[:middle], give_up)
        await self._write_or_split(lines[middle:], give_up)

    async def _post_until_answered(
        self, lines: list[bytes], give_up: Callable[[], bool] | None
    ) -> tuple[int, str]:
        """POST until the server answers 2xx, 400 or 413; everything else is retried."""
        body = b"\n".join(lines)
        if self.settings.gzip:
            body = _gzip(body)
        attempt = 0
        while True:
            started = time.perf_counter()
            delay: float | None = None
            try:
                response = await self._client.post(
                    self._url, params=self._params, headers=self._headers, content=body
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                self.stats.last_write_s = time.perf_counter() - started
                if response.status_code < 300 or response.status_code in (400, 413):
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
