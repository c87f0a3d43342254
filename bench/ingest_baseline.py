"""Ingest against bare-script baselines, in one run (issue 13).

One NDJSON file: 1M events (by default) from 1,000 customers, the demo
workload's mix (1% re-sent duplicates, 3% out of order, a few truncated
lines). Two meters are applied before ingesting: a count of API calls per
hour and a sum of tokens grouped by model.

Per backend, alternating ``--rounds`` times:

- the baseline, a plain stdlib script: ``json.loads``, canonical
  ``json.dumps(sort_keys=True, separators=(",", ":"))`` of the event,
  ``hashlib.sha256``, ``datetime.fromisoformat`` for the time, and per batch
  one ``sqlite3`` ``executemany`` (``INSERT OR IGNORE``, same WAL and
  ``synchronous`` mode as the store) into a table keyed (source, event_id);
  on PostgreSQL the same rows through one psycopg binary ``COPY`` per batch
  into a table with the same primary key (in-file repeats are dropped with a
  Python set first, since COPY cannot skip them);
- ``meterline ingest``: exactly the path the CLI takes (``read_file`` ->
  ``ingestor_for(store, clock).ingest``) into a fresh, migrated store with
  the meters in force: validation, dedup against the store, the event log,
  the usage index, lateness and watermarks, audit, the webhook outbox.

It prints events/s of each and the ratio meterline/baseline of the best
round of each (the target: <= 1.5 on SQLite, <= 2 on PostgreSQL), and the
same ratio in CPU seconds of this process, which a busy machine disturbs less
(on SQLite that is all the work but fsync waits; on PostgreSQL the server's
share is not in it).

    .venv/bin/python bench/ingest_baseline.py                       # both backends
    .venv/bin/python bench/ingest_baseline.py --backend sqlite --events 200000
    .venv/bin/python bench/ingest_baseline.py --backend sqlite --profile
    .venv/bin/python bench/ingest_baseline.py --events 200000 --floor   # + the layout floor

With ``--floor`` each round also times the layout floor: the rows that round's
meterline run wrote, inserted by a bare script into a fresh store in as many
transactions (see ``layout_floor``). floor / baseline is what the storage
layout costs; meterline / floor is what meterline's code adds on top of it.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pstats
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Column, Table, func, inspect, select, text

from meterline.demo.workload import Workload, write
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_HOUR, parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store, sqlite_sync
from meterline.store.partitions import Partitions, month_of
from meterline.store.schema import metadata
from meterline.wiring import ingestor_for
from stores import PG_ADMIN, fresh_store, pg_url

OUT = Path(__file__).resolve().parent / "out"
BATCH = IngestOptions().batch_size
EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")

CATALOG: dict[str, Any] = {
    "meters": [
        {
            "code": "api_calls",
            "event_type": "api_call",
            "aggregation": "count",
            "window": "1h",
            "allowed_lateness": "3h",
        },
        {
            "code": "tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "group_by": ["model"],
        },
    ]
}


def dataset(events: int, customers: int) -> tuple[Path, int]:
    w = Workload(customers=customers, events=events)
    path = OUT / f"baseline-{customers}-{events}-{w.seed}.ndjson"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write(w, tmp)
        tmp.rename(path)
    with path.open("rb") as f:
        lines = sum(1 for _ in f)
    return path, lines


def _rows(path: Path) -> Iterator[list[tuple[Any, ...]]]:
    """The baseline's parsing: per line json.loads, canonical JSON, SHA-256."""
    batch: list[tuple[Any, ...]] = []
    with path.open("rb") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            t = datetime.fromisoformat(obj["event_time"]) - EPOCH
            us = (t.days * 86_400 + t.seconds) * 1_000_000 + t.microseconds
            props = json.dumps(obj.get("properties", {}), sort_keys=True, separators=(",", ":"))
            canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            batch.append(
                (
                    obj.get("source", "default"),
                    obj["event_id"],
                    obj["customer_id"],
                    obj["event_type"],
                    us,
                    props,
                    digest,
                )
            )
            if len(batch) == BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


_DDL = (
    "CREATE TABLE events (source TEXT NOT NULL, event_id TEXT NOT NULL, customer_id TEXT NOT NULL, "
    "event_type TEXT NOT NULL, event_time BIGINT NOT NULL, properties TEXT NOT NULL, "
    "content_hash TEXT NOT NULL, PRIMARY KEY (source, event_id))"
)


def baseline_sqlite(path: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="meterline-baseline-", dir="/tmp") as tmp:
        db = sqlite3.connect(f"{tmp}/baseline.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={sqlite_sync()}")
        db.execute(_DDL)
        started, cpu = time.perf_counter(), time.process_time()
        for rows in _rows(path):
            db.execute("BEGIN")
            db.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        stored = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        db.close()
    return seconds, cpu, stored


