"""Probes, metrics, the OpenAPI document and error handling of the real server."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
from tests.api.server import INGEST_KEY, Server, meterline, start_server
from tests.conftest import NOW, at
from tests.support import event, line

from meterline.api import create_app
from meterline.domain.clock import FixedClock
from meterline.store.database import Store

JSON = {"Content-Type": "application/json"}


def metric(text: str, name: str) -> float:
    for row in text.splitlines():
        key, _, value = row.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


def test_probes_metrics_and_openapi(server: Server) -> None:
    with server.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"

    with server.client(INGEST_KEY) as http:
        batch = [event("e1"), event("e2"), event("e1"), event("e3", time="2030-01-01T00:00:00Z")]
        http.post("/v1/events", content=json.dumps(batch), headers=JSON)
        http.post("/v1/events", content=b"[1, 2]", headers=JSON)
        ce = {"specversion": "1.0", "id": "c1", "source": "s", "type": "t", "subject": "acme"}
        http.post(
            "/api/v1/events", content=json.dumps(ce), headers={"Content-Type": "application/json"}
        )

    with server.client(None) as anonymous:
        scraped = anonymous.get("/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith(
            "text/plain"
        )
        text = scraped.text
        assert metric(text, 'meterline_events_accepted_total{endpoint="native"}') == 2
        assert metric(text, 'meterline_events_duplicate_total{endpoint="native"}') == 1
        assert (
            metric(
                text, 'meterline_events_rejected_total{code="EVENT_IN_FUTURE",endpoint="native"}'
            )
            == 1
        )
        assert (
            metric(text, 'meterline_events_rejected_total{code="INVALID_JSON",endpoint="native"}')
            == 2
        )
        assert (
            metric(
                text, 'meterline_events_rejected_total{code="MISSING_FIELD",endpoint="cloudevents"}'
            )
            == 1
        )
        assert metric(text, 'meterline_ingest_request_seconds_count{endpoint="native"}') == 2
        assert metric(text, 'meterline_ingest_request_seconds_count{endpoint="cloudevents"}') == 1

        document = anonymous.get("/openapi.json").json()
        ops = {(path, method) for path, item in document["paths"].items() for method in item}
        assert ops == {
            ("/v1/events", "post"),
            ("/api/v1/events", "post"),
            ("/v1/quarantine", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/v1/catalog", "post"),
            ("/v1/catalog", "get"),
            ("/v1/customers", "get"),
            ("/v1/customers/{customer_id}", "get"),
            ("/v1/customers/{customer_id}/plan-change", "post"),
            ("/v1/customers/{customer_id}/credits", "get"),
            ("/v1/customers/{customer_id}/credits", "post"),
            ("/v1/customers/{customer_id}/balance", "get"),
            ("/v1/credits/{grant_id}/void", "post"),
            ("/v1/customers/{customer_id}/entitlements", "get"),
            ("/v1/customers/{customer_id}/entitlements/{feature}", "get"),
            ("/v1/alerts", "get"),
            ("/v1/usage", "get"),
            ("/v1/retractions", "post"),
            ("/v1/invoices/preview", "get"),
            ("/v1/invoices/issue", "post"),
            ("/v1/invoices/progressive", "post"),
            ("/v1/invoices", "get"),
            ("/v1/invoices/{number}", "get"),
            ("/v1/invoices/{number}/render", "get"),
            ("/v1/invoices/{number}/pay", "post"),
            ("/v1/invoices/{number}/void", "post"),
            ("/v1/invoices/{number}/explain", "get"),
            ("/v1/invoices/{number}/proofs", "get"),
            ("/v1/rerate", "post"),
            ("/v1/verify", "get"),
            ("/v1/reconcile", "get"),
            ("/v1/ledger/balances", "get"),
            ("/v1/ledger/journal", "get"),
            ("/v1/webhooks/endpoints", "post"),
            ("/v1/webhooks/endpoints", "get"),
            ("/v1/webhooks/endpoints/{endpoint_id}/disable", "post"),
            ("/v1/webhooks/endpoints/{endpoint_id}/enable", "post"),
            ("/v1/webhooks/deliveries", "get"),
            ("/v1/webhooks/messages/{message_id}/replay", "post"),
            ("/v1/exports/{kind}", "get"),
            # credit grants (wip/credits) and entitlements and alerts (wip/entitle)
            ("/v1/customers/{customer_id}/credits", "post"),
            ("/v1/customers/{customer_id}/credits", "get"),
            ("/v1/credits/{grant_id}/void", "post"),
            ("/v1/customers/{customer_id}/balance", "get"),
            ("/v1/customers/{customer_id}/entitlements", "get"),
            ("/v1/customers/{customer_id}/entitlements/{feature}", "get"),
            ("/v1/alerts", "get"),
        }
        for path, method in ops - {("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")}:
            assert document["paths"][path][method]["security"] == [{"apiKey": []}], path
        native = document["paths"]["/v1/events"]["post"]
        assert set(native["requestBody"]["content"]) >= {"application/json", "application/x-ndjson"}
        assert native["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/IngestSummary"
        }
        assert {"400", "401", "403", "413", "415", "500", "503"} <= set(native["responses"])
        cloud = document["paths"]["/api/v1/events"]["post"]
        assert set(cloud["requestBody"]["content"]) == {
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "application/json",
        }
        assert "content" not in cloud["responses"]["204"]
        assert "application/problem+json" in cloud["responses"]["400"]["content"]
        # Malformed requests are 400, never FastAPI's generic 422; 422 is only
        # documented where a well-formed request cannot be billed (DESIGN-level codes).
        assert "HTTPValidationError" not in json.dumps(document)
        ingest_ops = [native, cloud, document["paths"]["/v1/quarantine"]["get"]]
        assert all("422" not in op["responses"] for op in ingest_ops)
        assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"

        for page in ("/docs", "/redoc"):  # docs pages with vendored assets, no CDN
            shown = anonymous.get(page)
            assert shown.status_code == 200 and "cdn." not in shown.text
        missing = anonymous.get("/docs/static/nothing.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
        wrong_method = anonymous.get("/v1/events")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert wrong_method.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_watermark_lag_and_late_arrivals_are_read_from_the_store(
    server: Server, store: Store, tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "meters:\n  - {code: api_calls, event_type: api_call, aggregation: count, "
        "window: 1h, allowed_lateness: 1h}\n"
    )
    assert (
        meterline("--db", store.url, "--now", NOW, "catalog", "apply", str(catalog)).returncode == 0
    )
    with server.client(INGEST_KEY) as http:
        before = http.get("/metrics").text
        assert metric(before, "meterline_late_arrivals") == 0
        assert "meterline_watermark_lag_seconds " not in before  # no watermark yet
        http.post(
            "/v1/events", content=line(event("e1", time="2024-02-01T10:00:00Z")), headers=JSON
        )
        # Window 07:00-08:00 closed at 09:00 (1h lateness) while the watermark is 10:00: late.
        http.post(
            "/v1/events", content=line(event("e2", time="2024-02-01T07:30:00Z")), headers=JSON
        )
        after = http.get("/metrics").text
    assert metric(after, "meterline_late_arrivals") == 1
    lag = (at(NOW) - at("2024-02-01T10:00:00Z")).total_seconds()
    assert metric(after, "meterline_watermark_lag_seconds") == lag


def test_readyz_is_503_until_the_store_is_initialised(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    server = start_server(url, tmp_path, ready="/healthz")
    try:
        with server.client(INGEST_KEY) as http:
            not_ready = http.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["error"]["code"] == "STORE_NOT_INITIALISED"
            refused = http.post("/v1/events", content=line(event("e1")), headers=JSON)
            assert refused.status_code == 503
            assert str(tmp_path) not in refused.text  # no paths or hosts leak to clients

            assert meterline("--db", url, "init").returncode == 0
            assert http.get("/readyz").status_code == 200
            accepted = http.post("/v1/events", content=line(event("e1")), headers=JSON)
            assert accepted.json()["accepted"] == 1
    finally:
        server.stop()


def test_unexpected_errors_are_a_500_envelope_without_internals(store: Store) -> None:
    app = create_app(store.url, FixedClock(at(NOW)))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom")
            assert response.status_code == 500
            assert response.json() == {
                "error": {"code": "INTERNAL", "message": "internal server error", "details": {}}
            }
            assert "secret" not in response.text and "Traceback" not in response.text
            assert (await client.get("/healthz")).status_code == 200  # the server carries on

    anyio.run(scenario)
