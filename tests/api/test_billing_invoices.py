"""Invoice endpoints against the real server: preview, issue, list, show,
render, pay/void, explain with paged events, rerate and verify; JSON compared
to the CLI's `--json` on the same store, errors in the envelope."""

from __future__ import annotations

import copy
import json
from typing import Any

from pypdf import PdfReader
from tests.api.billing_world import (
    CATALOG,
    admin,
    api_calls,
    apply_catalog,
    close_january,
    ingest,
    issue_january,
    january_world,
)
from tests.api.server import NOW, Server, meterline
from tests.support import event

from meterline.store.database import Store

JANUARY = {"period": "2024-01", "customer": "acme"}


def cli(store: Store, *args: str) -> str:
    proc = meterline("--db", store.url, "--now", NOW, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cli_json(store: Store, *args: str) -> Any:
    return json.loads(cli(store, *args, "--json"))


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return str(body["error"]["code"])


def test_invoice_lifecycle(server: Server, store: Store) -> None:
    with admin(server) as http:
        apply_catalog(http)
    ingest(server, api_calls(30) + api_calls(1, "g", "globex"))
    with admin(server) as http:
        preview = http.get("/v1/invoices/preview", params=JANUARY)
        assert preview.status_code == 200, preview.text
        draft = preview.json()
        assert (draft["number"], draft["status"]) == (None, "draft")
        assert draft == cli_json(
            store, "invoice", "preview", "--customer", "acme", "--period", "2024-01"
        )

        # The watermark has not passed January's close yet.
        early = http.post("/v1/invoices/issue", json=JANUARY)
        assert early.status_code == 409 and error_code(early) == "PERIOD_NOT_CLOSED"
        assert http.get("/v1/invoices").json() == []

    close_january(server)
    doc = issue_january(server)
    assert (doc["number"], doc["kind"], doc["status"]) == ("INV-000001", "invoice", "issued")
    assert doc["lines"][0]["formula"] == "30 x 0.02 = 0.60"
    assert (doc["subtotal"], doc["tax"], doc["total"]) == ("49.60", "9.92", "59.52")
    assert doc["forced"] is False

    with admin(server) as http:
        again = http.post("/v1/invoices/issue", json=JANUARY)
        assert again.status_code == 200 and again.json() == []  # never a second invoice

        shown = http.get("/v1/invoices/INV-000001").json()
        assert shown == doc == cli_json(store, "invoice", "show", "INV-000001")
        listed = http.get("/v1/invoices").json()
        assert listed == cli_json(store, "invoice", "list")
        assert [d["number"] for d in listed] == ["INV-000001"]
        assert http.get("/v1/invoices", params={"customer": "globex"}).json() == []

        as_json = http.get("/v1/invoices/INV-000001/render", params={"format": "json"})
        assert as_json.headers["content-type"] == "application/json"
        assert (
            as_json.content
            == cli(store, "invoice", "render", "INV-000001", "--format", "json").encode()
        )
        as_text = http.get("/v1/invoices/INV-000001/render", params={"format": "text"})
        assert as_text.headers["content-type"].startswith("text/plain")
        assert as_text.text == cli(store, "invoice", "render", "INV-000001", "--format", "text")
        assert "INVOICE INV-000001" in as_text.text
        pdf = http.get("/v1/invoices/INV-000001/render", params={"format": "pdf"})
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        assert pdf.content.startswith(b"%PDF")
        import io

        text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
        assert "INV-000001" in text
        bad_format = http.get("/v1/invoices/INV-000001/render", params={"format": "docx"})
        assert bad_format.status_code == 400 and error_code(bad_format) == "INVALID_ARGUMENT"

        verified = http.get("/v1/verify").json()
        assert verified["ok"] is True and verified == cli_json(store, "verify")
        one = http.get("/v1/verify", params={"number": "INV-000001"}).json()
        assert one["ok"] is True and len(one["checks"]) == 3
        unknown = http.get("/v1/verify", params={"number": "INV-999999"}).json()
        assert unknown["ok"] is False  # the CLI exits 1; the check itself ran

        for path in ("", "/render", "/explain"):
            missing = http.get(f"/v1/invoices/INV-999999{path}")
            assert missing.status_code == 404 and error_code(missing) == "DOCUMENT_NOT_FOUND"

        paid = http.post("/v1/invoices/INV-000001/pay", json={"reason": "wire 42"})
        assert paid.status_code == 200 and paid.json()["status"] == "paid"
        assert paid.json()["content_hash"] == doc["content_hash"]  # content never changes
        twice = http.post("/v1/invoices/INV-000001/pay")  # already paid: a no-op
        assert twice.status_code == 200 and twice.json()["status"] == "paid"
        void_paid = http.post("/v1/invoices/INV-000001/void")
        assert void_paid.status_code == 409 and error_code(void_paid) == "INVALID_STATUS_CHANGE"
        assert http.post("/v1/invoices/INV-404/void").status_code == 404
        bad_body = http.post("/v1/invoices/INV-000001/pay", json={"why": "x"})
        assert bad_body.status_code == 400
        assert http.get("/v1/invoices").json()[0]["status"] == "paid"

        for body, status, code in (
            ({"period": "2024-13"}, 400, "INVALID_ARGUMENT"),
            ({"period": "0000-01"}, 400, "INVALID_ARGUMENT"),
            ({"customer": "acme"}, 400, "INVALID_ARGUMENT"),
            ({"period": "2024-01", "customer": "nobody"}, 404, "UNKNOWN_CUSTOMER"),
            ({"period": "2023-06", "customer": "acme"}, 422, "NO_SUBSCRIPTION"),
            ({"period": "2024-01", "force": "yes"}, 400, "INVALID_ARGUMENT"),
        ):
            response = http.post("/v1/invoices/issue", json=body)
            assert (response.status_code, error_code(response)) == (status, code), body
        for query, status in (
            ({"customer": "acme"}, 400),
            ({"customer": "acme", "period": "Jan"}, 400),
            ({"customer": "nobody", "period": "2024-01"}, 404),
            ({"customer": "acme", "period": "2023-06"}, 422),
        ):
            assert http.get("/v1/invoices/preview", params=query).status_code == status, query


def test_forced_issue_and_refused_customers(server: Server, store: Store) -> None:
    catalog = copy.deepcopy(CATALOG)
    catalog["customers"][1]["timezone"] = "Pacific/Honolulu"  # January ends 10:00 UTC on Feb 1
    with admin(server) as http:
        apply_catalog(http, catalog)
    ingest(server, api_calls(5) + api_calls(2, "g", "globex"))
    ingest(server, [event("hb", customer="nobody", type_="ping", time="2024-02-01T12:00:00Z")])
    with admin(server) as http:
        response = http.post("/v1/invoices/issue", json={"period": "2024-01"})
        # acme's January is closed, globex's (Honolulu) is not: the CLI exits 2.
        assert response.status_code == 409 and error_code(response) == "PERIOD_NOT_CLOSED"
        details = response.json()["error"]["details"]
        assert [d["number"] for d in details["issued"]] == ["INV-000001"]
        assert [r["customer_id"] for r in details["refused"]] == ["globex"]
        assert details["already"] == []

        forced = http.post(
            "/v1/invoices/issue", json={"period": "2024-01", "customer": "globex", "force": True}
        )
        assert forced.status_code == 200, forced.text
        [doc] = forced.json()
        assert (doc["number"], doc["forced"], doc["customer_id"]) == ("INV-000002", True, "globex")

        retry = http.post("/v1/invoices/issue", json={"period": "2024-01"})
        assert retry.status_code == 200 and retry.json() == []
        assert [d["number"] for d in http.get("/v1/invoices").json()] == [
            "INV-000001",
            "INV-000002",
        ]


def test_explain_pages_events_and_rerate_corrects(server: Server, store: Store) -> None:
    january_world(server, calls=23)
    issue_january(server)
    with admin(server) as http:
        whole = http.get("/v1/invoices/INV-000001/explain").json()
        assert whole == cli_json(store, "explain", "INV-000001")
        assert [ln["line"] for ln in whole["lines"]] == [1, 2, 3, 4]

        one = http.get("/v1/invoices/INV-000001/explain", params={"line": 1})
        assert one.json()["line"]["charge"] == "api" and "events" not in one.json()

        seen: list[str] = []
        params: dict[str, Any] = {"line": 1, "events": "true", "page_size": 5}
        pages = 0
        while True:
            page = http.get("/v1/invoices/INV-000001/explain", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["count_matches"] is True and body["page"]["total"] == 23
            seen += [e["event_id"] for e in body["events"]]
            pages += 1
            if body["page"]["next_cursor"] is None:
                break
            params = {**params, "cursor": body["page"]["next_cursor"]}
        assert pages == 5 and len(seen) == len(set(seen)) == 23

        by_offset = http.get(
            "/v1/invoices/INV-000001/explain",
            params={"line": 1, "events": "true", "page_size": 5, "offset": 20},
        ).json()
        assert [e["event_id"] for e in by_offset["events"]] == seen[20:]
        assert by_offset["page"]["next_cursor"] is None
        cli_page = cli_json(
            store,
            "explain",
            "INV-000001",
            "--line",
            "1",
            "--events",
            "--limit",
            "5",
            "--offset",
            "20",
        )
        assert {k: v for k, v in by_offset.items() if k != "page"} == {
            k: v for k, v in cli_page.items() if k != "page"
        }

        for query in (
            {"events": "true"},  # events need a line
            {"line": 9},
            {"line": 0},
            {"line": 4, "events": "true"},  # the flat fee has no events
            {"line": 1, "events": "maybe"},
            {"line": 1, "events": "true", "cursor": "not-a-cursor"},
            {"line": 1, "events": "true", "cursor": "bzox", "offset": 1},
            {"line": 1, "events": "true", "page_size": 0},
        ):
            response = http.get("/v1/invoices/INV-000001/explain", params=query)
            assert response.status_code == 400 and error_code(response) == "INVALID_ARGUMENT", query

        # Nothing changed: re-rating issues nothing.
        assert http.post("/v1/rerate").json() == []

    # A late event for January and a retraction.
    ingest(server, [event("late-1", time="2024-01-20T10:00:00Z")])
    with admin(server) as http:
        retracted = http.post("/v1/retractions", json={"event_id": "c0", "reason": "test"})
        assert retracted.status_code == 200
        ingest(server, [event("late-2", time="2024-01-21T10:00:00Z")])
        notes = http.post("/v1/rerate", json={"customer": "acme"})
        assert notes.status_code == 200, notes.text
        [note] = notes.json()
        assert (note["number"], note["kind"], note["corrects"]) == (
            "DN-000001",
            "debit_note",
            "INV-000001",
        )
        assert note["lines"][0]["quantity"] == "1" and note["total"] == "0.03"
        assert note == cli_json(store, "invoice", "show", "DN-000001")
        assert http.post("/v1/rerate").json() == []  # idempotent

        named = http.post(
            "/v1/rerate", json={"customer": "acme", "period": "2024-01", "reason": "audit"}
        )
        assert named.status_code == 200 and named.json() == []

        for body, status in (
            ({"reason": "why"}, 400),
            ({"period": "24-01"}, 400),
            ({"customer": "acme", "period": "2023-12"}, 404),
            ({"customr": "acme"}, 400),
        ):
            response = http.post("/v1/rerate", json=body)
            assert response.status_code == status, (body, response.text)

        assert http.get("/v1/verify").json()["ok"] is True
        assert [d["number"] for d in http.get("/v1/invoices").json()] == [
            "INV-000001",
            "DN-000001",
        ]
