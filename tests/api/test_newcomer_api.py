"""Issue 12, the API part: interactive docs, API-worded messages, RFC 3339 details."""

from __future__ import annotations

import json
import re

from tests.api.server import Server
from tests.billing_support import calls, clock, setup
from tests.support import ingest

from meterline.store.database import Store

# --- API ----------------------------------------------------------------------------


def test_api_docs_are_served_without_a_cdn(server: Server) -> None:
    with server.client(None) as c:
        for path in ("/docs", "/redoc"):
            r = c.get(path)
            assert r.status_code == 200 and "cdn" not in r.text.lower()
            assert "googleapis" not in r.text
            for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', r.text):
                assert c.get(asset).status_code == 200


def test_api_period_not_closed_speaks_api_terms_and_rfc3339(server: Server, store: Store) -> None:
    setup(store)
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(2))
    with server.client() as c:
        r = c.post("/v1/invoices/issue", json={"period": "2024-01", "customer": "acme"})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert "--force" not in err["message"] and '"force": true' in err["message"]
    for key in ("watermark", "closes_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", err["details"][key])


def test_cloudevents_batch_whose_only_event_was_rejected(server: Server) -> None:
    bad = {
        "specversion": "1.0",
        "id": "x1",
        "source": "s",
        "type": "api_call",
        "subject": "acme",
        "time": "not a time",
    }
    with server.client() as c:
        r = c.post(
            "/api/v1/events",
            content=json.dumps([bad]),
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
    assert r.status_code == 400
    assert "others were stored" not in r.json()["detail"]
    assert "nothing was stored" in r.json()["detail"]
