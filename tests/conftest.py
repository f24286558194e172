"""Fixtures that start real servers on free loopback ports, once per test session.

Each test gets its own InfluxDB database, MQTT topic prefix or snmpsim community, so tests
sharing a server do not see each other's data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rackwatch import localservices
from rackwatch.localservices import Running

# RACKWATCH_SHARED may name the shared folder or its devices/ (or devices/snmprec/) folder.
SHARED = localservices.shared_folder(
    Path(os.environ.get("RACKWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))
)
RECORDINGS = SHARED / "devices" / "snmprec"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    service = localservices.start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield service
    localservices.stop(service)


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    service = localservices.start_influxdb(tmp_path_factory.mktemp("influxdb"))
    yield service
    localservices.stop(service)


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    service = localservices.start_victoria_metrics(tmp_path_factory.mktemp("victoria"))
    yield service
    localservices.stop(service)


@pytest.fixture(scope="session")
def snmpsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """snmpsim serving every shared recording; the community is the recording's name."""
    if not RECORDINGS.is_dir():
        pytest.fail(f"device recordings not found at {RECORDINGS}; set RACKWATCH_SHARED")
    service = localservices.start_snmpsim(RECORDINGS, tmp_path_factory.mktemp("snmpsim"))
    yield service
    localservices.stop(service)


@pytest.fixture
def database(influxdb: Running) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    localservices.influx_create_database(influxdb, name)
    return name


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def recordings_copy(tmp_path: Path) -> Path:
    """A writable copy of the recordings, for tests that add their own devices."""
    target = tmp_path / "snmprec"
    shutil.copytree(RECORDINGS, target)
    return target
