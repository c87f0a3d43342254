"""Ingest benchmark: events/s end to end for a large NDJSON file (issues 2 and 3).

Generates (once, cached under bench/out/) a synthetic month with the demo
workload generator, plus a variant where 10% of the lines are re-sent
duplicates, then ingests each file into a fresh store through exactly the path
`meterline ingest FILE` takes (``read_file`` -> ``ingestor_for(store,
clock).ingest``), with and without the three demo meters active.

    .venv/bin/python bench/ingest.py                     # 1M lines, both backends
    .venv/bin/python bench/ingest.py --events 200000 --backend sqlite
    .venv/bin/python bench/ingest.py --backend postgres --profile

SQLite runs in a temporary file; PostgreSQL (METERLINE_BENCH_PG, default the
local server) in a database created for the case and dropped afterwards.
Results and where the time goes are discussed in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from meterline.demo.workload import Workload, write
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_HOUR, parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from stores import fresh_store

OUT = Path(__file__).resolve().parent / "out"

# Three meters like the demo's: one count, one grouped sum,
# one max, on the three event types of the workload.
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
        {
            "code": "storage",
            "event_type": "storage",
            "aggregation": "max",
            "property": "gb_hours",
            "window": "1d",
        },
    ]
}


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    lines: int


@dataclass(frozen=True)
class Result:
    backend: str
    dataset: str
    meters: bool
    lines: int
    seconds: float
    validate: float
    write: float
    index: float
    report: IngestReport

    @property
    def rate(self) -> float:
        return self.lines / self.seconds


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def dataset(name: str, workload: Workload) -> Dataset:
    """The workload's NDJSON file, generated once per parameter set."""
    path = OUT / f"{name}-{workload.events}-{workload.duplicate_ratio:.4f}-{workload.seed}.ndjson"
    if not path.exists():
        started = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        n = write(workload, tmp)
        tmp.rename(path)
        print(f"generated {path.name}: {n:,} lines in {time.perf_counter() - started:.1f}s")
        return Dataset(name, path, n)
    return Dataset(name, path, _count_lines(path))


def datasets(lines: int) -> list[Dataset]:
    """The plain workload (1% re-sent, 3% delayed, a few malformed lines) of
    about `lines` lines, and one where 10% of the lines are duplicates."""
    plain = Workload(events=lines)
    # events * (1 + ratio) lines, of which events * ratio duplicates = 10%.
    dup_events = round(lines * 0.9)
    dups = Workload(events=dup_events, duplicate_ratio=(lines * 0.1) / dup_events)
    return [dataset("plain", plain), dataset("dup10", dups)]


def _stored_events(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())


def run_case(
    backend: str, data: Dataset, meters: bool, batch_size: int, profile: bool, top: int
) -> Result:
    # After the last event of the month: nothing is in the future or too old.
    now_us = parse_rfc3339(Workload().month_end) + US_PER_HOUR
    clock = FixedClock(to_datetime(now_us))
    with fresh_store(backend) as store:
        if meters:
            apply_catalog(store, CATALOG, now_us)
        ingestor = ingestor_for(store, clock)
        options = IngestOptions(origin="cli", batch_size=batch_size)
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = ingestor.ingest(read_file(str(data.path)), options)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        stored = _stored_events(store)
    if stored != report.accepted:
        raise SystemExit(f"{backend}/{data.name}: {stored} stored but {report.accepted} accepted")
    t = ingestor.timings
    result = Result(
        backend, data.name, meters, data.lines, seconds, t.validate, t.write, t.index, report
    )
    print(_row(result), flush=True)
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        print(out.getvalue(), flush=True)
    return result


HEADER = (
    f"{'backend':9} {'file':6} {'meters':6} {'lines':>9} {'accepted':>9} {'dups':>7} "
    f"{'rejected':>8} {'seconds':>8} {'events/s':>9} {'validate':>8} {'write':>7} {'index':>7}"
)


def _row(r: Result) -> str:
    return (
        f"{r.backend:9} {r.dataset:6} {'3' if r.meters else '-':6} {r.lines:9,} "
        f"{r.report.accepted:9,} {r.report.duplicates:7,} {r.report.rejected:8,} "
        f"{r.seconds:8.2f} {r.rate:9,.0f} {r.validate:8.2f} {r.write:7.2f} {r.index:7.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="lines per file")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument(
        "--case",
        choices=("plain", "dup10", "all"),
        default="all",
        help="which file (plain workload, or 10%% duplicates)",
    )
    parser.add_argument("--meters", choices=("off", "on", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=IngestOptions().batch_size)
    parser.add_argument("--profile", action="store_true", help="cProfile each run")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    parser.add_argument(
        "--sync-compare",
        action="store_true",
        help="SQLite only: the same file with synchronous=NORMAL, then FULL (the default); "
        "prints the FULL/NORMAL time ratio (issue 11, docs/DURABILITY.md)",
    )
    args = parser.parse_args(argv)
    if args.sync_compare:
        return sync_compare(args.events, args.batch_size)

    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    files = [d for d in datasets(args.events) if args.case in ("all", d.name)]
    meter_cases = {"off": [False], "on": [True], "both": [False, True]}[args.meters]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, batch size {args.batch_size:,}")
    print(HEADER, flush=True)
    results = [
        run_case(backend, data, meters, args.batch_size, args.profile, args.top)
        for backend in backends
        for data in files
        for meters in meter_cases
    ]
    if len(results) > 1:
        print("\nsummary")
        print(HEADER)
        for r in results:
            print(_row(r))
    return 0


def sync_compare(lines: int, batch_size: int) -> int:
    """Ingest the plain file into SQLite with synchronous=NORMAL and FULL, in
    the same run, and print the cost of surviving power loss as a ratio."""
    data = datasets(lines)[0]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, batch size {batch_size:,}")
    print(f"{'sync':7} {HEADER}", flush=True)
    seconds: dict[str, float] = {}
    previous = os.environ.get("METERLINE_SQLITE_SYNC")
    try:
        for mode in ("NORMAL", "FULL"):
            os.environ["METERLINE_SQLITE_SYNC"] = mode
            print(f"{mode:7} ", end="")
            seconds[mode] = run_case("sqlite", data, True, batch_size, False, 0).seconds
    finally:
        if previous is None:
            os.environ.pop("METERLINE_SQLITE_SYNC", None)
        else:
            os.environ["METERLINE_SQLITE_SYNC"] = previous
    print(f"FULL/NORMAL time ratio: {seconds['FULL'] / seconds['NORMAL']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
