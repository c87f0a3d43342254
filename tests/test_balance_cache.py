"""The balance's open-period amount is kept per rating basis (DESIGN §13: a balance
served from the index, fast): it must be reused while nothing that can change the
customer's rating is recorded, and recomputed as soon as something is. Every answer
is compared with a rating made from scratch. On both backends."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from tests.api.server import clean_env, meterline
from tests.billing_support import TIERS, V1, calls, catalog, clock, setup
from tests.support import ingest

from meterline.domain.timestamps import parse_rfc3339
from meterline.services import credits
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store import balance_projections, sequence
from meterline.store.database import Store
from meterline.store.facts import facts

NOW = parse_rfc3339("2024-01-20T00:00:00Z")
SUBSCRIBED = [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}]
# The first tier's price halved, retroactively to January 1st (a correction of v1).
PRICE_FIX: dict[str, Any] = {
    "version": "v2",
    "effective_from": "2024-01-01T00:00:00Z",
    "supersedes": "v1",
    "reason": "price fix",
    "charges": [
        {
            "code": "api",
            "meter": "api_calls",
            "model": "graduated",
            "tiers": [{**TIERS[0], "unit_price": "0.01"}, *TIERS[1:]],
        }
    ],
}
CUSTOMERS = [
    {"id": "acme", "name": "Acme", "currency": "USD", "subscriptions": SUBSCRIBED},
    {"id": "other", "name": "Other", "currency": "USD", "subscriptions": SUBSCRIBED},
]


def _due(store: Store) -> Decimal:
    return Decimal(credits.balance(store, "acme", NOW)["open_period"]["due"])


def _fresh_due(store: Store) -> Decimal:
    """The same answer with nothing kept: the reference every cached answer must equal."""
    credits._due_cache.clear()
    return _due(store)


def _basis(store: Store) -> tuple[int, ...]:
    with store.read() as conn:
        return facts(conn).rating_basis("acme", sequence.current(conn))


def _cached(store: Store) -> int:
    return sum(1 for key in credits._due_cache if key[0] == store.url)


def test_other_customers_traffic_keeps_the_rating_and_own_traffic_renews_it(
    store: Store,
) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    at = clock("2024-01-19T00:00:00Z")
    ingest(store, at, calls(10))
    first = _fresh_due(store)
    assert first == Decimal("0.20")  # 10 x 0.02
    basis = _basis(store)

    ingest(store, at, calls(50, prefix="o", customer="other"))
    assert _basis(store) == basis  # the store moved on, acme's basis did not
    before = _cached(store)
    assert _due(store) == first
    assert _cached(store) == before  # reused, not rated again
    assert _fresh_due(store) == first

    ingest(store, at, calls(5, prefix="late", day=3))  # acme's own (earlier) usage
    assert _basis(store) != basis
    assert _due(store) == Decimal("0.30") == _fresh_due(store)


def test_a_retraction_and_a_price_change_renew_the_rating(store: Store) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    ingest(store, clock("2024-01-19T00:00:00Z"), calls(10))
    assert _due(store) == Decimal("0.20")
    retract_event(store, "default", "c0", "sent twice", NOW)
    assert _due(store) == Decimal("0.18") == _fresh_due(store)
    apply_catalog(store, catalog(V1, PRICE_FIX, customers=CUSTOMERS), NOW)
    assert _due(store) == Decimal("0.09") == _fresh_due(store)


def test_a_customer_change_renews_the_rating(store: Store) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    ingest(store, clock("2024-01-19T00:00:00Z"), calls(10))
    assert _due(store) == Decimal("0.20")
    taxed = [{**CUSTOMERS[0], "tax_rate": "0.10"}, CUSTOMERS[1]]
    apply_catalog(store, catalog(customers=taxed), NOW)
    assert _due(store) == Decimal("0.22") == _fresh_due(store)


def _stored_due(store: Store, customer: str = "acme") -> Decimal | None:
    with store.read() as conn:
        found = balance_projections.read(conn, customer, "2024-01")
    return None if found is None else found[1]


def test_refresh_projects_every_customer_and_the_balance_reads_the_projection(
    store: Store,
) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    at = clock("2024-01-19T00:00:00Z")
    ingest(store, at, calls(10))
    ingest(store, at, calls(20, prefix="o", customer="other"))
    done = credits.refresh(store, NOW)
    assert (done.rated, done.checked, done.failed) == (2, 2, {})
    assert _stored_due(store) == Decimal("0.20")
    assert _stored_due(store, "other") == Decimal("0.40")
    assert credits.refresh(store, NOW).rated == 0  # every row current: nothing re-rated

    # The balance takes the projected amount when its basis is current (shown by
    # planting a different amount under the same basis: it is what comes back).
    with store.write() as conn:
        conn.execute(text("UPDATE balance_projections SET due = '7.77' WHERE customer_id = 'acme'"))
    credits._due_cache.clear()
    assert _due(store) == Decimal("7.77")

    # New usage moves the basis: the stale row is ignored (rated now, exactly) ...
    ingest(store, at, calls(5, prefix="n"))
    credits._due_cache.clear()
    assert _due(store) == Decimal("0.30")
    # ... and the next pass from the previous K re-rates only that customer.
    again = credits.refresh(store, NOW, since=done.known_at)
    assert (again.rated, again.checked) == (1, 1)
    assert _stored_due(store) == Decimal("0.30")
    assert _stored_due(store, "other") == Decimal("0.40")


def test_a_price_change_re_rates_everyone_on_the_next_pass(store: Store) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    at = clock("2024-01-19T00:00:00Z")
    ingest(store, at, calls(10))
    ingest(store, at, calls(20, prefix="o", customer="other"))
    first = credits.refresh(store, NOW)
    apply_catalog(store, catalog(V1, PRICE_FIX, customers=CUSTOMERS), NOW)
    again = credits.refresh(store, NOW, since=first.known_at)
    assert (again.rated, again.checked) == (2, 2)
    assert (_stored_due(store), _stored_due(store, "other")) == (Decimal("0.10"), Decimal("0.20"))
    credits._due_cache.clear()
    assert _due(store) == Decimal("0.10") == _fresh_due(store)


def test_refresh_cli_reports_what_it_rated(store: Store) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    ingest(store, clock("2024-01-19T00:00:00Z"), calls(10))
    out = meterline(
        "--db",
        store.url,
        "--now",
        "2024-01-20T00:00:00Z",
        "credits",
        "refresh",
        "--json",
        env=clean_env(None),
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["rated"], report["checked"], report["failed"]) == (2, 2, {})
    assert _stored_due(store) == Decimal("0.20")
    assert _stored_due(store, "other") == Decimal("0.00")
