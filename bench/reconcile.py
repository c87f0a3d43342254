"""Reconcile benchmark (issue 17): incremental vs full, full vs DuckDB, and what the
Merkle log costs at ingest.

Builds a store of N events (the ingest benchmark's workload and three meters),
runs a full `reconcile` (which records the checkpoint), ingests M more events,
then times, in the same run:

- incremental `reconcile` (checks what came after the checkpoint),
- full `reconcile --full`,
- a DuckDB hourly GROUP BY (customer, event type, hour) over the same events,
  loaded into an in-memory DuckDB table beforehand (load not timed);

and, with --ingest-cost, ingests the N-event file into two fresh stores, with and
without growing the tree (the seal replaced by a no-op), alternated twice.

    .venv/bin/python bench/reconcile.py                          # 200k + 20k, SQLite
    .venv/bin/python bench/reconcile.py --events 1000000 --new 100000
    .venv/bin/python bench/reconcile.py --backend postgres --ingest-cost

Results are recorded in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from sqlalchemy.engine import Connection

from ingest import CATALOG, dataset
from meterline.demo.workload import Workload
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_HOUR, parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions
from meterline.services.catalog import apply_catalog
from meterline.services.reconcile import ReconcileReport, reconcile
from meterline.store import merkle
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from stores import fresh_store

NEXT_END = "2024-02-01T06:00:00Z"
NOW_US = parse_rfc3339(NEXT_END) + US_PER_HOUR


def _ingest(store: Store, path: Path) -> float:
    ingestor = ingestor_for(store, FixedClock(to_datetime(NOW_US)))
    started = time.perf_counter()
    ingestor.ingest(read_file(str(path)), IngestOptions(origin="cli", batch_size=20_000))
    return time.perf_counter() - started


def _timed(label: str, store: Store, full: bool, profile: int = 0) -> tuple[float, ReconcileReport]:
    profiler = cProfile.Profile() if profile else None
    cpu = time.process_time()  # on a shared machine the wall clock is mostly waiting
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = reconcile(store, full=full)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile)
        print(out.getvalue())
    failing = [c.name for c in report.checks if not c.ok]
    print(
        f"{label:28} {seconds:9.2f} s (cpu {cpu:.2f} s)   mode {report.mode:11} seq "
        f"{report.checkpoint['from_seq'] + 1}..{report.cutoff_seq}"
        + (f"   FAILING {failing}" if failing else ""),
        flush=True,
    )
    return seconds, report


def _duckdb_group_by(paths: list[Path]) -> tuple[float, int]:
    con = duckdb.connect()
    files = ", ".join(f"'{p}'" for p in paths)
    con.execute(
        "CREATE TABLE ev AS SELECT customer_id, event_type, "
        "CAST(event_time AS TIMESTAMPTZ) AS t FROM read_json("
        f"[{files}], format = 'newline_delimited', ignore_errors = true, "
        "columns = {customer_id: 'VARCHAR', event_type: 'VARCHAR', event_time: 'VARCHAR'}) "
        "WHERE customer_id IS NOT NULL AND event_time IS NOT NULL"
    )
    best = float("inf")
    groups = 0
    for _ in range(3):
        started = time.perf_counter()
        groups = len(
            con.execute(
                "SELECT customer_id, event_type, date_trunc('hour', t) AS h, COUNT(*) "
                "FROM ev GROUP BY ALL"
            ).fetchall()
        )
        best = min(best, time.perf_counter() - started)
    return best, groups


@contextmanager
def _without_tree() -> Iterator[None]:
    """The write path as it was before the Merkle log: no leaves, no nodes."""
    seal, remember = merkle.seal, merkle.remember
    merkle.seal = lambda conn: None
    merkle.remember = lambda conn, seq_hashes: None
    try:
        yield
    finally:
        merkle.seal, merkle.remember = seal, remember


@contextmanager
def _timed_seal(spent: list[float]) -> Iterator[None]:
    """Measure the time the write path spends growing the tree (seal)."""
    seal = merkle.seal

    def timed(conn: Connection) -> None:
        started = time.perf_counter()
        seal(conn)
        spent.append(time.perf_counter() - started)

    merkle.seal = timed
    try:
        yield
    finally:
        merkle.seal = seal


def ingest_cost(backend: str, path: Path, lines: int) -> None:
    """End to end with and without the tree (alternated, best of 2), and the time
    inside the seal itself, which load on a shared machine disturbs less."""
    times: dict[str, list[float]] = {"tree": [], "no tree": []}
    sealing: list[float] = []
    for _ in range(2):
        for label in ("no tree", "tree"):
            with fresh_store(backend) as store:
                apply_catalog(store, CATALOG, NOW_US)
                if label == "tree":
                    spent: list[float] = []
                    with _timed_seal(spent):
                        seconds = _ingest(store, path)
                    sealing.append(sum(spent))
                else:
                    with _without_tree():
                        seconds = _ingest(store, path)
            times[label].append(seconds)
            print(f"ingest {label:8} {seconds:8.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    extra = (best["tree"] - best["no tree"]) / lines * 1e6
    seal = min(sealing)
    print(
        f"ingest with the tree / without: {best['tree'] / best['no tree']:.2f}x "
        f"({best['tree']:.2f} s vs {best['no tree']:.2f} s, best of 2; "
        f"{extra:+.2f} us per line)\n"
        f"time in the seal (leaves + nodes): {seal:.2f} s = {seal / lines * 1e6:.2f} us per "
        f"line, {seal / best['tree']:.1%} of the ingest",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--new", type=int, default=None, help="default: events / 10")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--ingest-cost", action="store_true")
    parser.add_argument("--profile", type=int, default=0, help="print the top N (cumulative)")
    args = parser.parse_args(argv)
    new = args.new if args.new is not None else args.events // 10
    base = dataset("plain", Workload(events=args.events))
    # The new events are the next hours of traffic (as between two scheduled runs),
    # not a second copy of the month: incremental work follows what they touch.
    more = dataset(
        "next",
        Workload(
            events=new,
            seed=7,
            first_id=10 * args.events,
            duplicate_ratio=0.0,
            delayed_ratio=0.0,
            month_start=Workload().month_end,
            month_end=NEXT_END,
        ),
    )
    print(
        f"python {sys.version.split()[0]}, {args.backend}, {base.lines:,} + {more.lines:,} lines",
        flush=True,
    )
    if args.ingest_cost:
        ingest_cost(args.backend, base.path, base.lines)
    with fresh_store(args.backend) as store:
        apply_catalog(store, CATALOG, NOW_US)
        print(f"{'ingest base':28} {_ingest(store, base.path):9.2f} s", flush=True)
        _timed("reconcile (first, full)", store, full=False)
        print(f"{'ingest new':28} {_ingest(store, more.path):9.2f} s", flush=True)
        inc, _ = _timed("reconcile (incremental)", store, full=False, profile=args.profile)
        full, _ = _timed("reconcile --full", store, full=True, profile=args.profile)
    duck, groups = _duckdb_group_by([base.path, more.path])
    print(f"{'duckdb hourly GROUP BY':28} {duck:9.3f} s   ({groups:,} groups, best of 3)")
    print(f"incremental / full:  {inc / full:.3f}  ({inc:.2f} s vs {full:.2f} s)")
    print(f"full / duckdb:       {full / duck:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
