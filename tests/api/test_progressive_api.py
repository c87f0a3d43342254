"""Progressive billing and the plan change over HTTP, equal to the CLI's `--json`.

The server's clock is 2024-02-10: February is the open period. acme is billed
1.00 per call with a threshold of 100.00; 120 calls in early February are due.
"""

from __future__ import annotations

import copy
import html
import json
from typing import Any

from tests.api.billing_world import JSON, admin, apply_catalog, ingest
from tests.api.server import NOW, Server, meterline
from tests.api.test_console_http import browser, log_in
from tests.support import event

from meterline.store.database import Store

CATALOG: dict[str, Any] = {
    "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
    "price_books": [
        {
            "code": code,
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [
                        {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": p}
                    ],
                }
            ],
        }
        for code, p in (("metered", "1.00"), ("pro", "0.50"))
    ],
    "customers": [
        {
            "id": "acme",
            "name": "Acme Corp",
            "currency": "USD",
            "subscriptions": [
                {"price_book": "metered", "start": "2024-01-01T00:00:00Z", "threshold": "100"}
            ],
        }
    ],
}


def february_calls(n: int, prefix: str = "f") -> list[dict[str, Any]]:
    return [
        event(f"{prefix}{i}", time=f"2024-02-0{1 + i % 8}T{i % 24:02d}:{i % 60:02d}:00Z")
        for i in range(n)
    ]


def test_interim_invoices_over_http_equal_the_cli(server: Server, store: Store) -> None:
    with admin(server) as http:
        apply_catalog(http, CATALOG)
    ingest(server, february_calls(120))
    with admin(server) as http:
        response = http.post("/v1/invoices/progressive", content="{}", headers=JSON)
        assert response.status_code == 200, response.text
        [doc] = response.json()
        assert (doc["number"], doc["role"], doc["interim"]) == ("INV-000001", "interim", 1)
        assert (doc["period"]["label"], doc["total"]) == ("2024-02", "120.00")
        again = http.post("/v1/invoices/progressive", content="{}", headers=JSON)
        assert again.status_code == 200 and again.json() == []  # nothing unbilled is due
        shown = http.get("/v1/invoices/INV-000001").json()
        assert shown["content_hash"] == doc["content_hash"]
        verified = http.get("/v1/verify").json()
        assert verified["ok"], verified
        unknown = http.post(
            "/v1/invoices/progressive", content=json.dumps({"customer": "ghost"}), headers=JSON
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "UNKNOWN_CUSTOMER"
        bad = http.post("/v1/invoices/progressive", content='{"period": "x"}', headers=JSON)
        assert bad.status_code == 400
    with browser(server) as page:  # the console's invoice page says what it is
        assert log_in(page).status_code == 303
        shown_page = page.get("/console/invoices/INV-000001")
        assert shown_page.status_code == 200
        assert "Interim invoice 1 for 2024-02 (progressive billing)" in html.unescape(
            shown_page.text
        )
    ingest(server, february_calls(100, prefix="g"))
    proc = meterline("--db", store.url, "--now", NOW, "invoice", "progressive", "--json")
    assert proc.returncode == 0, proc.stderr
    [second] = json.loads(proc.stdout)
    assert (second["interim"], second["total"]) == (2, "100.00")
    listed = meterline("--db", store.url, "--now", NOW, "invoice", "list")
    assert [line.split()[-2:] for line in listed.stdout.splitlines()] == [
        ["interim", "1"],
        ["interim", "2"],
    ]
    text = meterline("--db", store.url, "--now", NOW, "invoice", "progressive")
    assert text.returncode == 0, text.stderr
    assert (
        text.stdout.strip() == "0 interim invoices issued, 2 open periods checked"
    )  # January has no final yet


def test_plan_change_over_http_equals_the_cli(server: Server, store: Store) -> None:
    with admin(server) as http:
        apply_catalog(http, copy.deepcopy(CATALOG))
        body = {"to": "pro", "at": "2024-02-16T00:00:00Z"}
        response = http.post(
            "/v1/customers/acme/plan-change", content=json.dumps(body), headers=JSON
        )
        assert response.status_code == 200, response.text
        out = response.json()
        assert out["recorded"] is True
        assert out["ended"]["end"] == "2024-02-16T00:00:00Z"
        assert (out["started"]["price_book"], out["started"]["threshold"]) == ("pro", "100")
        customer = http.get("/v1/customers/acme").json()
        assert [s["price_book"] for s in customer["subscriptions"]] == ["metered", "pro"]
        missing = http.post(
            "/v1/customers/acme/plan-change", content=json.dumps({"to": "pro"}), headers=JSON
        )
        assert missing.status_code == 400
        bad_at = http.post(
            "/v1/customers/acme/plan-change",
            content=json.dumps({"to": "pro", "at": "soon"}),
            headers=JSON,
        )
        assert bad_at.status_code == 400
        nobody = http.post(
            "/v1/customers/ghost/plan-change", content=json.dumps(body), headers=JSON
        )
        assert nobody.status_code == 404
        unknown_book = http.post(
            "/v1/customers/acme/plan-change",
            content=json.dumps({"to": "nope", "at": "2024-03-01T00:00:00Z"}),
            headers=JSON,
        )
        assert unknown_book.status_code == 422
        assert unknown_book.json()["error"]["code"] == "INVALID_CATALOG"
    proc = meterline(
        "--db", store.url, "--now", NOW,
        "subscription", "change", "acme", "--to", "pro", "--at", "2024-02-16T00:00:00Z", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {**out, "recorded": False}
