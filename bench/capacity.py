"""Capacity model inputs (docs/SCALING.md): CPU cost per event of each stage.

Wall-clock rates on a shared machine say more about the neighbours than about
meterline, so this measures CPU time instead: this process's own (time.process_time)
plus that of every PostgreSQL backend serving the benchmark database (utime+stime
from /proc/PID/stat; the server runs on this host). Stages are separated by
difference, each on a fresh database:

- validate: `prepare` alone (decode, validate, canonical JSON, SHA-256, meter check);
- store:    ingest with no meters, minus validate (event log, dedup, commit);
- index:    ingest with two meters, minus ingest with none (window index, watermark);
- invoice:  a split invoice run (services/invoice_run.py) over the stored events,
            per invoice and per billed event.

    .venv/bin/python bench/capacity.py                 # 40,000 events, 1,000 customers
    .venv/bin/python bench/capacity.py --events 100000 --batch-size 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import text

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions, prepare
from meterline.services import invoice_run
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from scale import (
    CATALOG,
    CUSTOMERS,
    ENCODER,
    FEB_US,
    NOW,
    NOW_US,
    event,
    invoice_catalog,
    iso,
    ndjson,
)
from stores import fresh_store

_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu(store: Store) -> float:
    """CPU seconds used so far by every backend connected to this store's database."""
    with store.read() as conn:
        pids = [
            int(p)
            for p in conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        ]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone, or another host
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


@dataclass
class Cost:
    client: float  # CPU seconds
    server: float

    @property
    def total(self) -> float:
        return self.client + self.server


class CpuClock:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.c0 = time.process_time()
        self.s0 = _backend_cpu(store)

    def stop(self) -> Cost:
        return Cost(time.process_time() - self.c0, _backend_cpu(self.store) - self.s0)


def ingest_cost(path: Path, meters: bool, batch: int) -> tuple[Cost, dict[str, int]]:
    with fresh_store("postgres") as store:
        if meters:
            apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
        ingestor = ingestor_for(store, FixedClock(to_datetime(NOW_US)))
        options = IngestOptions(origin="cli", batch_size=batch)
        clock = CpuClock(store)
        ingestor.ingest(read_file(str(path)), options)
        cost = clock.stop()
        return cost, storage_bytes(store)


def validate_cost(path: Path, batch: int) -> float:
    items = list(enumerate(read_file(str(path))))
    options = IngestOptions()
    t0 = time.process_time()
    for start in range(0, len(items), batch):
        prepare(items[start : start + batch], NOW_US, options)
    return time.process_time() - t0


def invoice_cost(path: Path, customers: int, batch: int) -> tuple[Cost, int]:
    with fresh_store("postgres") as store:
        apply_catalog(store, invoice_catalog(customers), parse_rfc3339("2024-01-01T00:00:00Z"))
        ingestor_for(store, FixedClock(to_datetime(NOW_US))).ingest(
            read_file(str(path)), IngestOptions(origin="cli", batch_size=batch)
        )
        with store.read() as conn:
            billed = int(
                conn.execute(
                    text("SELECT COUNT(*) FROM events WHERE customer_id < :c"),
                    {"c": f"cust-{customers:04d}"},
                ).scalar_one()
            )
        clock = CpuClock(store)
        result = invoice_run.run(store, "2024-02", NOW_US, force=True)
        cost = clock.stop()
        assert len(result.issued) == customers, (len(result.issued), result.refused[:1])
        return cost, billed


def month_of_usage(customers: int, per_customer: int) -> bytes:
    """`customers` customers, each with events spread evenly over February (hourly
    windows filled all month): what a month-end invoice reads."""
    step = 29 * 86_400_000_000 // per_customer
    out = []
    for c in range(customers):
        for j in range(per_customer):
            e = event(f"m{c}-", j)
            e["customer_id"] = f"cust-{c:04d}"
            e["event_time"] = iso(FEB_US + j * step + c)
            out.append(ENCODER.encode(e))
    return b"\n".join(out) + b"\n"


def storage_bytes(store: Store) -> dict[str, int]:
    """On-disk bytes (heap + indexes + TOAST) of the event log and the usage index."""
    sizes: dict[str, int] = {}
    with store.read() as conn:
        for name in ("events", "event_keys", "usage_index"):
            sizes[name] = int(
                conn.execute(
                    text(
                        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                        "WHERE c.oid = to_regclass(:t) OR c.oid IN "
                        "(SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(:t))"
                    ),
                    {"t": name},
                ).scalar_one()
            )
        sizes["index rows"] = int(
            conn.execute(text("SELECT COUNT(*) FROM usage_index")).scalar_one()
        )
    return sizes


def per_event(seconds: float, n: int) -> str:
    us = seconds * 1e6 / n
    return f"{us:8.1f} µs  {1e6 / us if us > 0 else float('inf'):>10,.0f} /s per core"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU cost per event of each stage")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--invoice-customers", type=int, default=200)
    parser.add_argument("--ingest-only", action="store_true", help="skip the invoice stages")
    args = parser.parse_args(argv)
    n = args.events
    print(
        f"bench/capacity.py: {n:,} events, {CUSTOMERS:,} customers, batch {args.batch_size:,}, "
        f"PostgreSQL; CPU time of this process + its PostgreSQL backends; NOW={NOW}"
    )
    with TemporaryDirectory(prefix="meterline-capacity-") as tmp:
        path = Path(tmp) / "events.ndjson"
        path.write_bytes(ndjson("e", 0, n) + b"\n")
        validate = validate_cost(path, args.batch_size)
        bare, _ = ingest_cost(path, meters=False, batch=args.batch_size)
        metered, sizes = ingest_cost(path, meters=True, batch=args.batch_size)
        if not args.ingest_only:
            inv, billed = invoice_cost(path, args.invoice_customers, args.batch_size)
            month = Path(tmp) / "month.ndjson"
            month.write_bytes(month_of_usage(10, 4_000))
            inv_month, billed_month = invoice_cost(month, 10, args.batch_size)
    store_client = bare.client - validate
    index_client = metered.client - bare.client
    index_server = metered.server - bare.server
    print(f"validate (client)          {per_event(validate, n)}")
    print(f"store    (client)          {per_event(store_client, n)}")
    print(f"store    (server)          {per_event(bare.server, n)}")
    print(f"index    (client)          {per_event(index_client, n)}")
    print(f"index    (server)          {per_event(index_server, n)}")
    print(f"ingest, 2 meters, all      {per_event(metered.total, n)}")
    rows = sizes.pop("index rows")
    print(
        "storage  bytes per event: "
        + ", ".join(f"{name} {size / n:.0f}" for name, size in sizes.items())
        + f"; {rows:,} usage index rows, {sizes['usage_index'] / max(rows, 1):.0f} bytes each"
    )
    if args.ingest_only:
        return 0
    print(
        f"invoice  {args.invoice_customers} invoices over {billed:,} events: "
        f"client {inv.client:.2f} s, server {inv.server:.2f} s; "
        f"{inv.total * 1e3 / args.invoice_customers:.1f} ms CPU per invoice, "
        f"{per_event(inv.total, billed).strip()} (billed events)"
    )
    print(
        f"invoice  10 invoices, a whole month each ({billed_month:,} events, hourly windows): "
        f"{inv_month.total * 1e3 / 10:.1f} ms CPU per invoice"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