def parse_only(path: Path) -> tuple[float, float, int]:
    """The baselines' parsing alone (no database): with the layout floor's inserts,
    the cost of a bare script that stores meterline's rows."""
    started, cpu = time.perf_counter(), time.process_time()
    n = sum(len(rows) for rows in _rows(path))
    return time.perf_counter() - started, time.process_time() - cpu, n


def baseline_postgres(path: Path) -> tuple[float, float, int]:
    name = f"meterline_baseline_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(pg_url(name)) as pg:
            pg.execute(_DDL)
            pg.commit()
            seen: set[tuple[str, str]] = set()
            started, cpu = time.perf_counter(), time.process_time()
            for rows in _rows(path):
                with (
                    pg.cursor() as cur,
                    cur.copy("COPY events FROM STDIN (FORMAT BINARY)") as cp,
                ):
                    cp.set_types(["text", "text", "text", "text", "int8", "text", "text"])
                    for r in rows:
                        key = (r[0], r[1])
                        if key not in seen:
                            seen.add(key)
                            cp.write_row(r)
                pg.commit()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            stored = int(pg.execute("SELECT COUNT(*) FROM events").fetchone()[0])  # type: ignore[index]
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return seconds, cpu, stored


# Tables ingestion only updates in place (counters, watermarks): the layout floor
# replays their final state with one UPDATE per batch instead of new rows.
_UPDATED = {"knowledge", "global_watermark", "source_watermarks"}


def _row_counts(store: Store) -> dict[str, int]:
    with store.read() as conn:
        present = set(inspect(conn).get_table_names())
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
            if t.name in present
        }


def _keys(store: Store) -> dict[str, set[tuple[Any, ...]]]:
    """Every table's primary keys (taken before ingesting: the catalog's rows)."""
    with store.read() as conn:
        # (information_schema lists PostgreSQL's partitioned parents; the inspector does not)
        sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            if store.is_postgres
            else "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
        present = {str(r[0]) for r in conn.execute(text(sql))}
        return {
            t.name: {tuple(r) for r in conn.execute(select(*_key(t)))}
            for t in metadata.sorted_tables
            if t.name in present
        }


def _key(t: Table) -> list[Column[Any]]:
    """A table's identifying columns (events has no primary key on PostgreSQL's partitions)."""
    if t.primary_key.columns:
        return list(t.primary_key.columns)
    return [t.c.seq] if "seq" in t.c else list(t.columns)


