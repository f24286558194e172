"""The InfluxDB writer against real servers: InfluxDB 1.x (v1 API), VictoriaMetrics (v2 API),
and a local HTTP server that answers what a struggling InfluxDB answers (429, 503, 413)."""

from __future__ import annotations

import gzip
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.config import InfluxSettings, RetrySettings
from collector.deadletter import DeadLetters
from collector.influx import InfluxWriter
from rackwatch.localservices import Running, influx_query

pytestmark = pytest.mark.integration
FAST_RETRY = RetrySettings(initial_s=0.05, max_s=0.2)


def writer(tmp_path: Path, **settings: object) -> InfluxWriter:
    return InfluxWriter(
        InfluxSettings.model_validate(settings), FAST_RETRY, DeadLetters(tmp_path / "dead.jsonl")
    )


def lines(n: int, measurement: str = "pdu", start: int = 0) -> list[bytes]:
    return [
        f"{measurement},device=p{i} power_w={i}.5 {1700000000000000000 + i}".encode()
        for i in range(start, start + n)
    ]


async def test_v1_type_conflict_isolates_the_bad_line(
    influxdb: Running, database: str, tmp_path: Path
) -> None:
    w = writer(tmp_path, url=influxdb.url(), database=database)
    await w.write(lines(10))  # power_w is now a float field
    batch = lines(100, start=10)
    batch[37] = b"pdu,device=bad power_w=5i 1700000000000000037"  # integer: type conflict
    await w.write(batch)
    await w.aclose()

    rows = influx_query(influxdb, database, 'SELECT count("power_w") FROM "pdu"')
    assert rows[0]["values"][0][1] == 109  # type: ignore[index]
    assert w.stats.lines_rejected == 1
    assert w.stats.lines_rejected_type_conflict == 1
    assert w.stats.partial_writes == 1
    assert w.stats.requests == 2  # InfluxDB named the refused line: nothing sent again
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["line"] for d in dead] == [batch[37].decode()]
    assert "HTTP 400" in dead[0]["reason"]
    assert "field type conflict" in dead[0]["reason"]


async def test_v2_api_into_victoria_metrics(
    victoria_metrics: Running, unique: str, tmp_path: Path
) -> None:
    w = writer(
        tmp_path,
        url=victoria_metrics.url(),
        api="v2",
        bucket="rackwatch",
        org="qiyang",
        token="unused-by-vm",
    )
    await w.write(
        [f"vmtest_{unique},device=pdu-a01-a,phase=1 current_a=4.9 {time.time_ns()}".encode()]
    )
    await w.aclose()
    assert w.stats.lines_written == 1
    exported = vm_export(victoria_metrics, f"vmtest_{unique}_current_a")
    assert len(exported) == 1
    assert exported[0]["values"] == [4.9]
    assert exported[0]["metric"]["device"] == "pdu-a01-a"


def vm_export(vm: Running, metric: str) -> list[dict[str, Any]]:
    """VictoriaMetrics' export of one metric; VM makes new data searchable about 1 s later."""
    query = urllib.parse.urlencode({"match[]": f'{{__name__="{metric}"}}'})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        urllib.request.urlopen(f"{vm.url()}/internal/force_flush").read()
        with urllib.request.urlopen(f"{vm.url()}/api/v1/export?{query}") as reply:
            exported = [json.loads(line) for line in reply.read().splitlines()]
        if exported:
            return exported
        time.sleep(0.2)
    return []


class Script:
    """What the stand-in server answers, request by request, and what it received."""

    def __init__(self, answer: Callable[[int, list[bytes]], tuple[int, dict[str, str]]]):
        self.answer = answer
        self.requests: list[tuple[float, str, list[bytes], dict[str, str]]] = []


@pytest.fixture
def stand_in() -> Iterator[tuple[str, list[Script]]]:
    """A real HTTP server on a free port; tests put a Script into the list it serves."""
    scripts: list[Script] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            script = scripts[0]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received = body.split(b"\n")
            script.requests.append((time.monotonic(), self.path, received, dict(self.headers)))
            status, headers = script.answer(len(script.requests), received)
            payload = b"" if status == 204 else json.dumps({"error": f"status {status}"}).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", scripts
    server.shutdown()
    server.server_close()


async def test_429_and_503_are_retried_honouring_retry_after(
    stand_in: tuple[str, list[Script]], tmp_path: Path
) -> None:
    url, scripts = stand_in
    script = Script(lambda n, _: {1: (429, {"Retry-After": "1"}), 2: (503, {})}.get(n, (204, {})))
    scripts.append(script)
    w = writer(tmp_path, url=url, database="dc", username="rw", password="pw")
    await w.write(lines(50))
    await w.aclose()
    assert len(script.requests) == 3
    assert script.requests[1][0] - script.requests[0][0] >= 0.95  # waited as told
    assert all(r[2] == lines(50) for r in script.requests)  # same batch, gzip, intact
    path, headers = script.requests[0][1], script.requests[0][3]
    assert path.startswith("/write?")
    assert urllib.parse.parse_qs(path.split("?", 1)[1]) == {
        "db": ["dc"],
        "precision": ["ns"],
        "u": ["rw"],
        "p": ["pw"],
    }
    assert headers["Content-Encoding"] == "gzip"
    assert w.stats.retries == 2
    assert w.stats.lines_written == 50


async def test_413_splits_the_batch_until_it_fits(
    stand_in: tuple[str, list[Script]], tmp_path: Path
) -> None:
    url, scripts = stand_in
    script = Script(lambda n, received: (413, {}) if len(received) > 30 else (204, {}))
    scripts.append(script)
    w = writer(tmp_path, url=url, api="v2", bucket="b", org="o", token="t0ken")
    await w.write(lines(100))
    await w.aclose()
    accepted = [line for r in script.requests if len(r[2]) <= 30 for line in r[2]]
    assert accepted == lines(100)  # everything, once, in order
    assert script.requests[0][3]["Authorization"] == "Token t0ken"
    assert script.requests[0][1].startswith("/api/v2/write?")
    assert w.stats.lines_rejected == 0


async def test_server_down_then_up_loses_nothing(tmp_path: Path) -> None:
    import asyncio

    from rackwatch.localservices import free_port

    port = free_port()
    w = writer(tmp_path, url=f"http://127.0.0.1:{port}", database="dc")
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = gzip.decompress(self.rfile.read(int(self.headers["Content-Length"])))
            received.extend(body.split(b"\n"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    write = asyncio.create_task(w.write(lines(20)))
    await asyncio.sleep(0.5)  # connection refused, retried meanwhile
    assert not write.done()
    assert w.stats.retries >= 1
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        await asyncio.wait_for(write, 10)
    finally:
        server.shutdown()
        server.server_close()
        await w.aclose()
    assert received == lines(20)
