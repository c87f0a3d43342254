"""Invoice run, verify and reconcile at scale (issue 17), on the cached store of
bench/cached_store.py, each against a DuckDB baseline measured in the same run.

On a working copy of the cached C x E store (bench/out/, built once):

1. DuckDB GROUP BY (customer, meter, model, price segment) over the same events
   (bench/index_bench.py's baseline), best of 3;
2. the invoice run of every customer, every invoice checked against the
   generator's independent bill;
3. ``verify`` of every issued document;
4. DuckDB hourly GROUP BY (customer, event type, hour), best of 3;
5. ``reconcile --full`` (it records the checkpoint);
6. M new events ingested (the next hours' traffic), then incremental ``reconcile``.

    .venv/bin/python bench/invperf.py --customers 1000 --events-per-customer 1000
    .venv/bin/python bench/invperf.py --customers 1000 --profile full --top 25
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import functools
import io
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from sqlalchemy import text

from cached_store import build, read_loaded
from index_bench import duckdb_baseline, timed_verify
from invoice_run import ISSUE_AT, check, customer_ids, timed_issue
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_HOUR, format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions
from meterline.services import rollups
from meterline.services.reconcile import reconcile
from meterline.store.database import Store, open_store
from meterline.wiring import ingestor_for

T = TypeVar("T")
NEW_FROM = parse_rfc3339("2024-02-01T12:00:00Z")


_cpu: list[float] = []  # process CPU seconds of each `_profiled` step, in order


def _profiled(on: bool, top: int, work: Callable[[], T]) -> tuple[T, float]:
    """Wall seconds of ``work``; its process CPU seconds go to ``_cpu`` (steadier than
    wall time on a shared machine: time spent waiting for a core is not counted)."""
    profiler = cProfile.Profile() if on else None
    cpu = time.process_time()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    out = work()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    _cpu.append(time.process_time() - cpu)
    if profiler is not None:
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        print(buf.getvalue(), flush=True)
    return out, seconds


def duckdb_hourly(store: Store, repeat: int = 3) -> tuple[float, int]:
    """Best-of-`repeat` seconds of the hourly GROUP BY over the store's events in DuckDB."""
    with tempfile.TemporaryDirectory(prefix="meterline-duck-") as tmp:
        path = Path(tmp) / "events.csv"
        with store.read() as conn, path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["customer_id", "event_type", "event_time"])
            out.writerows(
                conn.execute(text("SELECT customer_id, event_type, event_time FROM events"))
            )
        db = duckdb.connect()
        db.execute(
            "CREATE TABLE ev AS SELECT * FROM read_csv(?, header = true, columns = {"
            "'customer_id': 'VARCHAR', 'event_type': 'VARCHAR', 'event_time': 'BIGINT'})",
            [str(path)],
        )
        best, groups = float("inf"), 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            groups = len(
                db.execute(
                    "SELECT customer_id, event_type, event_time // ? AS h, count(*) FROM ev "
                    "GROUP BY ALL",
                    [US_PER_HOUR],
                ).fetchall()
            )
            best = min(best, time.perf_counter() - t0)
        db.close()
    return best, groups


