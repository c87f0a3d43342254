"""`meterline serve --workers N` (issue 13): several server processes on one PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import pytest
from sqlalchemy import text
from tests.api.server import INGEST_KEY, KEYS, NOW, Server, _wait, clean_env, free_port, meterline

from meterline.store import sequence
from meterline.store.database import Store


def _start(db_url: str, log_dir: Path, workers: int) -> Server:
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "meterline", "--db", db_url, "--now", NOW),
                *("serve", "--port", str(port), "--workers", str(workers)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(KEYS),
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log_path)
    if not _wait(server, "/readyz"):
        server.stop()
        raise AssertionError(f"server did not become ready:\n{server.log()}")
    return server


def _batch(b: int, size: int) -> bytes:
    return b"\n".join(
        msgspec.json.encode(
            {
                "event_id": f"b{b}-{i}",
                "customer_id": f"c{i % 9}",
                "event_type": "api_call",
                "event_time": f"2024-02-0{1 + b % 8}T{i % 24:02d}:00:00Z",
                "properties": {"tokens": i % 5},
            }
        )
        for i in range(size)
    )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_two_server_processes_ingest_and_keep_seq(store: Store, tmp_path: Path) -> None:
    server = _start(store.url, tmp_path, workers=2)
    batches, size = 24, 250
    try:

        def send(b: int) -> tuple[int, int]:
            with server.client(INGEST_KEY) as client:
                body = _batch(b, size)
                first = client.post(
                    "/v1/events", content=body, headers={"content-type": "application/x-ndjson"}
                )
                again = client.post(  # a retried request: all duplicates
                    "/v1/events", content=body, headers={"content-type": "application/x-ndjson"}
                )
                assert first.status_code == again.status_code == 200, first.text
                return int(first.json()["accepted"]), int(again.json()["duplicates"])

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(send, range(batches)))
    finally:
        server.stop()
    pids = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(pids) == 2, server.log()  # two processes served
    assert sum(a for a, _ in results) == sum(d for _, d in results) == batches * size
    with store.read() as conn:
        seqs = [int(s) for s in conn.execute(text("SELECT seq FROM events ORDER BY seq")).scalars()]
        last = sequence.current(conn)
    assert seqs == list(range(1, last + 1)) and last == batches * size


def test_several_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'm.db'}"
    assert meterline("--db", db, "init").returncode == 0
    proc = meterline("--db", db, "serve", "--workers", "2", env=clean_env(KEYS))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "needs PostgreSQL" in err, err


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_console_session_holds_on_every_server_process(store: Store, tmp_path: Path) -> None:
    """Logged in through one process, every process knows the session (each request
    comes on a new connection, so both processes answer); a logout ends it in all."""
    from tests.api.test_console_http import csrf_of, log_in

    server = _start(store.url, tmp_path, workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=60, follow_redirects=False) as http:
            assert log_in(http).status_code == 303
            cookie = http.cookies["meterline_console"]

            def page(_: int) -> int:
                with httpx.Client(base_url=server.url, timeout=60) as fresh:
                    fresh.cookies.set("meterline_console", cookie, path="/console")
                    return fresh.get("/console", follow_redirects=False).status_code

            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(page, range(40))) == {200}
            overview = http.get("/console")
            assert http.post("/console/logout", data={"csrf": csrf_of(overview)}).status_code == 303
            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(page, range(40))) == {303}  # to the login page, everywhere
    finally:
        server.stop()
    pids = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(pids) == 2, server.log()


def test_one_server_under_concurrent_requests_keeps_every_request_whole(
    store: Store, tmp_path: Path
) -> None:
    """One `meterline serve` process, both backends, 8 clients at once: requests that
    queue share transactions (group commit). Requests overlap in keys (re-sent events
    are duplicates, changed ones conflicts) and some carry an event the database
    refuses: only that event is quarantined, each answer counts only its own events,
    seqs have no holes and the Merkle log equals the facts."""
    from tests.test_group_commit import _poison

    from meterline.store import merkle

    _poison(store, "poison")
    server = _start(store.url, tmp_path, workers=1)
    batches, size = 32, 200

    def body(b: int) -> bytes:
        events = [
            {
                "event_id": f"b{b}-{i}" if i >= 20 else f"shared-{i}",  # 20 keys in every request
                "customer_id": f"c{i % 9}",
                "event_type": "api_call",
                "event_time": f"2024-02-0{1 + (b % 8 if i >= 20 else 0)}T{i % 24:02d}:00:00Z",
                "properties": {"tokens": (i % 5) if i >= 10 or b % 4 else 99},  # b%4==0: conflicts
            }
            for i in range(size)
        ]
        if b % 8 == 3:
            events[50]["event_id"] = "poison"
        return b"\n".join(msgspec.json.encode(e) for e in events)

    try:

        def send(b: int) -> dict[str, object]:
            with server.client(INGEST_KEY) as client:
                r = client.post(
                    "/v1/events", content=body(b), headers={"content-type": "application/x-ndjson"}
                )
                assert r.status_code == 200, r.text
                return dict(r.json())

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(batches)))
    finally:
        server.stop()
    for b, a in enumerate(answers):
        assert a["accepted"] + a["duplicates"] + a["rejected"] == size, a  # type: ignore[operator]
        codes = [r["code"] for r in a["rejects"]]  # type: ignore[attr-defined]
        assert codes.count("STORE_REJECTED") == (1 if b % 8 == 3 else 0), a
        assert set(codes) <= {"STORE_REJECTED", "EVENT_ID_CONFLICT"}, a
    assert sum(a["duplicates"] for a in answers) > 0  # type: ignore[misc]
    assert any(r["code"] == "EVENT_ID_CONFLICT" for a in answers for r in a["rejects"])  # type: ignore[attr-defined]
    unique = 20 + batches * (size - 20) - batches // 8  # shared keys once; poison never
    assert sum(a["accepted"] for a in answers) == unique  # type: ignore[misc]
    with store.read() as conn:
        seqs = [int(s) for s in conn.execute(text("SELECT seq FROM events ORDER BY seq")).scalars()]
        last = sequence.current(conn)
        assert merkle.audit_range(conn, 0, last).problems == []
        quarantined = conn.execute(
            text("SELECT code, COUNT(*) FROM quarantine GROUP BY code ORDER BY code")
        ).all()
    assert seqs == list(range(1, last + 1)) and len(seqs) == unique
    rejected = sum(a["rejected"] for a in answers)  # type: ignore[misc]
    assert sum(int(n) for _, n in quarantined) == rejected
    assert dict(quarantined)["STORE_REJECTED"] == batches // 8
