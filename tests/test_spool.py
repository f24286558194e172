"""The on-disk spool: order, restarts, torn tails, corruption, limits and a full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from telemetry.spool import HEADER, Spool


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record)
        spool.ack()
    return out


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    records = [f"line {i}\n".encode() * 20 for i in range(50)]
    assert all(spool.append(r) for r in records)
    assert len(list(tmp_path.glob("*.seg"))) > 5
    assert drain(spool) == records
    assert spool.stats.records == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 1  # read segments are deleted


def test_a_restart_replays_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    for i in range(30):
        spool.append(f"record {i}".encode() * 10)
    for _ in range(10):
        spool.peek()
        spool.ack()
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    assert again.stats.records == 20
    assert drain(again) == [f"record {i}".encode() * 10 for i in range(10, 30)]


def test_killed_writer_loses_nothing_it_synced(tmp_path: Path) -> None:
    """kill -9 after sync(): a new process finds every record."""
    script = f"""
import os, signal
from pathlib import Path
from telemetry.spool import Spool
spool = Spool(Path({str(tmp_path)!r}), max_bytes=1 << 20, segment_bytes=4096)
for i in range(500):
    spool.append(b"payload %d" % i)
spool.sync()
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -9
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=4096)
    assert drain(spool) == [b"payload %d" % i for i in range(500)]


def test_a_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        spool.append(f"r{i}".encode())
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    with segment.open("ab") as f:  # a power cut in the middle of the 11th record
        f.write(HEADER.pack(b"\xa5\x5a", 100, 0) + b"only part")
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.stats.torn_records == 1
    assert drain(again) == [f"r{i}".encode() for i in range(10)]
    again.append(b"after")  # appends go on cleanly after the cut
    assert drain(again) == [b"after"]


def test_a_corrupt_record_is_skipped_and_the_rest_delivered(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        spool.append(f"record-{i}".encode())
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    record_size = HEADER.size + len(b"record-0")
    data[4 * record_size + HEADER.size + 2] ^= 0xFF  # flip a bit in record 4's payload
    segment.write_bytes(bytes(data))
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert again.stats.corrupt_records == 1
    assert drain(again) == [f"record-{i}".encode() for i in range(10) if i != 4]


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4096, segment_bytes=1024)
    for i in range(100):
        spool.append(f"{i:04d}".encode() * 25)
    assert spool.stats.bytes <= 4096 + 1024
    assert spool.stats.dropped_records > 0
    kept = drain(spool)
    assert len(kept) + spool.stats.dropped_records == 100
    assert kept[-1] == b"0099" * 25  # the newest survive
    assert kept == sorted(kept)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root")
def test_a_full_disk_counts_losses_and_recovers(tmp_path: Path) -> None:
    """On a 1 MiB tmpfs: appends fail cleanly when it is full and work again once it is not."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("this machine does not let us mount a tmpfs")
    spool = None
    try:
        spool = Spool(mount / "spool", max_bytes=64 << 20, segment_bytes=256 << 10)
        results = [spool.append(os.urandom(10_000)) for _ in range(200)]
        assert not all(results)
        assert spool.stats.write_errors == results.count(False)
        delivered = drain(spool)
        assert len(delivered) == results.count(True)
        for path in (mount / "spool").glob("*.seg"):
            path.unlink()  # space returns
        assert spool.append(b"after the disk had room again")
        assert drain(spool) == [b"after the disk had room again"]
    finally:
        if spool is not None:
            spool.close()  # its open segment would keep the mount busy
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