def ingest_new(store: Store, customers: list[str], n: int, seed: int = 11) -> float:
    """`n` events of the next hours (Feb 1, 12:00 on), the workload's mix."""
    rng = random.Random(seed)
    items: list[Item] = []
    for i in range(n):
        cid = customers[rng.randrange(len(customers))]
        when = format_us(NEW_FROM + (4 * US_PER_HOUR * i) // n)
        r = rng.random()
        if r < 0.70:
            line = (
                f'{{"event_id":"n{i:09d}","customer_id":"{cid}","event_type":"api_call",'
                f'"event_time":"{when}","properties":{{"region":"eu"}},"source":"gateway"}}'
            )
        elif r < 0.95:
            line = (
                f'{{"event_id":"m{i:09d}","customer_id":"{cid}","event_type":"llm_call",'
                f'"event_time":"{when}","properties":{{"tokens":{rng.randrange(1, 5000)},'
                f'"model":"small"}},"source":"inference"}}'
            )
        else:
            line = (
                f'{{"event_id":"o{i:09d}","customer_id":"{cid}","event_type":"storage",'
                f'"event_time":"{when}","properties":{{"gb_hours":{rng.randrange(1, 900)}.5}},'
                f'"source":"storage-agent"}}'
            )
        items.append(Item(line.encode(), i + 1))
    ingestor = ingestor_for(store, FixedClock(to_datetime(NEW_FROM + 5 * US_PER_HOUR)))
    t0 = time.perf_counter()
    for i in range(0, n, 50_000):
        report = ingestor.ingest(items[i : i + 50_000], IngestOptions(origin="bench"))
        assert not report.rejected, report.rejects[:3]
    return time.perf_counter() - t0


def _reconcile(store: Store, full: bool) -> Any:
    report = reconcile(store, full=full)
    failing = [c.to_json() for c in report.checks if not c.ok]
    assert report.ok, failing
    return report


def _cli_reconcile(store: Store) -> tuple[float, str]:
    """Wall seconds of `meterline reconcile --json` in a fresh process (start-up
    included), and the reconcile's own time and CPU as the child measured them.
    A run in the process that just ran `--full` measured ~2x slower at 10M (its
    heap and caches); an operator's incremental run starts fresh."""
    child = (
        "import json, sys, time\n"
        "from meterline.services.reconcile import reconcile\n"
        "from meterline.store.database import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "cpu, t0 = time.process_time(), time.perf_counter()\n"
        "report = reconcile(store)\n"
        "print(json.dumps({'ok': report.ok, 'wall': time.perf_counter() - t0,\n"
        "                  'cpu': time.process_time() - cpu}))\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", child, store.url], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"], out.stdout[-2000:]
    return got["wall"], f"fresh process: {wall:.2f}s with start-up, CPU {got['cpu']:.2f}s"


def _rollup(store: Store, what: str) -> None:
    cpu = time.process_time()
    t0 = time.perf_counter()
    out = rollups.roll_up(store, ISSUE_AT)
    wall = time.perf_counter() - t0
    rows = sum(p["rows_written"] for p in out["passes"])
    folded = sum(p["rows_folded"] for p in out["passes"])
    print(
        f"{what}: {wall:.2f}s (CPU {time.process_time() - cpu:.2f}s), {len(out['passes'])} "
        f"month(s), {rows:,} month rows from {folded:,} index rows; load "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events-per-customer", type=int, default=1_000)
    parser.add_argument("--new", type=int, default=100_000, help="events before incremental")
    parser.add_argument(
        "--profile", choices=("invoice", "verify", "full", "incremental"), action="append"
    )
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--skip", choices=("verify", "reconcile"), action="append", default=[])
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes of the invoice run (default 1)"
    )
    parser.add_argument(
        "--verify-jobs",
        type=int,
        action="append",
        help="verify with this many worker processes (repeat to time several; default 1)",
    )
    parser.add_argument(
        "--from-store",
        type=Path,
        help="copy this store instead of the cached one (e.g. a rolled-up copy of it)",
    )
    parser.add_argument(
        "--rollup",
        action="store_true",
        help="run a month rollup pass (timed) before the invoice run, and again after "
        "the new events of the incremental step",
    )
    args = parser.parse_args(argv)
    prof = set(args.profile or [])
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.2f}; sqlite; {args.customers:,} customers x "
        f"{args.events_per_customer:,} events (cached store)",
        flush=True,
    )
    cached = build(args.customers, args.events_per_customer)
    loaded = read_loaded(args.customers, args.events_per_customer)
    customers = customer_ids(args.customers)
    with tempfile.TemporaryDirectory(prefix="meterline-invperf-", dir="/tmp") as tmp:
        db = Path(tmp) / "bench.db"
        shutil.copyfile(args.from_store or cached, db)
        store = open_store(f"sqlite:///{db}")
        try:
            duck_s, copied = duckdb_baseline(store)
            if args.rollup:
                _rollup(store, "month rollup pass (first: folds every day row)")
            (result, _), issue_s = _profiled(
                "invoice" in prof, args.top, lambda: timed_issue(store, False, 0, jobs=args.jobs)
            )
            check(result, loaded, customers)
            print(
                f"invoice run ({args.jobs} job(s)): {len(result.issued):,} invoices in {issue_s:.2f}s "
                f"({issue_s / len(result.issued) * 1000:.2f} ms/invoice; CPU {_cpu[-1]:.2f}s); "
                "DuckDB GROUP BY over "
                f"the same {copied:,} events {duck_s * 1000:.1f} ms; ratio "
                f"{issue_s / duck_s:.1f}x; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            if "verify" not in args.skip:
                for jobs in args.verify_jobs or [1]:
                    (_, verified), verify_s = _profiled(
                        "verify" in prof, args.top, functools.partial(timed_verify, store, jobs)
                    )
                    print(
                        f"verify ({jobs} process{'es' if jobs > 1 else ''}): {verified:,} "
                        f"documents in {verify_s:.2f}s ({verify_s / verified * 1000:.2f} ms/doc; "
                        f"CPU of this process {_cpu[-1]:.2f}s); load {os.getloadavg()[0]:.2f}",
                        flush=True,
                    )
            if "reconcile" in args.skip:
                return 0
            hourly_s, groups = duckdb_hourly(store)
            # CPU seconds too: on a shared machine the wall clock is mostly waiting.
            cpu = time.process_time()
            _, full_s = _profiled("full" in prof, args.top, lambda: _reconcile(store, True))
            full_cpu = time.process_time() - cpu
            print(
                f"reconcile --full: {full_s:.2f}s (cpu {full_cpu:.2f}s); DuckDB hourly GROUP BY "
                f"{hourly_s * 1000:.1f} ms ({groups:,} groups); ratio {full_s / hourly_s:.1f}x; "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            new_s = ingest_new(store, customers, args.new)
            if args.rollup:
                _rollup(store, f"month rollup pass after {args.new:,} new events")
            if "incremental" in prof:  # profiled in this process
                cpu = time.process_time()
                _, inc_s = _profiled(True, args.top, lambda: _reconcile(store, False))
                how = f"in this process, CPU {time.process_time() - cpu:.2f}s"
            else:  # what an operator runs: a fresh `meterline reconcile` process
                inc_s, how = _cli_reconcile(store)
            print(
                f"incremental reconcile after {args.new:,} new events (ingested in "
                f"{new_s:.1f}s): {inc_s:.2f}s ({how}); load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        finally:
            store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
