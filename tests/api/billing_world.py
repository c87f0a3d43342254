"""A small billing world, built through the HTTP API of a live server.

The server's clock is pinned at 2024-02-10 (tests/api/server.py NOW), so
January 2024 is closed once a heartbeat moves the watermark into February.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from tests.api.server import ADMIN_KEY, INGEST_KEY, Server
from tests.support import event

JSON = {"Content-Type": "application/json"}

TIERS = [
    {"up_to": 1000, "unit_price": "0.02"},
    {"up_to": 10000, "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]

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
    ],
    "price_books": [
        {
            "code": "standard",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [
                        {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": TIERS},
                        {"code": "platform", "model": "flat", "amount": "49.00"},
                        {
                            "code": "tok",
                            "meter": "tokens",
                            "model": "package",
                            "package_size": 1000,
                            "package_price": "0.50",
                        },
                    ],
                }
            ],
        }
    ],
    "customers": [
        {
            "id": "acme",
            "name": "Acme Corp",
            "currency": "USD",
            "tax_rate": "0.20",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        },
        {
            "id": "globex",
            "name": "Globex",
            "currency": "USD",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        },
    ],
}

CATALOG_YAML = """\
meters:
  - {code: api_calls, event_type: api_call, aggregation: count}
  - {code: tokens, event_type: llm_call, aggregation: sum, property: tokens, group_by: [model]}
price_books:
  - code: standard
    currency: USD
    versions:
      - version: v1
        effective_from: "2024-01-01T00:00:00Z"
        charges:
          - {code: api, meter: api_calls, model: graduated, tiers: [
              {up_to: 1000, unit_price: "0.02"}, {up_to: 10000, unit_price: "0.015"},
              {up_to: null, unit_price: "0.01"}]}
          - {code: platform, model: flat, amount: "49.00"}
          - {code: tok, meter: tokens, model: package, package_size: 1000, package_price: "0.50"}
customers:
  - id: acme
    name: Acme Corp
    currency: USD
    tax_rate: "0.20"
    subscriptions:
      - {price_book: standard, start: "2024-01-01T00:00:00Z"}
  - id: globex
    name: Globex
    currency: USD
    subscriptions:
      - {price_book: standard, start: "2024-01-01T00:00:00Z"}
"""


def admin(server: Server) -> httpx.Client:
    return server.client(ADMIN_KEY)


def apply_catalog(http: httpx.Client, catalog: dict[str, Any] | None = None) -> httpx.Response:
    response = http.post("/v1/catalog", content=json.dumps(catalog or CATALOG), headers=JSON)
    assert response.status_code == 200, response.text
    return response


def ingest(server: Server, events: list[dict[str, Any]]) -> dict[str, Any]:
    with server.client(INGEST_KEY) as http:
        response = http.post("/v1/events", content=json.dumps(events), headers=JSON)
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    return summary


def api_calls(n: int, prefix: str = "c", customer: str = "acme") -> list[dict[str, Any]]:
    return [
        event(
            f"{prefix}{i}",
            customer=customer,
            time=f"2024-01-{10 + i % 5:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        )
        for i in range(n)
    ]


def token_calls(n: int, prefix: str = "t", customer: str = "acme") -> list[dict[str, Any]]:
    return [
        event(
            f"{prefix}{i}",
            customer=customer,
            type_="llm_call",
            time="2024-01-11T10:00:00Z",
            props={"tokens": 700, "model": "big" if i % 2 else "small"},
        )
        for i in range(n)
    ]


HEARTBEAT = event("heartbeat", customer="nobody", type_="ping", time="2024-02-09T00:00:00Z")


def close_january(server: Server, *sources: str) -> None:
    """Heartbeats that move the watermark past January's close. The global
    watermark is the least over active sources, so every source that sent
    January usage must move on."""
    beats = [{**HEARTBEAT, "source": source} for source in sources]
    ingest(server, [HEARTBEAT, *beats])


def january_world(server: Server, calls: int = 30, tokens: int = 5) -> None:
    """Catalog, usage for acme (and one call for globex), January closed."""
    with admin(server) as http:
        apply_catalog(http)
    ingest(server, [*api_calls(calls), *token_calls(tokens), *api_calls(1, "g", "globex")])
    close_january(server)


def issue_january(server: Server, customer: str = "acme") -> dict[str, Any]:
    with admin(server) as http:
        response = http.post("/v1/invoices/issue", json={"period": "2024-01", "customer": customer})
    assert response.status_code == 200, response.text
    [doc] = response.json()
    assert isinstance(doc, dict)
    return doc