def _written(
    store: Store, before: dict[str, set[tuple[Any, ...]]]
) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The rows ingestion added to each table, in primary-key order: what the
    layout floor writes."""
    out: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    with store.read() as conn:
        for t in metadata.sorted_tables:
            if t.name not in before or t.name in _UPDATED:
                continue
            pk = _key(t)
            width = len(pk)
            rows = [
                tuple(r)[width:]
                for r in conn.execute(select(*pk, *t.columns).order_by(*pk))
                if tuple(r)[:width] not in before[t.name]
            ]
            if rows:
                out[t.name] = ([c.name for c in t.columns], rows)
    return out


def layout_floor(
    backend: str, written: dict[str, tuple[list[str], list[tuple[Any, ...]]]], batches: int
) -> tuple[float, float, int]:
    """The database work of meterline's storage layout alone: the rows one meterline
    run wrote (events, usage index, Merkle nodes, lateness, batches, audit, outbox),
    inserted by a bare script into a fresh migrated store with the same catalog,
    cut into the same number of transactions, by executemany (SQLite) or COPY
    (PostgreSQL). No validation, no folding, no hashing, no dedup: what is left is
    what the layout costs the database, the floor under any code on this schema."""
    now_us = parse_rfc3339(Workload().month_end) + US_PER_HOUR
    with fresh_store(backend) as store:
        apply_catalog(store, CATALOG, now_us)
        if store.is_postgres:
            times = written["events"][1]
            col = written["events"][0].index("event_time")
            Partitions().ensure(store.engine, {month_of(r[col]) for r in times})
        raw = store.engine.raw_connection()
        driver = raw.driver_connection
        plan = [
            (name, cols, rows, -(-len(rows) // batches)) for name, (cols, rows) in written.items()
        ]
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(batches):
            if isinstance(driver, psycopg.Connection):
                with driver.cursor() as cur:
                    for name, cols, rows, per in plan:
                        part = rows[i * per : (i + 1) * per]
                        if part:
                            with cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as cp:
                                for r in part:
                                    cp.write_row(r)
                    cur.execute("UPDATE knowledge SET seq = seq + 1 WHERE id = 1")
                driver.commit()
            else:
                assert isinstance(driver, sqlite3.Connection)
                driver.execute("BEGIN IMMEDIATE")
                for name, cols, rows, per in plan:
                    part = rows[i * per : (i + 1) * per]
                    if part:
                        marks = ", ".join("?" for _ in cols)
                        driver.executemany(
                            f"INSERT INTO {name} ({', '.join(cols)}) VALUES ({marks})", part
                        )
                driver.execute("UPDATE knowledge SET seq = seq + 1 WHERE id = 1")
                driver.execute("COMMIT")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        raw.close()
        print(
            "    layout rows: "
            + ", ".join(f"{name} {len(rows):,}" for name, (_, rows) in written.items()),
            flush=True,
        )
        stored = _row_counts(store)["events"]
    return seconds, cpu, stored


def meterline(
    backend: str, path: Path, profile: bool, top: int, keep: list[Any] | None = None
) -> tuple[float, float, int]:
    """`keep`, if given, receives (rows written, batches) for the layout floor."""
    now_us = parse_rfc3339(Workload().month_end) + US_PER_HOUR
    with fresh_store(backend) as store:
        apply_catalog(store, CATALOG, now_us)
        before = _keys(store) if keep is not None else {}
        ingestor = ingestor_for(store, FixedClock(to_datetime(now_us)))
        profiler = cProfile.Profile() if profile else None
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        report = ingestor.ingest(read_file(str(path)), IngestOptions(origin="cli"))
        if profiler is not None:
            profiler.disable()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        if keep is not None:
            keep[:] = [_written(store, before), report.batches]
    t = ingestor.timings
    print(
        f"    phases: validate {t.validate:.2f}s write {t.write:.2f}s index {t.index:.2f}s; "
        f"accepted {report.accepted:,} duplicates {report.duplicates:,} "
        f"rejected {report.rejected:,}",
        flush=True,
    )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue(), flush=True)
    return seconds, cpu, report.accepted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per backend")
    parser.add_argument("--profile", action="store_true", help="cProfile the meterline runs")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time the layout floor: meterline's own rows written by a bare script",
    )
    args = parser.parse_args(argv)
    path, lines = dataset(args.events, args.customers)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {lines:,} lines, "
        f"{args.customers:,} customers, 2 meters, batch {BATCH:,}, "
        f"sqlite synchronous={sqlite_sync()}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    base_fn = {"sqlite": baseline_sqlite, "postgres": baseline_postgres}
    summary = []
    for backend in backends:
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        for rnd in range(1, args.rounds + 1):
            kept: list[Any] = []
            contenders = ("baseline", "meterline") + (("layout", "parse") if args.floor else ())
            for who in contenders:
                if who == "baseline":
                    seconds, cpu, stored = base_fn[backend](path)
                elif who == "meterline":
                    seconds, cpu, stored = meterline(
                        backend, path, args.profile, args.top, kept if args.floor else None
                    )
                elif who == "layout":
                    seconds, cpu, stored = layout_floor(backend, kept[0], kept[1])
                    kept.clear()
                else:
                    seconds, cpu, stored = parse_only(path)
                best[who] = min(best.get(who, seconds), seconds)
                best_cpu[who] = min(best_cpu.get(who, cpu), cpu)
                print(
                    f"{backend:8} round {rnd} {who:9} {seconds:7.2f}s "
                    f"{lines / seconds:9,.0f} lines/s  (this process: {cpu:6.2f} CPU s)  "
                    f"stored {stored:,}  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        ratio = best["meterline"] / best["baseline"]
        summary.append(
            f"{backend:8} baseline {lines / best['baseline']:9,.0f}/s  "
            f"meterline {lines / best['meterline']:9,.0f}/s  ratio {ratio:.2f}x  "
            f"(CPU of this process: {best_cpu['meterline'] / best_cpu['baseline']:.2f}x)"
        )
        if args.floor:
            floor = best["parse"] + best["layout"]
            floor_cpu = best_cpu["parse"] + best_cpu["layout"]
            summary.append(
                f"{backend:8} floor = baseline parsing {best['parse']:.2f}s + meterline's rows "
                f"inserted bare {best['layout']:.2f}s = {floor:.2f}s: "
                f"floor / baseline {floor / best['baseline']:.2f}x "
                f"(CPU {floor_cpu / best_cpu['baseline']:.2f}x), "
                f"meterline / floor {best['meterline'] / floor:.2f}x "
                f"(CPU {best_cpu['meterline'] / floor_cpu:.2f}x)"
            )
    print("\nbest of each (time ratio meterline / baseline):")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
