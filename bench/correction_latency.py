"""Correction latency benchmark (issue 6): late event in, correction document out.

One customer with 1M events in January 2024 (the catalog and generator of
bench/invoice_run.py: graduated count meter, grouped sum meter, max meter, flat
fee, minimum spend, a mid-month price change), January closed and invoiced.
Then, repeatedly: ingest one batch holding one late API call for January
through the normal Ingestor, and run ``rerate(store, now, customer, "2024-01")``
until its debit note is issued. Latency = ingest time + rerate time; the p50 over
the repetitions is reported, with the minimum and maximum.

    .venv/bin/python bench/correction_latency.py                       # 1M events, both backends
    .venv/bin/python bench/correction_latency.py --events 100000 --backend sqlite --profile
    .venv/bin/python bench/correction_latency.py --cold                # as a fresh process

Since issue 17 re-rating reads the usage index (services/measuring.py), so a
long-running process and a fresh one do the same work; `--cold` still clears
the per-process measurement kept by the legacy format-1 path
(services/invoicing.py `measure_legacy`), which only verifying old documents uses.
bench/index_bench.py measures re-rating as a fresh process.

Every correction is checked: one debit note per late event, with the API line's
quantity delta +1, and at the end invoice + corrections == the invoice computed
from scratch as known now (DESIGN §8).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import sys
import time
from decimal import Decimal
from typing import Any

from invoice_run import (
    ISSUE_AT,
    LABEL,
    load,
    print_profile,
    timed_issue,
)
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_SECOND, format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions
from meterline.services import corrections, invoicing
from meterline.store import sequence
from meterline.store.database import Store
from meterline.wiring import ingestor_for
from stores import fresh_store

CUSTOMER = "cust_00000"
LATE_AT = parse_rfc3339("2024-01-20T10:00:00Z")


def late_event(i: int) -> Item:
    when = format_us(LATE_AT + i * US_PER_SECOND)
    line = (
        f'{{"event_id":"late-{i:04d}","customer_id":"{CUSTOMER}","event_type":"api_call",'
        f'"event_time":"{when}","properties":{{"region":"eu"}},"source":"gateway"}}'
    )
    return Item(line.encode(), 1)


def one_correction(
    store: Store, i: int, profiler: cProfile.Profile | None, cold: bool = False
) -> tuple[float, float, corrections.RerateResult]:
    now = ISSUE_AT + (i + 1) * 60 * US_PER_SECOND
    ingestor = ingestor_for(store, FixedClock(to_datetime(now)))
    if cold:  # as a fresh process would: no measurement kept from earlier
        invoicing._measured.clear()
    t0 = time.perf_counter()
    report = ingestor.ingest([late_event(i)], IngestOptions(origin="bench"))
    t1 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    result = corrections.rerate(store, now, customer=CUSTOMER, period=LABEL)
    if profiler is not None:
        profiler.disable()
    t2 = time.perf_counter()
    assert report.accepted == 1, report.to_dict()
    return t1 - t0, t2 - t1, result


def check_note(result: corrections.RerateResult) -> None:
    """One correction: +1 API call; a debit note, or a zero-total credit note when
    the call's 0.009 does not move the rounded line (the service's choice for 0)."""
    assert len(result.issued) == 1, result
    note = result.issued[0]
    total = note.body.total
    assert (note.kind, total > 0) in (("debit_note", True), ("credit_note", False)), note.kind
    assert total >= 0, total
    deltas = {line.charge: line.quantity or Decimal(0) for line in note.body.lines}
    assert deltas.get("api") == 1, deltas
    assert "1 events received after" in " ".join(note.body.reasons), note.body.reasons


def check_sum(store: Store) -> None:
    """Invoice + every correction == the invoice computed from scratch now."""
    with store.read() as conn:
        k = sequence.current(conn)
        fresh = invoicing.compute_body(conn, CUSTOMER, LABEL, k)
    docs = invoicing.list_all(store, CUSTOMER)
    billed = sum((d.body.total for d in docs), Decimal(0))
    assert billed == Decimal(fresh["total"]), (billed, fresh["total"])


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with fresh_store(backend) as store:
        loaded = load(store, [CUSTOMER], args.events, args.batch_size)
        print(f"{backend}: loaded {loaded.events:,} events in {loaded.ingest_s:.1f}s", flush=True)
        issued, issue_s = timed_issue(store, False, 0, CUSTOMER)
        assert len(issued.issued) == 1
        print(f"{backend}: invoice {issued.issued[0].number} issued in {issue_s:.2f}s", flush=True)
        rows = []
        for i in range(args.repeat):
            profiler = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
            ingest_s, rerate_s, result = one_correction(store, i, profiler, args.cold)
            check_note(result)
            rows.append((ingest_s, rerate_s))
            print(
                f"{backend}: #{i + 1} ingest {ingest_s * 1000:7.1f} ms  rerate "
                f"{rerate_s * 1000:7.1f} ms  total {(ingest_s + rerate_s) * 1000:7.1f} ms  "
                f"-> {result.issued[0].number}",
                flush=True,
            )
            if profiler is not None:
                print_profile(profiler, args.top)
        check_sum(store)
    totals = [a + b for a, b in rows]
    out: dict[str, Any] = {
        "backend": backend,
        "events": loaded.events,
        "p50": statistics.median(totals),
        "min": min(totals),
        "max": max(totals),
        "ingest_p50": statistics.median(a for a, _ in rows),
        "rerate_p50": statistics.median(b for _, b in rows),
        "issue_s": issue_s,
    }
    print(
        f"{backend}: latency p50 {out['p50'] * 1000:.0f} ms (ingest {out['ingest_p50'] * 1000:.0f} "
        f"ms + rerate {out['rerate_p50'] * 1000:.0f} ms), min {out['min'] * 1000:.0f} ms, "
        f"max {out['max'] * 1000:.0f} ms over {len(rows)} corrections; checks passed",
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the period")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--repeat", type=int, default=7, help="late events (corrections)")
    parser.add_argument("--batch-size", type=int, default=50_000, help="events per load batch")
    parser.add_argument("--profile", action="store_true", help="cProfile the last rerate")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="forget kept measurements before each correction (a fresh process, e.g. the CLI)",
    )
    parser.add_argument("--top", type=int, default=30, help="profile rows to print")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{os.getloadavg()[0]:.2f}; 1 customer x {args.events:,} events, "
        f"{args.repeat} corrections{' (cold: no kept measurement)' if args.cold else ''}",
        flush=True,
    )
    rows = [run(b, args) for b in backends]
    print(
        f"\n{'backend':9} {'events':>10} {'issue s':>8} {'p50 ms':>7} {'ingest':>7} {'rerate':>7}"
    )
    for r in rows:
        print(
            f"{r['backend']:9} {r['events']:10,} {r['issue_s']:8.2f} {r['p50'] * 1000:7.0f} "
            f"{r['ingest_p50'] * 1000:7.0f} {r['rerate_p50'] * 1000:7.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
