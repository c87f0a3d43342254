"""Usage-index benchmark (issue 17): invoice run, `verify` and a fresh-process
`rerate`, each against a baseline measured in the same run.

1. Builds the store of bench/invoice_run.py (C customers x E events in January
   2024, the same catalog: graduated count, grouped sum by package, max, flat
   fee, minimum spend, a mid-month price change) through the Ingestor.
2. DuckDB baseline: the same events copied into an in-memory DuckDB table
   (not timed), then ``GROUP BY customer, meter (event type), model, price
   segment`` with count/sum/max, best of 3: the aggregation an invoice run must
   do, by a columnar engine.
3. Times the invoice run (every invoice checked against the independent bill)
   and ``verify`` of every issued document.
4. Fresh-process re-rating: one customer with R events, invoiced; one late
   API call ingested; then ``meterline rerate --customer C --period 2024-01``
   as a new process, against ``meterline --help`` (bare process start: the CLI imported, no store), each
   the median of 3.

    .venv/bin/python bench/index_bench.py --customers 1000 --events-per-customer 1000
    .venv/bin/python bench/index_bench.py --backend postgres --rerate-events 1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy import text

from invoice_run import ISSUE_AT, LABEL, PRICE_CHANGE, check, customer_ids, load, timed_issue
from meterline.domain.clock import FixedClock
from meterline.domain.events import decode_json
from meterline.domain.timestamps import US_PER_SECOND, format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions
from meterline.services.verification import verify
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from stores import fresh_store

METERLINE = str(Path(sys.executable).with_name("meterline"))
LATE_AT = parse_rfc3339("2024-01-20T10:00:00Z")


def duckdb_baseline(store: Store, repeat: int = 3) -> tuple[float, int]:
    """Best-of-`repeat` seconds of the GROUP BY over the store's events in DuckDB."""
    with tempfile.TemporaryDirectory(prefix="meterline-duck-") as tmp:
        path = Path(tmp) / "events.csv"
        n = 0
        with store.read() as conn, path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["customer_id", "event_type", "event_time", "tokens", "model", "gb"])
            rows = conn.execute(
                text("SELECT customer_id, event_type, event_time, properties FROM events")
            )
            for cid, etype, t, props in rows:
                p = decode_json(props)
                out.writerow(
                    [cid, etype, t, p.get("tokens", ""), p.get("model", ""), p.get("gb_hours", "")]
                )
                n += 1
        db = duckdb.connect()
        db.execute(
            "CREATE TABLE ev AS SELECT * FROM read_csv(?, header = true, columns = {"
            "'customer_id': 'VARCHAR', 'event_type': 'VARCHAR', 'event_time': 'BIGINT', "
            "'tokens': 'BIGINT', 'model': 'VARCHAR', 'gb': 'DECIMAL(18,3)'})",
            [str(path)],
        )
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            db.execute(
                "SELECT customer_id, event_type, model, event_time >= ? AS seg, count(*), "
                "sum(tokens), max(gb) FROM ev GROUP BY customer_id, event_type, model, seg",
                [PRICE_CHANGE],
            ).fetchall()
            best = min(best, time.perf_counter() - t0)
        db.close()
    return best, n


def timed_verify(store: Store, jobs: int = 1) -> tuple[float, int]:
    t0 = time.perf_counter()
    report = verify(store, jobs=jobs)
    seconds = time.perf_counter() - t0
    assert report.ok, [c for c in report.checks if not c["ok"]][:3]
    return seconds, sum(1 for c in report.checks if c["name"].endswith("reproduces"))


def _cli(store: Store, *args: str) -> float:
    env = dict(os.environ, METERLINE_DB=store.url)
    t0 = time.perf_counter()
    done = subprocess.run([METERLINE, *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"meterline {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds


def rerate_case(backend: str, events: int, batch_size: int) -> dict[str, Any]:
    customer = customer_ids(1)[0]
    with fresh_store(backend) as store:
        load(store, [customer], events, batch_size)
        issued, _ = timed_issue(store, False, 0, customer)
        assert len(issued.issued) == 1
        starts, rerates = [], []
        for i in range(3):
            now = ISSUE_AT + (i + 1) * 60 * US_PER_SECOND
            when = format_us(LATE_AT + i * US_PER_SECOND)
            late = (
                f'{{"event_id":"late-{i}","customer_id":"{customer}","event_type":"api_call",'
                f'"event_time":"{when}","properties":{{"region":"eu"}},"source":"gateway"}}'
            )
            ingestor = ingestor_for(store, FixedClock(to_datetime(now)))
            report = ingestor.ingest([Item(late.encode(), 1)], IngestOptions(origin="bench"))
            assert report.accepted == 1
            starts.append(_cli(store, "--help"))
            rerates.append(
                _cli(
                    store,
                    "--now",
                    format_us(now),
                    "rerate",
                    "--customer",
                    customer,
                    "--period",
                    LABEL,
                    "--json",
                )
            )
        docs = json.loads(
            subprocess.run(
                [METERLINE, "invoice", "list", "--customer", customer, "--json"],
                env=dict(os.environ, METERLINE_DB=store.url),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert len(docs) == 4, docs  # the invoice and one correction per late event
    start, rerate = statistics.median(starts), statistics.median(rerates)
    return {"events": events, "start_s": start, "rerate_s": rerate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events-per-customer", type=int, default=1_000)
    parser.add_argument("--rerate-events", type=int, default=200_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument(
        "--rerate-only", action="store_true", help="only the fresh-process rerate case"
    )
    args = parser.parse_args(argv)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.2f}; {args.backend}; {args.customers:,} customers x "
        f"{args.events_per_customer:,} events; rerate on {args.rerate_events:,} events",
        flush=True,
    )
    if not args.rerate_only:
        _invoice_and_verify(args)
    r = rerate_case(args.backend, args.rerate_events, args.batch_size)
    budget = 1.5 * r["start_s"] + 0.2
    print(
        f"fresh-process rerate after one late event ({r['events']:,} events in the period): "
        f"{r['rerate_s']:.2f}s; bare process start {r['start_s']:.2f}s; target 1.5 x start + "
        f"0.2 s = {budget:.2f}s: {'met' if r['rerate_s'] <= budget else 'MISSED'}",
        flush=True,
    )
    return 0


def _invoice_and_verify(args: argparse.Namespace) -> None:
    customers = customer_ids(args.customers)
    with fresh_store(args.backend) as store:
        loaded = load(store, customers, args.events_per_customer, args.batch_size)
        print(f"loaded {loaded.events:,} events in {loaded.ingest_s:.1f}s", flush=True)
        duck_s, copied = duckdb_baseline(store)
        result, issue_s = timed_issue(store, False, 0)
        check(result, loaded, customers)
        verify_s, verified = timed_verify(store)
    print(
        f"invoice run: {len(result.issued):,} invoices in {issue_s:.2f}s; DuckDB GROUP BY over "
        f"the same {copied:,} events {duck_s * 1000:.1f} ms; ratio {issue_s / duck_s:.1f}x",
        flush=True,
    )
    print(f"verify: {verified:,} documents in {verify_s:.2f}s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
