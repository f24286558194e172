"""`RACKWATCH_SHARED` (and `rackwatch demo --shared`) may name the shared folder or its
devices/ (or devices/snmprec/) folder: both find the same recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rackwatch import demo
from rackwatch.localservices import ServiceError, shared_folder
from tests.conftest import SHARED


def test_the_shared_folder_its_devices_and_its_recordings_all_name_it() -> None:
    assert shared_folder(SHARED) == SHARED
    assert shared_folder(SHARED / "devices") == SHARED
    assert shared_folder(SHARED / "devices" / "snmprec") == SHARED


def test_the_demo_takes_either_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ../shared to fall back on from here
    monkeypatch.setenv("RACKWATCH_SHARED", str(SHARED / "devices"))
    assert demo.find_shared(None) == SHARED
    assert demo.find_shared(SHARED / "devices") == SHARED
    with pytest.raises(ServiceError, match="or its devices folder"):
        demo.find_shared(tmp_path)
