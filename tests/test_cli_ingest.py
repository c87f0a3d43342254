"""The public CLI contract of DESIGN §12 for init, ingest and retract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meterline.store.database import Store

NOW = "2024-02-10T00:00:00Z"


def run(db: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", "--db", db, "--now", NOW, *args],
        capture_output=True,
        input=stdin,
        timeout=120,
    )


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode().strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    lines = [
        {
            "event_id": "e1",
            "customer_id": "acme",
            "event_type": "api_call",
            "event_time": "2024-02-01T10:00:00Z",
        },
        {
            "event_id": "e2",
            "customer_id": "acme",
            "event_type": "api_call",
            "event_time": "2024-02-01T11:00:00Z",
            "source": "gw",
        },
    ]
    path = tmp_path / "events.ndjson"
    path.write_text(
        json.dumps(lines[0])
        + "\n"
        + "{broken\n"
        + json.dumps(lines[1])
        + "\n"
        + json.dumps(lines[0])
        + "\n"
    )
    return path


def test_ingest_json_summary_shape(store: Store, events_file: Path) -> None:
    proc = run(store.url, "ingest", str(events_file), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "accepted": 2,
        "duplicates": 1,
        "rejected": 1,
        "rejects": [
            {"index": 1, "code": "INVALID_JSON", "message": out["rejects"][0]["message"], "line": 2}
        ],
    }


def test_ingest_human_summary_and_stdin(store: Store, events_file: Path) -> None:
    proc = run(store.url, "ingest", "-", stdin=events_file.read_bytes())
    assert proc.returncode == 0
    assert "accepted 2  duplicates 1  rejected 1" in proc.stdout.decode()


def test_retract_and_its_errors(store: Store, events_file: Path) -> None:
    run(store.url, "ingest", str(events_file))
    ok = run(store.url, "retract", "e2", "--source", "gw", "--reason", "customer dispute", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["event_id"] == "e2"
    missing = run(store.url, "retract", "nope", "--reason", "x")
    assert missing.returncode == 2
    assert "EVENT_NOT_FOUND" in one_line_error(missing)
    no_reason = run(store.url, "retract", "e1")
    assert no_reason.returncode == 2


def test_uninitialised_store_is_a_clear_error(tmp_path: Path, events_file: Path) -> None:
    proc = run(f"sqlite:///{tmp_path / 'new.db'}", "ingest", str(events_file))
    assert proc.returncode == 2
    assert "meterline init" in one_line_error(proc)


def test_init_is_idempotent(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert run(db, "init").returncode == 0
    again = run(db, "init")
    assert again.returncode == 0 and b"store ready" in again.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("ingest", "/nonexistent/file.ndjson"),
        ("ingest", "--format", "xml", "x"),
        ("--now", "yesterday", "ingest", "x"),
    ],
)
def test_bad_usage_exits_2_with_one_line(store: Store, args: tuple[str, ...]) -> None:
    proc = run(store.url, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip()
    assert b"Traceback" not in proc.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    proc = run("postgresql://nobody@127.0.0.1:1/none", "init")
    assert proc.returncode == 2
    assert "STORE_UNAVAILABLE" in one_line_error(proc)


def test_invalid_json_array_file_is_one_line(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[{]")
    proc = run(store.url, "ingest", str(path))
    assert proc.returncode == 2
    assert "INVALID_JSON" in one_line_error(proc)
