"""The balance's open-period amount is kept per rating basis (DESIGN §13: a balance
served from the index, fast): it must be reused while nothing that can change the
customer's rating is recorded, and recomputed as soon as something is. Every answer
is compared with a rating made from scratch. On both backends."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.billing_support import TIERS, V1, calls, catalog, clock, setup
from tests.support import ingest

from meterline.domain.timestamps import parse_rfc3339
from meterline.services import credits
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store import sequence
from meterline.store.database import Store
from meterline.store.facts import facts

NOW = parse_rfc3339("2024-01-20T00:00:00Z")
SUBSCRIBED = [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}]
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
    cheaper: dict[str, Any] = {
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
    apply_catalog(store, catalog(V1, cheaper, customers=CUSTOMERS), NOW)
    assert _due(store) == Decimal("0.09") == _fresh_due(store)


def test_a_customer_change_renews_the_rating(store: Store) -> None:
    setup(store, catalog(customers=CUSTOMERS))
    ingest(store, clock("2024-01-19T00:00:00Z"), calls(10))
    assert _due(store) == Decimal("0.20")
    taxed = [{**CUSTOMERS[0], "tax_rate": "0.10"}, CUSTOMERS[1]]
    apply_catalog(store, catalog(customers=taxed), NOW)
    assert _due(store) == Decimal("0.22") == _fresh_due(store)
