"""A demo-like store, a live `meterline serve` and a real Chromium, for the console tests.

The store is the demo's month (a smaller run) plus what an operator meets on a
real day: late events waiting to be re-rated (one with `<script>` in its
properties) and quarantined inputs, one of them fixable. The same helpers take
the screenshots in docs/console/ (tests/console_shots.py), so they stay current.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from tests.api.server import ADMIN_KEY, INGEST_KEY, Server, _wait, clean_env, free_port

from meterline.demo.run import run_demo
from meterline.demo.workload import Workload
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions
from meterline.services import invoicing
from meterline.store.database import open_store
from meterline.wiring import ingestor_for

NOW = "2024-02-15T17:00:00Z"  # the demo's clock for further commands
SEEDED_AT = "2024-02-15T16:00:00Z"
SECRET = "console-test-secret-5d1e7a90c2"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCRIPT = "<script>window.__pwned = 1</script>"
LATE_CUSTOMER = "cust_0001"  # USD: EUR usage is capped in the demo, so late calls change no total
LATE_EVENTS = 40
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

__all__ = ["ADMIN_KEY", "INGEST_KEY", "Seeded", "chromium", "seed", "start_console"]


@dataclass(frozen=True)
class Seeded:
    db_url: str
    late_customer: str
    late_invoice: str
    fixable_quarantine_id: int
    script_quarantine_id: int


def _ndjson(path: Path, events: list[dict[str, Any]]) -> Path:
    enc = msgspec.json.Encoder()
    path.write_bytes(b"".join(enc.encode(e) + b"\n" for e in events))
    return path


def seed(directory: Path, events: int = 6000, customers: int = 12) -> Seeded:
    """Run the demo into `directory`, then add late events and quarantined inputs."""
    run_demo(directory, Workload(customers=customers, events=events), Console(file=io.StringIO()))
    db_url = f"sqlite:///{directory / 'meterline.db'}"
    store = open_store(db_url)
    try:
        ingestor = ingestor_for(store, FixedClock(to_datetime(parse_rfc3339(SEEDED_AT))))
        late = [
            {
                "event_id": f"late_{i:04d}",
                "customer_id": LATE_CUSTOMER,
                "event_type": "api_call",
                "event_time": f"2024-01-2{i % 8}T1{i % 10}:00:00Z",
                "properties": {"region": SCRIPT if i == 0 else "us"},
                "source": "gateway",
            }
            for i in range(LATE_EVENTS)
        ]
        ingestor.ingest(
            read_file(str(_ndjson(directory / "late.ndjson", late))),
            IngestOptions(origin="seed:late"),
        )
        bad = [
            # fixable: a timestamp without its timezone
            {
                "event_id": "fix_me_1",
                "customer_id": LATE_CUSTOMER,
                "event_type": "api_call",
                "event_time": "2024-02-01 11:00:00",
                "properties": {"region": "eu"},
            },
            # hostile: no customer, and markup in its properties
            {
                "event_id": "hostile_1",
                "event_type": "api_call",
                "event_time": "2024-02-01T11:00:00Z",
                "properties": {"note": SCRIPT},
            },
        ]
        ingestor.ingest(
            read_file(str(_ndjson(directory / "bad.ndjson", bad))),
            IngestOptions(origin="seed:bad", source="partner-api"),
        )
        invoice = next(
            d.number for d in invoicing.list_all(store, LATE_CUSTOMER) if d.body.corrects is None
        )
        with store.read() as conn:
            from sqlalchemy import text

            ids = [
                int(r[0])
                for r in conn.execute(text("SELECT id FROM quarantine ORDER BY id DESC LIMIT 2"))
            ][::-1]
    finally:
        store.dispose()
    return Seeded(db_url, LATE_CUSTOMER, invoice, ids[0], ids[1])


def start_console(db_url: str, log_dir: Path, now: str = NOW) -> Server:
    """`meterline serve` on a free loopback port with an ingest and an admin key."""
    for _ in range(3):
        port = free_port()
        log_path = log_dir / f"console-{port}.log"
        env = clean_env(f"{INGEST_KEY}:ingest,{ADMIN_KEY}:admin")
        env["METERLINE_CONSOLE_SECRET"] = SECRET
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meterline",
                    "--db",
                    db_url,
                    "--now",
                    now,
                    "serve",
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = Server(f"http://127.0.0.1:{port}", proc, log_path)
        if _wait(server, "/readyz"):
            return server
        server.stop()
        if "address already in use" not in server.log().lower():
            raise AssertionError(f"server did not become ready:\n{server.log()}")
    raise AssertionError("no free port found for the server")


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def login(page: Any, base: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{base}/console/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
