"""A small billing world for invoice and correction tests."""

from __future__ import annotations

from typing import Any

from tests.support import event, ingest

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store

# The graduated book of DESIGN §5.
TIERS = [
    {"up_to": 1000, "unit_price": "0.02"},
    {"up_to": 10000, "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]
V1 = {
    "version": "v1",
    "effective_from": "2024-01-01T00:00:00Z",
    "charges": [{"code": "api", "meter": "api_calls", "model": "graduated", "tiers": TIERS}],
}


def catalog(
    *versions: dict[str, Any], customers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "price_books": [
            {"code": "standard", "currency": "USD", "versions": list(versions or (V1,))}
        ],
        "customers": customers
        if customers is not None
        else [
            {
                "id": "acme",
                "name": "Acme Corp",
                "currency": "USD",
                "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
            }
        ],
    }


def clock(t: str) -> FixedClock:
    return FixedClock(to_datetime(parse_rfc3339(t)))


# Receiving time: February 1st after the January period has closed.
FEB = "2024-02-01T12:00:00Z"
FEB_US = parse_rfc3339(FEB)


def setup(store: Store, doc: dict[str, Any] | None = None) -> None:
    apply_catalog(store, doc or catalog(), parse_rfc3339("2024-01-01T00:00:00Z"))


def calls(n: int, prefix: str = "c", customer: str = "acme", day: int = 10) -> list[dict[str, Any]]:
    return [
        event(
            f"{prefix}{i}",
            customer=customer,
            time=f"2024-01-{day:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        )
        for i in range(n)
    ]


def close_january(store: Store) -> None:
    """A heartbeat from the gateway that moves the watermark past the close."""
    ingest(
        store,
        clock(FEB),
        [event("heartbeat", customer="nobody", type_="ping", time="2024-02-01T11:00:00Z")],
    )
