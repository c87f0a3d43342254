"""`meterline demo`: generate a month, ingest it into a fresh SQLite store, report."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text

from meterline.demo.workload import Workload, write
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.store.database import open_store
from meterline.wiring import ingestor_for

# The demo runs as of shortly after the month closed, so every window is final.
DEMO_NOW = "2024-02-01T06:00:00Z"


def run_demo(out: Path, workload: Workload, console: Console) -> IngestReport:
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "meterline.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    events_path = out / "events-2024-01.ndjson"

    t0 = time.perf_counter()
    with console.status(
        f"generating {workload.events:,} events for {workload.customers} customers"
    ):
        lines = write(workload, events_path)
    console.print(f"generated {lines:,} lines in {time.perf_counter() - t0:.1f}s -> {events_path}")

    store = open_store(f"sqlite:///{db_path}")
    store.upgrade()
    clock = FixedClock(to_datetime(parse_rfc3339(DEMO_NOW)))
    ingestor = ingestor_for(store, clock)
    t1 = time.perf_counter()
    with Progress(
        TextColumn("[bold]ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("ingest", total=lines)
        report = ingestor.ingest(
            read_file(str(events_path)),
            IngestOptions(origin="demo"),
            lambda n: bar.advance(task, n),
        )
    elapsed = time.perf_counter() - t1
    console.print(
        f"ingested in {elapsed:.1f}s ({lines / elapsed:,.0f} lines/s): accepted {report.accepted:,}, "
        f"duplicates {report.duplicates:,}, rejected {report.rejected:,} (quarantined)"
    )
    with store.read() as conn:
        per_type = conn.execute(
            text(
                "SELECT event_type, COUNT(*), COUNT(DISTINCT customer_id) FROM events GROUP BY event_type ORDER BY event_type"
            )
        ).all()
    for event_type, n, customers in per_type:
        console.print(f"  {event_type:<10} {n:>10,} events from {customers} customers")
    for r in report.rejects[:5]:
        console.print(f"  rejected line {r.line}: {r.code}: {r.message[:80]}")
    console.print(f"\nstore: {db_path}")
    store.dispose()
    return report
