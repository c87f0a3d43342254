"""Entitlement checks under concurrent HTTP load, and the ingest cost of alerts
(DESIGN §13, issue 15), each against a baseline measured in the same run.

1. Check latency: the store of bench/invoice_run.py (C customers x E events in
   January 2024) plus a feature `api` on meter api_calls and a metered
   entitlement per customer; `meterline serve` with the clock at 2024-01-31
   12:00 (January is the open period: ~E events per customer to read). P client
   processes each send R requests `GET /v1/customers/{random}/entitlements/api`;
   baseline: the same load on `GET /healthz` (no store). p50/p99 of each, and
   the ratio: once as fast as answers come (closed loop: the clients and the
   server saturate the machine, so latency is mostly queueing), once with each
   client paced at --rate requests/s (latency timed from each request's
   scheduled instant; see servers.timed_gets). Also the service time in process
   (no HTTP): `entitlements.check` one after another against a bare read of
   the knowledge seq. With --cached, on a copy of bench/cached_store.py's store.
2. Alert evaluation on ingest: the same events (a smaller C) ingested into three
   fresh stores: no alerts; every customer with a quantity alert and a metered
   entitlement; and with a spend alert too (rating the open period per touched
   customer per batch). Thresholds are never reached, so every batch evaluates
   them all (the worst case: a fired alert is not evaluated again in its
   period). Ratios of the ingest times against the store without alerts.

    .venv/bin/python bench/entitlements.py --customers 1000 --events-per-customer 1000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from invoice_run import LOAD_AT, MONTH_START, Usage, catalog, customer_ids, generate
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.service import IngestOptions
from meterline.services import entitlements
from meterline.services.catalog import apply_catalog
from meterline.store import sequence
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from servers import load_test, serving
from stores import cached_copy, fresh_store

KEY = "bench-admin-key"
NOW = "2024-01-31T12:00:00Z"


def with_entitlements(
    customers: list[str], limit: str | None, alerts: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The benchmark catalog plus a feature `api`; per customer a metered entitlement
    (unless `limit` is None) and the alerts named ("calls": quantity, "spend")."""
    doc = catalog(customers)
    doc["features"] = [{"code": "api", "name": "API calls", "meter": "api_calls"}]
    never = "1000000000"
    rules = {
        "calls": {"code": "calls", "meter": "api_calls", "threshold": never},
        "spend": {"code": "spend", "spend": never},
    }
    for c in doc["customers"]:
        if limit is not None:
            c["entitlements"] = [{"feature": "api", "limit": limit}]
        if alerts:
            c["alerts"] = [rules[a] for a in alerts]
    return doc


def ingest_all(store: Store, customers: list[str], per_customer: int, batch: int) -> float:
    ingestor = ingestor_for(store, FixedClock(to_datetime(LOAD_AT)))
    options = IngestOptions(origin="bench", batch_size=batch)
    usage = {c: Usage() for c in customers}
    seconds = 0.0
    for items in generate(customers, per_customer, batch, 5, usage):
        t0 = time.perf_counter()
        report = ingestor.ingest(items, options)
        seconds += time.perf_counter() - t0
        if report.rejected or report.duplicates:
            raise SystemExit(f"unexpected rejects: {report.rejects[:3]}")
    return seconds


def _percentiles(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
    }


def in_process(store: Store, customers: list[str], n: int) -> dict[str, Any]:
    """The check's service time without HTTP: `entitlements.check` on a read
    connection, one after another; baseline: the same read connection asking
    only for the knowledge seq (the least a check must do)."""
    now_us = parse_rfc3339(NOW)
    rng = random.Random(7)
    picks = [rng.choice(customers) for _ in range(n)]
    base, checks = [], []
    for c in picks[:50]:  # warm the caches
        with store.read() as conn:
            entitlements.check(conn, c, "api", now_us)
    for c in picks:
        t0 = time.perf_counter()
        with store.read() as conn:
            sequence.current(conn)
        t1 = time.perf_counter()
        with store.read() as conn:
            entitlements.check(conn, c, "api", now_us)
        t2 = time.perf_counter()
        base.append(t1 - t0)
        checks.append(t2 - t1)
    b, k = _percentiles(base), _percentiles(checks)
    return {
        "checks": n,
        "baseline_read": b,
        "check": k,
        "p50_ratio": round(k["p50_ms"] / b["p50_ms"], 2),
        "p99_ratio": round(k["p99_ms"] / b["p99_ms"], 2),
    }


