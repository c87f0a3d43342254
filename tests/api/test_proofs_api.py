"""`GET /v1/invoices/{number}/proofs`: the same proof as `prove --json`, clear errors."""

from __future__ import annotations

import json

from tests.api.billing_world import admin, ingest, issue_january, january_world
from tests.api.server import NOW, Server, meterline
from tests.support import event

from meterline.store.database import Store


def test_proof_over_http_equals_the_cli(server: Server, store: Store) -> None:
    january_world(server)
    doc = issue_january(server)
    number = doc["number"]
    ingest(server, [event("late1", time="2024-01-20T00:00:00Z")])
    with admin(server) as http:
        url = f"/v1/invoices/{number}/proofs"
        ok = http.get(url, params={"event_id": "c1", "source": "default"})
        assert ok.status_code == 200, ok.text
        proof = ok.json()
        assert proof["verified"] and proof["root"] == doc["tree_head"]["root"]
        proc = meterline(
            "--db", store.url, "--now", NOW, "prove", number, "--event", "c1", "--json"
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == proof
        cases = [
            ({"event_id": "nope"}, 404, "EVENT_NOT_FOUND"),
            ({"event_id": "late1"}, 409, "EVENT_AFTER_CUTOFF"),
            ({}, 400, None),
        ]
        for params, status, code in cases:
            r = http.get(url, params=params)
            assert r.status_code == status, r.text
            if code:
                assert r.json()["error"]["code"] == code
        gone = http.get("/v1/invoices/INV-000099/proofs", params={"event_id": "c1"})
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "DOCUMENT_NOT_FOUND"
        spec = http.get("/openapi.json").json()
        assert "/v1/invoices/{number}/proofs" in spec["paths"]
        assert "InclusionProof" in spec["components"]["schemas"]
