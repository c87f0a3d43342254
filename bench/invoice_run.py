"""Month-end invoice run benchmark (issue 5): issue every invoice of a month.

Builds a store holding C customers x E events each in January 2024 (default
10,000 x 1,000 = 10M events) through the normal ingestion path (the Ingestor,
in big batches), moves the watermark past the period close, then times
``invoicing.issue(store, "2024-01", now)`` for all customers, and checks every
issued invoice against an independent computation of the synthetic month.

    .venv/bin/python bench/invoice_run.py --customers 500 --events-per-customer 1000
    .venv/bin/python bench/invoice_run.py --backend postgres --profile
    .venv/bin/python bench/invoice_run.py                          # full size, both backends

The catalog exercises every path an invoice line takes: a graduated count
meter, a grouped sum meter priced per package, a non-additive max meter, a flat
fee, a minimum spend and a mid-month price change (two segments). Events come
in event-time order across customers (the watermark advances as in production;
nothing is late). SQLite runs in a temporary file; PostgreSQL
(METERLINE_BENCH_PG, default the local server) in a database created for the
run and dropped afterwards. Results are discussed in docs/PERFORMANCE-billing.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from sqlalchemy import text

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from stores import fresh_store

LABEL = "2024-01"
MONTH_START = parse_rfc3339("2024-01-01T00:00:00Z")
# Events lie in [Jan 2, Jan 30): inside January whatever the customer's zone.
EVENTS_FROM = parse_rfc3339("2024-01-02T00:00:00Z")
EVENTS_TO = parse_rfc3339("2024-01-30T00:00:00Z")
PRICE_CHANGE = parse_rfc3339("2024-01-16T00:00:00Z")
MONTH_END = parse_rfc3339("2024-02-01T00:00:00Z")
# Loading happens on Feb 1st; a heartbeat later that day closes January.
LOAD_AT = parse_rfc3339("2024-02-01T05:00:00Z")
ISSUE_AT = parse_rfc3339("2024-02-01T12:00:00Z")
MODELS = ("small", "large", "vision")

TIERS_V1: list[dict[str, Any]] = [
    {"up_to": 100, "unit_price": "0.02"},
    {"up_to": 500, "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]
TIERS_V2: list[dict[str, Any]] = [
    {"up_to": 100, "unit_price": "0.018"},
    {"up_to": 500, "unit_price": "0.014"},
    {"up_to": None, "unit_price": "0.009"},
]
PACKAGE = (1000, {1: Decimal("0.50"), 2: Decimal("0.40")})  # size, price per version
STORAGE_PRICE_END = Decimal("0.12")  # max is priced with the version at period end
PLATFORM = Decimal("49.00")
MINIMUM = Decimal("30.00")
TAX = Decimal("0.20")


def catalog(customers: list[str]) -> dict[str, Any]:
    def version(label: str, start: str, tiers: list[dict[str, Any]], n: int) -> dict[str, Any]:
        v: dict[str, Any] = {
            "version": label,
            "effective_from": start,
            "charges": [
                {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": tiers},
                {
                    "code": "tok",
                    "meter": "tokens",
                    "model": "package",
                    "package_size": PACKAGE[0],
                    "package_price": str(PACKAGE[1][n]),
                },
                {
                    "code": "storage",
                    "meter": "storage",
                    "model": "per_unit",
                    "unit_price": "0.10" if n == 1 else str(STORAGE_PRICE_END),
                },
                {"code": "platform", "model": "flat", "amount": str(PLATFORM)},
            ],
        }
        if n == 2:
            v["minimum_spend"] = str(MINIMUM)
        return v

    return {
        "meters": [
            {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
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
        ],
        "price_books": [
            {
                "code": "standard",
                "currency": "USD",
                "versions": [
                    version("v1", "2023-12-01T00:00:00Z", TIERS_V1, 1),
                    version("v2", format_us(PRICE_CHANGE), TIERS_V2, 2),
                ],
            }
        ],
        "customers": [
            {
                "id": c,
                "name": f"Customer {c}",
                "currency": "USD",
                "tax_rate": str(TAX) if i % 4 == 0 else "0",
                "subscriptions": [{"price_book": "standard", "start": "2023-12-01T00:00:00Z"}],
            }
            for i, c in enumerate(customers)
        ],
    }


# --- the synthetic month and its independent bill ---------------------------


@dataclass
class Usage:
    """What one customer used, kept by the generator (the independent side)."""

    api: list[int] = field(default_factory=lambda: [0, 0])  # per segment
    tokens: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, segment)
    storage: Decimal | None = None
    events: int = 0


def customer_ids(n: int) -> list[str]:
    return [f"cust_{i:05d}" for i in range(n)]


def generate(
    customers: list[str], per_customer: int, chunk: int, seed: int, usage: dict[str, Usage]
) -> Iterator[list[Item]]:
    """NDJSON lines in event-time order, round-robin over customers; 70% api
    calls, 25% LLM calls (tokens by model), 5% storage samples (decimal GB-h)."""
    rng = random.Random(seed)
    n = len(customers) * per_customer
    span = EVENTS_TO - EVENTS_FROM
    out: list[Item] = []
    ncust = len(customers)
    for i in range(n):
        cid = customers[i % ncust]
        t = EVENTS_FROM + (span * i) // n
        seg = 0 if t < PRICE_CHANGE else 1
        u = usage[cid]
        u.events += 1
        r = rng.random()
        when = format_us(t)
        if r < 0.70:
            u.api[seg] += 1
            line = (
                f'{{"event_id":"a{i:09d}","customer_id":"{cid}","event_type":"api_call",'
                f'"event_time":"{when}","properties":{{"region":"eu"}},"source":"gateway"}}'
            )
        elif r < 0.95:
            tokens = int(rng.lognormvariate(6.5, 1.0))
            model = MODELS[rng.randrange(3)]
            key = (model, seg)
            u.tokens[key] = u.tokens.get(key, 0) + tokens
            line = (
                f'{{"event_id":"l{i:09d}","customer_id":"{cid}","event_type":"llm_call",'
                f'"event_time":"{when}","properties":{{"tokens":{tokens},"model":"{model}"}},'
                f'"source":"inference"}}'
            )
        else:
            gb = Decimal(rng.randrange(100, 50_000)) / 1000
            u.storage = gb if u.storage is None else max(u.storage, gb)
            line = (
                f'{{"event_id":"s{i:09d}","customer_id":"{cid}","event_type":"storage",'
                f'"event_time":"{when}","properties":{{"gb_hours":{gb}}},'
                f'"source":"storage-agent"}}'
            )
        out.append(Item(line.encode(), i + 1))
        if len(out) == chunk:
            yield out
            out = []
    if out:
        yield out


def _cents(x: Fraction | Decimal) -> Decimal:
    q = Decimal(x.numerator) / Decimal(x.denominator) if isinstance(x, Fraction) else x
    return q.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _graduated(units: list[int]) -> Fraction:
    """Tier position carries across the two segments (DESIGN §5)."""
    amount, position = Fraction(0), 0
    for seg, q in enumerate(units):
        tiers = TIERS_V1 if seg == 0 else TIERS_V2
        lower = 0
        for tier in tiers:
            upper = tier["up_to"]
            lo = max(position, lower)
            hi = position + q if upper is None else min(position + q, upper)
            if hi > lo:
                amount += (hi - lo) * Fraction(tier["unit_price"])
            lower = upper if upper is not None else lower
        position += q
    return amount


def expected_total(u: Usage, taxed: bool) -> Decimal:
    """The invoice total for one customer, computed without meterline's pricing."""
    usage_lines = [_cents(_graduated(u.api))]
    for model in MODELS:
        parts = [(u.tokens.get((model, s), 0), s + 1) for s in (0, 1)]
        if any(q for q, _ in parts):
            size = PACKAGE[0]
            usage_lines.append(
                _cents(
                    sum((((q + size - 1) // size) * PACKAGE[1][v] for q, v in parts), Decimal(0))
                )
            )
    usage_lines.append(_cents((u.storage or Decimal(0)) * STORAGE_PRICE_END))
    usage_sum = sum(usage_lines, Decimal(0))
    subtotal = usage_sum + PLATFORM + max(Decimal(0), MINIMUM - usage_sum)
    tax = _cents(subtotal * TAX) if taxed else Decimal(0)
    return subtotal + tax


# --- stores ---------------------------------------------------------------------


@dataclass
class Loaded:
    events: int
    generate_s: float
    ingest_s: float
    usage: dict[str, Usage]


def load(
    store: Store, customers: list[str], per_customer: int, batch_size: int, seed: int = 5
) -> Loaded:
    """Catalog, then the month through the Ingestor (timed apart from generating it)."""
    apply_catalog(store, catalog(customers), MONTH_START)
    ingestor = ingestor_for(store, FixedClock(to_datetime(LOAD_AT)))
    options = IngestOptions(origin="bench", batch_size=batch_size)
    usage = {c: Usage() for c in customers}
    gen_s = ingest_s = 0.0
    accepted = 0
    chunks = generate(customers, per_customer, batch_size, seed, usage)
    while True:
        t0 = time.perf_counter()
        items = next(chunks, None)
        t1 = time.perf_counter()
        gen_s += t1 - t0
        if items is None:
            break
        report = ingestor.ingest(items, options)
        ingest_s += time.perf_counter() - t1
        if report.rejected or report.duplicates:
            raise SystemExit(f"unexpected rejects: {report.rejects[:3]}")
        accepted += report.accepted
    t0 = time.perf_counter()
    close_period(store)
    if store.is_postgres:
        # What autovacuum does within a minute of a bulk load; without
        # statistics the planner cannot see that a seq range holds a few rows.
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    ingest_s += time.perf_counter() - t0
    return Loaded(accepted, gen_s, ingest_s, usage)


def close_period(store: Store) -> None:
    """A heartbeat at 11:00 received at 12:00: the other sources are idle by then,
    so the global watermark passes January's close (Feb 1 03:00 for 1d windows)."""
    clock = FixedClock(to_datetime(ISSUE_AT))
    beat = (
        b'{"event_id":"heartbeat","customer_id":"nobody","event_type":"ping",'
        b'"event_time":"2024-02-01T11:00:00Z","source":"gateway"}'
    )
    ingestor_for(store, clock).ingest([Item(beat, 1)], IngestOptions(origin="bench"))


def timed_issue(
    store: Store, profile: bool, top: int, customer: str | None = None, jobs: int = 1
) -> tuple[invoicing.IssueResult, float]:
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = invoicing.issue(store, LABEL, ISSUE_AT, customer, jobs=jobs)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    if profiler is not None:
        print_profile(profiler, top)
    return result, seconds


def print_profile(profiler: cProfile.Profile, top: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue(), flush=True)


def check(result: invoicing.IssueResult, loaded: Loaded, customers: list[str]) -> Decimal:
    """Every customer invoiced once, with the independently computed total and
    every loaded event accounted for on its lines."""
    if result.refused or result.already:
        raise SystemExit(f"refused {result.refused[:3]} already {result.already[:3]}")
    by_customer = {doc.body.customer_id: doc for doc in result.issued}
    if sorted(by_customer) != sorted(customers) or len(result.issued) != len(customers):
        raise SystemExit(f"{len(result.issued)} invoices for {len(customers)} customers")
    wrong = []
    grand = Decimal(0)
    for i, cid in enumerate(customers):
        body = by_customer[cid].body
        want = expected_total(loaded.usage[cid], taxed=i % 4 == 0)
        events = sum(line.usage.event_count for line in body.lines if line.usage is not None)
        if body.total != want or events != loaded.usage[cid].events:
            wrong.append((cid, body.text(body.total), str(want), events))
        grand += body.total
    if wrong:
        raise SystemExit(f"{len(wrong)} invoices differ from the independent bill: {wrong[:5]}")
    expected = sum(
        (expected_total(loaded.usage[c], taxed=i % 4 == 0) for i, c in enumerate(customers)),
        Decimal(0),
    )
    assert grand == expected
    return grand


def stored_events(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    customers = customer_ids(args.customers)
    with fresh_store(backend) as store:
        loaded = load(store, customers, args.events_per_customer, args.batch_size)
        print(
            f"{backend}: loaded {loaded.events:,} events in {loaded.ingest_s:.1f}s "
            f"({loaded.events / loaded.ingest_s:,.0f} events/s; generating them took "
            f"{loaded.generate_s:.1f}s more)",
            flush=True,
        )
        assert stored_events(store) == loaded.events + 1  # + the heartbeat
        result, seconds = timed_issue(store, args.profile, args.top)
        grand = check(result, loaded, customers)
        n = len(result.issued)
        print(
            f"{backend}: issued {n:,} invoices in {seconds:.1f}s ({n / seconds:,.1f} invoices/s, "
            f"{loaded.events / seconds:,.0f} events/s); all totals match the independent bill "
            f"(sum {grand:,})",
            flush=True,
        )
        again, again_s = timed_issue(store, False, 0)
        assert not again.issued and len(again.already) == n
        print(f"{backend}: issuing again is a no-op ({again_s:.1f}s)", flush=True)
        reconcile_s = timed_reconcile(store) if args.reconcile else None
    return {
        "backend": backend,
        "customers": args.customers,
        "events": loaded.events,
        "ingest_s": loaded.ingest_s,
        "issue_s": seconds,
        "rate": n / seconds,
        "reconcile_s": reconcile_s,
    }


def timed_reconcile(store: Store) -> float:
    """Reconcile the whole store (issue 7): it must finish and tie out at this size."""
    from meterline.services.reconcile import reconcile

    t0 = time.perf_counter()
    report = reconcile(store)
    seconds = time.perf_counter() - t0
    failed = [c.name for c in report.checks if not c.ok]
    print(
        f"reconcile: {seconds:.1f}s, {len(report.checks)} checks, "
        + ("the books tie out" if report.ok else f"FAILED: {', '.join(failed)}"),
        flush=True,
    )
    assert report.ok, report.to_json()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events-per-customer", type=int, default=1_000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--batch-size", type=int, default=50_000, help="events per ingest batch")
    parser.add_argument("--profile", action="store_true", help="cProfile the issue run")
    parser.add_argument("--top", type=int, default=30, help="profile rows to print")
    parser.add_argument("--reconcile", action="store_true", help="then time `reconcile`")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.2f}; {args.customers:,} customers x "
        f"{args.events_per_customer:,} events",
        flush=True,
    )
    rows = [run(b, args) for b in backends]
    print(f"\n{'backend':9} {'events':>11} {'ingest s':>9} {'issue s':>8} {'invoices/s':>11}")
    for r in rows:
        print(
            f"{r['backend']:9} {r['events']:11,} {r['ingest_s']:9.1f} {r['issue_s']:8.1f} "
            f"{r['rate']:11,.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