def check_case(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    customers = customer_ids(args.customers)
    opened = (
        cached_copy(args.customers, args.events_per_customer)
        if args.cached
        else fresh_store(backend)
    )
    with opened as store:
        # Loaded before the entitlements are configured (loading is not what is
        # measured here; part 2 measures what alert evaluation adds to ingest).
        t0 = time.perf_counter()
        if not args.cached:
            apply_catalog(store, with_entitlements(customers, None), MONTH_START)
            ingest_all(store, customers, args.events_per_customer, args.batch_size)
        load_s = time.perf_counter() - t0
        apply_catalog(store, with_entitlements(customers, "20000"), MONTH_START)
        if store.is_postgres:
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        service = in_process(store, customers, args.requests * args.clients)
        with (
            tempfile.TemporaryDirectory() as tmp,
            serving(store.url, NOW, f"{KEY}:admin", Path(tmp) / "serve.log") as base,
        ):
            sample = httpx.get(
                f"{base}/v1/customers/{customers[0]}/entitlements/api",
                headers={"Authorization": f"Bearer {KEY}"},
            ).json()
            assert int(sample["usage"]) > 0, sample
            check_path = "/v1/customers/{customer}/entitlements/api"
            n = args.requests
            base_stats = load_test(base, KEY, "/healthz", customers, args.clients, n)
            check_stats = load_test(base, KEY, check_path, customers, args.clients, n)
            # the same clients each at --rate requests/s: latency below saturation
            paced = {
                "rate_per_client": args.rate,
                "baseline_healthz": load_test(
                    base, KEY, "/healthz", customers, args.clients, n, args.rate
                ),
                "entitlement_check": load_test(
                    base, KEY, check_path, customers, args.clients, n, args.rate
                ),
            }
    return {
        "backend": backend,
        "customers": args.customers,
        "events": args.customers * args.events_per_customer,
        "load_s": round(load_s, 1),
        "clients": args.clients,
        "sample": sample,
        "in_process": service,
        "baseline_healthz": base_stats,
        "entitlement_check": check_stats,
        "p50_ratio": round(check_stats["p50_ms"] / base_stats["p50_ms"], 2),
        "p99_ratio": round(check_stats["p99_ms"] / base_stats["p99_ms"], 2),
        "paced": paced,
    }


INGEST_CASES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "none": (None, ()),
    "quantity": ("1000000000", ("calls",)),  # a quantity alert and a metered entitlement
    "quantity_and_spend": ("1000000000", ("calls", "spend")),  # plus rating per batch
}


def ingest_case(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    customers = customer_ids(args.ingest_customers)
    times = {}
    for name, (limit, rules) in INGEST_CASES.items():
        with fresh_store(backend) as store:
            apply_catalog(store, with_entitlements(customers, limit, rules), MONTH_START)
            times[name] = ingest_all(store, customers, args.events_per_customer, args.batch_size)
            with store.read() as conn:
                n = conn.exec_driver_sql("SELECT COUNT(*) FROM alerts").scalar_one()
            assert n == 0, "thresholds are never reached: every batch evaluates them all"
    events = len(customers) * args.events_per_customer
    base = times["none"]
    return {
        "backend": backend,
        "customers": len(customers),
        "events": events,
        "batch_size": args.batch_size,
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "events_per_s": {k: round(events / v) for k, v in times.items()},
        "ratio_vs_none": {k: round(v / base, 2) for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--events-per-customer", type=int, default=1000)
    p.add_argument("--ingest-customers", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=500, help="per client")
    p.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="requests/s per client for the paced pass (latency below saturation)",
    )
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument(
        "--cached",
        action="store_true",
        help="check against a copy of bench/cached_store.py's SQLite store (built once)",
    )
    args = p.parse_args(argv)
    out: dict[str, Any] = {"uptime": os.getloadavg()}
    if not args.skip_check:
        out["check"] = check_case(args.backend, args)
        print(json.dumps(out["check"], indent=1), flush=True)
    if not args.skip_ingest:
        out["ingest"] = ingest_case(args.backend, args)
        print(json.dumps(out["ingest"], indent=1), flush=True)
    out["uptime_after"] = os.getloadavg()
    print(json.dumps({"load_average": [out["uptime"], out["uptime_after"]]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
