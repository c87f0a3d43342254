"""A crash mid-file loses nothing and duplicates nothing (DESIGN §3, §11).

The ingesting process is killed with SIGKILL while it works through a large
file; ingesting the same file again must leave every event stored exactly once
and the knowledge sequence without a hole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from meterline.store.database import Store

N = 60_000


def _write_file(path: Path) -> None:
    with path.open("w") as f:
        for i in range(N):
            f.write(
                json.dumps(
                    {
                        "event_id": f"e{i}",
                        "customer_id": f"c{i % 97}",
                        "event_type": "api_call",
                        "event_time": f"2024-02-0{1 + i % 9}T{i % 24:02d}:00:00Z",
                        "properties": {"tokens": i % 1000},
                    }
                )
                + "\n"
            )


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())


def _cli(store: Store, path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "meterline",
        "--db",
        store.url,
        "--now",
        "2024-02-10T00:00:00Z",
        "ingest",
        str(path),
        "--batch-size",
        "2000",
        "--json",
    ]


@pytest.mark.slow
def test_sigkill_mid_file_then_reingest_stores_each_event_once(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "big.ndjson"
    _write_file(path)
    proc = subprocess.Popen(_cli(store, path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _count(store) < 4000 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "ingest finished before it could be killed; grow N"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(store)
    assert 0 < partial < N

    done = subprocess.run(_cli(store, path), capture_output=True, check=True)
    report = json.loads(done.stdout)
    assert report["accepted"] == N - partial
    assert report["duplicates"] == partial
    assert report["rejected"] == 0
    with store.read() as conn:
        total, distinct, top = conn.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT event_id), MAX(seq) FROM events")
        ).one()
    assert total == distinct == top == N
