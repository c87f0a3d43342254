"""Credit balance under concurrent load (issue 15): `GET /v1/customers/{id}/balance`
p50/p99 against `GET /healthz` measured in the same run, under the same load.

A store of C customers x E events in January 2024 (bench/invoice_run.py's month:
loaded through the Ingestor, or with --cached a copy of bench/cached_store.py's
store), every customer granted two credit grants (a paid top-up with a rollover
cap and an expiring promotion), served with the clock pinned on January 31st (so
the open period is January and `projected` needs the customer's whole month
rated, as known now, from the usage index). T client threads each send R
requests to random customers: /healthz (the baseline); the balance with no
projection (each first read rates the period); then, after `credits refresh`
filled the balance projection, other customers (each read checks and uses the
projection, as with `credits refresh --follow` running); and those again (kept in
the server's memory). In-process passes measure the same without HTTP.

    .venv/bin/python bench/balance.py                             # 1,000 x 1,000, SQLite
    .venv/bin/python bench/balance.py --cached --customers 10000  # the 10M store
    .venv/bin/python bench/balance.py --backend postgres --customers 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from invoice_run import MONTH_START, customer_ids, load
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import credits
from meterline.store import sequence
from servers import load_test, serving
from stores import cached_copy, fresh_store

NOW = "2024-01-31T00:00:00Z"
KEY = "bench-admin-0c5e"


def grant_all(store: Any, customers: list[str]) -> float:
    t0 = time.perf_counter()
    for i, c in enumerate(customers):
        credits.grant(store, c, "25.00", MONTH_START, rollover="10.00", grant_id=f"top{i}")
        credits.grant(
            store,
            c,
            "5.00",
            MONTH_START,
            kind="promotional",
            expires_at="2024-03-01T00:00:00Z",
            grant_id=f"promo{i}",
        )
    return time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def in_process(store: Any, customers: list[str], n: int) -> dict[str, Any]:
    """The balance's service time without HTTP, one call after another, each pass
    over n random customers: `cold` (nothing kept: every call rates the open
    period), `memory` (the same calls again: kept in this process), then, after
    `credits.refresh` has filled the balance projection, `projected` (other
    customers, nothing in memory: the projection's row is checked and used).
    The baseline is a bare read of the knowledge seq on the same kind of connection."""
    now_us = parse_rfc3339(NOW)
    rng = random.Random(11)
    picks = [rng.choice(customers) for _ in range(n)]
    others = [rng.choice(customers) for _ in range(n)]
    base: list[float] = []
    passes: dict[str, list[float]] = {"cold": [], "memory": [], "projected": []}

    def run(name: str, who: list[str]) -> None:
        for c in who:
            t0 = time.perf_counter()
            with store.read() as conn:
                sequence.current(conn)
            t1 = time.perf_counter()
            credits.balance(store, c, now_us)
            t2 = time.perf_counter()
            base.append((t1 - t0) * 1000)
            passes[name].append((t2 - t1) * 1000)

    credits._due_cache.clear()
    run("cold", picks)
    run("memory", picks)
    t0 = time.perf_counter()
    done = credits.refresh(store, now_us)
    refresh_s = time.perf_counter() - t0
    credits._due_cache.clear()
    run("projected", others)

    def pcts(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3)}

    return {
        "calls": n,
        "baseline_read": pcts(base),
        **{name: pcts(xs) for name, xs in passes.items()},
        "refresh": {"s": round(refresh_s, 1), "rated": done.rated, "failed": len(done.failed)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--events-per-customer", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4, help="client processes")
    ap.add_argument("--rate", type=float, default=50.0, help="requests/s per client, paced pass")
    ap.add_argument("--requests", type=int, default=250, help="per thread")
    ap.add_argument("--batch-size", type=int, default=20_000)
    ap.add_argument(
        "--cached",
        action="store_true",
        help="a copy of bench/cached_store.py's SQLite store of C x E events (built once)",
    )
    args = ap.parse_args(argv)
    customers = customer_ids(args.customers)
    opened = (
        cached_copy(args.customers, args.events_per_customer)
        if args.cached
        else fresh_store(args.backend)
    )
    with opened as store:
        t0 = time.perf_counter()
        events = (
            args.customers * args.events_per_customer
            if args.cached
            else load(store, customers, args.events_per_customer, args.batch_size).events
        )
        load_s = time.perf_counter() - t0
        grant_s = grant_all(store, customers)
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "serve.log"
            with serving(store.url, NOW, f"{KEY}:admin", log) as base:
                path = "/v1/customers/{customer}/balance"
                n, clients = args.requests, args.threads

                def run(p: str, seed: int, rate: float = 0.0) -> dict[str, float]:
                    return load_test(base, KEY, p, customers, clients, n, rate, seed)

                healthz = run("/healthz", 1)
                # no projection yet: every first read of a customer rates its period
                no_projection = run(path, 1)
                # fills the projection (and measures the in-process passes)
                service = in_process(store, customers, clients * n)
                # other customers (other seeds): each read checks and uses the projection
                projected = run(path, 100)
                # the same again: kept in the server's memory for the same basis
                again = run(path, 100)
                # each client at --rate requests/s, other customers: below saturation
                paced = {
                    "rate_per_client": args.rate,
                    "baseline_healthz": run("/healthz", 1, args.rate),
                    "balance": run(path, 200, args.rate),
                }
                sample = httpx.get(
                    base + path.format(customer=customers[0]),
                    headers={"Authorization": f"Bearer {KEY}"},
                ).json()
    result = {
        "backend": args.backend,
        "customers": args.customers,
        "events": events,
        "load_s": round(load_s, 1),
        "grants_s": round(grant_s, 1),
        "clients": args.threads,
        "in_process": service,
        "baseline_healthz": healthz,
        "balance_no_projection": no_projection,
        "balance": projected,
        "balance_again": again,
        "ratio_p50": round(projected["p50_ms"] / healthz["p50_ms"], 1),
        "ratio_p99": round(projected["p99_ms"] / healthz["p99_ms"], 1),
        "paced": paced,
        "sample": {k: sample[k] for k in ("available", "projected", "open_period")},
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
