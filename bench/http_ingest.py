"""HTTP ingestion load benchmark: `meterline serve` under concurrent producers.

For each backend (a fresh SQLite file, a fresh PostgreSQL database created and
dropped here) and each batch size, a real `meterline serve` (uvicorn, one
process) is started, a catalog with two meters is applied (so every request
also updates the window index, as in production), and N client threads post
batches of unique native events to /v1/events for a fixed duration. Prints
accepted events/s and request latency percentiles per (backend, batch size).

Then (unless --no-cli) the very events the server accepted are written to an
NDJSON file and ingested through the `meterline ingest` path (``read_file`` ->
``ingestor_for(store, clock).ingest``, in this process) into a fresh store
with the same catalog and clock, and the HTTP/CLI rate ratio is printed (issue
13's target: >= 0.8 with batches of 1,000).

    .venv/bin/python bench/http_ingest.py --duration 25 --clients 4
    .venv/bin/python bench/http_ingest.py --backends sqlite --batch-sizes 100

The load generator runs on the same machine as the server and the database,
so on a small box the numbers are a floor for the server, not a ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import msgspec
import psycopg

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions
from meterline.services.catalog import apply_catalog
from meterline.store.database import open_store
from meterline.wiring import ingestor_for
from servers import serving

NOW = "2024-06-15T12:00:00Z"
KEY = "bench-ingest-key"
PG_ADMIN = os.environ.get("METERLINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

CATALOG = {
    "meters": [
        {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
        {
            "code": "tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "group_by": ["model"],
        },
    ]
}


@dataclass
class Result:
    backend: str
    batch: int
    clients: int
    seconds: float
    requests: int
    events: int
    rejected: int
    errors: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cli_events_per_s: float | None = None

    @property
    def vs_cli(self) -> float | None:
        return None if not self.cli_events_per_s else self.events_per_s / self.cli_events_per_s


@dataclass
class ClientStats:
    latencies: list[float] = field(default_factory=list)
    events: int = 0
    rejected: int = 0
    errors: int = 0
    accepted: list[tuple[str, int, int]] = field(default_factory=list)  # prefix, start, size


@contextmanager
def sqlite_store() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def postgres_store() -> Iterator[str]:
    name = f"meterline_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(url: str) -> None:
    store = open_store(url)
    try:
        store.upgrade()
        apply_catalog(store, CATALOG, parse_rfc3339(NOW))
    finally:
        store.dispose()


@contextmanager
def serve(url: str, log: Path, workers: int = 1) -> Iterator[str]:
    extra = ("--workers", str(workers)) if workers > 1 else ()
    with serving(url, NOW, f"{KEY}:ingest", log, extra) as base:
        yield base


_encoder = msgspec.json.Encoder()
_NOW_US = parse_rfc3339(NOW)
_DAY_US = 86_400_000_000


def batch_body(prefix: str, start: int, size: int) -> bytes:
    return _encoder.encode(batch_events(prefix, start, size))


def batch_events(prefix: str, start: int, size: int) -> list[dict[str, object]]:
    """`size` unique events spread over the last day before NOW, 30 customers, two types."""
    events: list[dict[str, object]] = []
    for n in range(start, start + size):
        t = _NOW_US - _DAY_US + (n * 7_919_000_003) % _DAY_US
        if n % 4 == 0:
            props: dict[str, object] = {"tokens": 100 + n % 900, "model": ("small", "large")[n % 2]}
            kind = "llm_call"
        else:
            props = {"route": "/v1/things"}
            kind = "api_call"
        events.append(
            {
                "event_id": f"{prefix}-{n}",
                "customer_id": f"cust-{n % 30:02d}",
                "event_type": kind,
                "event_time": format_us(t),
                "source": "bench",
                "properties": props,
            }
        )
    return events


def prebuilt_bodies(prefix: str, batch: int, events: int) -> list[bytes]:
    """A client's first request bodies, encoded before the clock starts: building
    them while timing would put the load generator's JSON work on the same two
    cores as the server it measures (a few µs per event, on the order of the
    server's own cost)."""
    return [batch_body(prefix, n, batch) for n in range(0, max(events, batch), batch)]


def client_loop(
    base: str,
    prefix: str,
    batch: int,
    stop_at: float,
    stats: ClientStats,
    prebuilt: list[bytes] | None = None,
) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bodies = prebuilt or []
    n = 0
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        while time.monotonic() < stop_at:
            i = n // batch
            body = bodies[i] if i < len(bodies) else batch_body(prefix, n, batch)
            n += batch
            started = time.perf_counter()
            try:
                response = http.post("/v1/events", content=body)
            except httpx.HTTPError:
                stats.errors += 1
                continue
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                stats.errors += 1
                continue
            summary = response.json()
            stats.latencies.append(elapsed)
            stats.events += int(summary["accepted"])
            stats.rejected += int(summary["rejected"])
            stats.accepted.append((prefix, n - batch, batch))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_case(
    backend: str,
    url: str,
    batch: int,
    clients: int,
    duration: float,
    log: Path,
    with_cli: bool = True,
    prebuilt_events: int = 0,
    serve_workers: int = 1,
) -> Result:
    prepare(url)
    bodies = [prebuilt_bodies(f"c{i}", batch, prebuilt_events) for i in range(clients)]
    with serve(url, log, serve_workers) as base:
        # Warm up: one request per client, not measured.
        warm = ClientStats()
        client_loop(base, "warm", batch, time.monotonic() + 0.001, warm)
        stats = [ClientStats() for _ in range(clients)]
        stop_at = time.monotonic() + duration
        threads = [
            threading.Thread(
                target=client_loop,
                args=(base, f"c{i}", batch, stop_at, stats[i], bodies[i]),
                daemon=True,
            )
            for i in range(clients)
        ]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - started
    latencies = [x for s in stats for x in s.latencies]
    events = sum(s.events for s in stats)
    cli_rate = None
    if with_cli:
        cli_rate = cli_rate_on(backend, [a for s in stats for a in s.accepted], log.parent)
    return Result(
        backend=backend,
        batch=batch,
        clients=clients,
        seconds=round(seconds, 1),
        requests=len(latencies),
        events=events,
        rejected=sum(s.rejected for s in stats),
        errors=sum(s.errors for s in stats),
        events_per_s=round(events / seconds),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 1),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
        max_ms=round(max(latencies, default=float("nan")) * 1000, 1),
        cli_events_per_s=cli_rate,
    )


