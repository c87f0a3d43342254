"""Progressive billing cost (issue 14): what interim invoices add to a month-end run.

Two SQLite stores in one run, the same C customers x E events in January 2024, the
same per-unit book; in store P every subscription has a threshold, in store O none.
Timed: `issue_interims` on P while January is open (one interim per customer), the
month-end `invoicing.issue` on P (final invoices netting the interims) and on O
(ordinary invoices, the baseline). Each figure is a ratio against the baseline
measured in the same run; absolute seconds are printed too.

    .venv/bin/python bench/progressive.py --customers 200 --events-per-customer 200
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.progressive import issue_interims
from meterline.store.database import Store, open_store
from meterline.wiring import ingestor_for

FEB = "2024-02-01T12:00:00Z"


def _catalog(customers: int, threshold: str | None) -> dict[str, Any]:
    extra = {"threshold": threshold} if threshold else {}
    return {
        "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "price_books": [
            {
                "code": "usage",
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
                                "unit_price": "0.10",
                            },
                            {"code": "platform", "model": "flat", "amount": "10.00"},
                        ],
                    }
                ],
            }
        ],
        "customers": [
            {
                "id": f"c{i:05d}",
                "name": f"c{i}",
                "currency": "USD",
                "subscriptions": [
                    {"price_book": "usage", "start": "2024-01-01T00:00:00Z", **extra}
                ],
            }
            for i in range(customers)
        ],
    }


def _build(path: str, customers: int, per: int, threshold: str | None) -> Store:
    store = open_store(f"sqlite:///{path}")
    store.upgrade()
    apply_catalog(store, _catalog(customers, threshold), parse_rfc3339("2024-01-01T00:00:00Z"))
    lines = [
        (
            f'{{"event_id":"e{c}_{j}","customer_id":"c{c:05d}","event_type":"api_call",'
            f'"event_time":"2024-01-{1 + j % 28:02d}T{j % 24:02d}:{j % 60:02d}:00Z"}}'
        ).encode()
        for j in range(per)
        for c in range(customers)
    ]
    lines.append(
        b'{"event_id":"hb","customer_id":"nobody","event_type":"ping",'
        b'"event_time":"2024-01-31T23:00:00Z"}'
    )
    clock = FixedClock(to_datetime(parse_rfc3339(FEB)))
    items = [Item(line, i + 1) for i, line in enumerate(lines)]
    ingestor_for(store, clock).ingest(items, IngestOptions(origin="bench", batch_size=5000))
    return store


def _timed(label: str, work: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - t0
    print(f"{label:<44} {seconds:8.3f} s")
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--events-per-customer", type=int, default=200)
    args = parser.parse_args()
    c, e = args.customers, args.events_per_customer
    with tempfile.TemporaryDirectory() as tmp:
        ordinary = _build(os.path.join(tmp, "o.db"), c, e, None)
        progressive = _build(os.path.join(tmp, "p.db"), c, e, "1.00")
        now = parse_rfc3339(FEB)
        # January is still open at FEB for the interim check (no final invoice yet).
        t_interim, interims = _timed(
            "issue_interims (progressive store)", lambda: issue_interims(progressive, now)
        )
        # Move both watermarks past the close, then the month-end runs.
        for store in (ordinary, progressive):
            clock = FixedClock(to_datetime(parse_rfc3339("2024-02-02T12:00:00Z")))
            item = Item(
                b'{"event_id":"hb2","customer_id":"nobody","event_type":"ping",'
                b'"event_time":"2024-02-02T11:00:00Z"}',
                1,
            )
            ingestor_for(store, clock).ingest([item], IngestOptions(origin="bench"))
        later = parse_rfc3339("2024-02-02T12:00:00Z")
        t_base, base = _timed(
            "invoice issue, ordinary (baseline)",
            lambda: invoicing.issue(ordinary, "2024-01", later),
        )
        t_final, final = _timed(
            "invoice issue, finals netting interims",
            lambda: invoicing.issue(progressive, "2024-01", later),
        )
        assert len(interims.issued) == c and len(base.issued) == c == len(final.issued)
        assert all(d.body.role_of == "final" for d in final.issued)
        print(f"customers {c}, events per customer {e}")
        print(f"final run / ordinary run          {t_final / t_base:6.2f}x")
        print(f"interim run / ordinary run        {t_interim / t_base:6.2f}x")
        ordinary.dispose()
        progressive.dispose()


if __name__ == "__main__":
    main()
