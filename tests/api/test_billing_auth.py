"""Every billing endpoint needs the admin scope: no key is 401, an ingest key
is 403, and neither changes anything."""

from __future__ import annotations

import json
from typing import Any

from tests.api.billing_world import CATALOG, issue_january, january_world
from tests.api.server import ADMIN_KEY, INGEST_KEY, Server

JSON = {"Content-Type": "application/json"}
JAN = "from=2024-01-01T00:00:00Z&to=2024-02-01T00:00:00Z"

# (method, path, body): each would succeed, or change the books, with an admin key.
ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/catalog", {**CATALOG, "customers": [{**CATALOG["customers"][0], "name": "X"}]}),
    ("GET", "/v1/catalog", None),
    ("GET", "/v1/customers", None),
    ("GET", "/v1/customers/acme", None),
    ("GET", f"/v1/usage?customer=acme&meter=api_calls&{JAN}", None),
    ("POST", "/v1/retractions", {"event_id": "c1", "reason": "x"}),
    ("GET", "/v1/invoices/preview?customer=acme&period=2024-01", None),
    ("POST", "/v1/invoices/issue", {"period": "2024-01", "force": True}),
    ("GET", "/v1/invoices", None),
    ("GET", "/v1/invoices/INV-000001", None),
    ("GET", "/v1/invoices/INV-000001/render?format=pdf", None),
    ("POST", "/v1/invoices/INV-000001/pay", None),
    ("POST", "/v1/invoices/INV-000001/void", None),
    ("GET", "/v1/invoices/INV-000001/explain?line=1&events=true", None),
    ("POST", "/v1/rerate", {"customer": "acme", "period": "2024-01", "reason": "x"}),
    ("GET", "/v1/verify", None),
    ("GET", "/v1/quarantine", None),
    ("GET", "/v1/reconcile", None),
    ("GET", "/v1/ledger/balances", None),
    ("GET", "/v1/ledger/journal", None),
]


def _snapshot(server: Server) -> Any:
    with server.client(ADMIN_KEY) as http:
        return (
            http.get("/v1/catalog").json(),
            http.get("/v1/invoices").json(),
            http.get(f"/v1/usage?customer=acme&meter=api_calls&{JAN}").json(),
        )


def test_billing_endpoints_need_the_admin_scope(server: Server) -> None:
    january_world(server)
    issue_january(server)
    before = _snapshot(server)
    for key, status, code in ((None, 401, "UNAUTHORIZED"), (INGEST_KEY, 403, "FORBIDDEN")):
        with server.client(key) as http:
            for method, path, body in ADMIN_CALLS:
                content = None if body is None else json.dumps(body)
                response = http.request(method, path, content=content, headers=JSON)
                assert response.status_code == status, (key, method, path, response.text)
                assert response.json()["error"]["code"] == code
                if status == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _snapshot(server) == before

    # The same calls with the admin key do go through (so the test above meant something).
    with server.client(ADMIN_KEY) as http:
        statuses = {
            path: http.request(
                method, path, content=None if body is None else json.dumps(body), headers=JSON
            ).status_code
            for method, path, body in ADMIN_CALLS
        }
    assert statuses["/v1/invoices/INV-000001/void"] == 409  # paid just before
    assert {s for p, s in statuses.items() if not p.endswith("/void")} == {200}
    assert _snapshot(server) != before