def cli_rate_on(backend: str, accepted: list[tuple[str, int, int]], tmp: Path) -> float:
    """Events/s of the `meterline ingest` path on the events the server accepted,
    in their request order, into a fresh store with the same catalog and clock."""
    path = tmp / f"{backend}-cli.ndjson"
    with path.open("wb") as f:
        for prefix, start, size in accepted:
            for event in batch_events(prefix, start, size):
                f.write(_encoder.encode(event) + b"\n")
    store_url = sqlite_store() if backend == "sqlite" else postgres_store()
    with store_url as url:
        prepare(url)
        store = open_store(url)
        try:
            ingestor = ingestor_for(store, FixedClock(to_datetime(_NOW_US)))
            started = time.perf_counter()
            report = ingestor.ingest(read_file(str(path)), IngestOptions(origin="cli"))
            seconds = time.perf_counter() - started
        finally:
            store.dispose()
    path.unlink()
    return round(report.accepted / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per case")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--batch-sizes", default="100,1000", help="comma-separated")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--json-out", help="also write the results as JSON to this file")
    parser.add_argument(
        "--prebuilt-events",
        type=int,
        default=50_000,
        help="events per client encoded before timing (0: build each body while timing)",
    )
    parser.add_argument(
        "--serve-workers", type=int, default=1, help="`meterline serve --workers N` (processes)"
    )
    parser.add_argument(
        "--no-cli", action="store_true", help="skip the CLI run on the same events (the ratio)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    backends = [b for b in args.backends.split(",") if b]
    print(
        f"# meterline HTTP ingest: {args.clients} clients, {args.duration:g}s per case, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results: list[Result] = []
    logs = Path(tempfile.mkdtemp(prefix="meterline-bench-logs-"))
    for backend in backends:
        for size in sizes:
            store = sqlite_store() if backend == "sqlite" else postgres_store()
            with store as url:
                log = logs / f"{backend}-{size}.log"
                r = run_case(
                    backend,
                    url,
                    size,
                    args.clients,
                    args.duration,
                    log,
                    not args.no_cli,
                    args.prebuilt_events,
                    args.serve_workers,
                )
            results.append(r)
            print(
                f"{r.backend:<9} batch {r.batch:>5}: {r.events_per_s:>8,} events/s  "
                f"p50 {r.p50_ms:>7.1f} ms  p99 {r.p99_ms:>7.1f} ms  "
                f"({r.requests:,} requests, {r.events:,} events, {r.errors} errors)"
                + (
                    f"; CLI on the same events {r.cli_events_per_s:,} events/s, "
                    f"HTTP/CLI {r.vs_cli:.2f}"
                    if r.vs_cli is not None
                    else ""
                ),
                flush=True,
            )
    print()
    print(
        "| backend | batch | clients | requests | events | events/s | p50 ms | p99 ms "
        "| CLI events/s | HTTP/CLI |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = "-" if r.vs_cli is None else f"{r.vs_cli:.2f}"
        cli = "-" if r.cli_events_per_s is None else f"{r.cli_events_per_s:,}"
        print(
            f"| {r.backend} | {r.batch:,} | {r.clients} | {r.requests:,} | {r.events:,} | "
            f"{r.events_per_s:,} | {r.p50_ms} | {r.p99_ms} | {cli} | {ratio} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
