"""Webhooks and exports over HTTP against a real `meterline serve`, whose
background dispatcher delivers to a real, verifying receiver on loopback."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal

import httpx
import pyarrow.parquet as pq
from sqlalchemy import text
from tests.api.billing_world import admin, issue_january, january_world
from tests.api.server import INGEST_KEY, Server
from tests.webhooks.receiver import Receiver

from meterline.store.database import Store
from meterline.webhooks.signing import new_secret


def wait_for(check: object, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_endpoints_deliveries_and_replay_over_http(server: Server, store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        with server.client(INGEST_KEY) as producer:
            assert producer.get("/v1/webhooks/endpoints").status_code == 403
        with admin(server) as http:
            created = http.post(
                "/v1/webhooks/endpoints",
                json={
                    "url": receiver.url,
                    "secret": receiver.secret,
                    "event_types": ["events.rejected"],
                },
            )
            assert created.status_code == 201, created.text
            ep = created.json()
            assert ep["secret"] == receiver.secret and ep["event_types"] == ["events.rejected"]
            listed = http.get("/v1/webhooks/endpoints").json()
            assert [e["id"] for e in listed] == [ep["id"]] and "secret" not in listed[0]
            bad = http.post("/v1/webhooks/endpoints", json={"url": "ftp://nowhere"})
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"
            unknown = http.post(
                "/v1/webhooks/endpoints", json={"url": receiver.url, "event_types": ["x.y"]}
            )
            assert unknown.status_code == 400

            ingested = http.post(
                "/v1/events",
                content=b'[{"event_id": 1}]',
                headers={"Content-Type": "application/json"},
            )
            assert ingested.json()["rejected"] == 1
            assert wait_for(lambda: len(receiver.received) == 1), server.log()
            [got] = receiver.received
            assert got.verified and got.payload["type"] == "events.rejected"

            def delivered() -> list[dict[str, object]]:
                return list(
                    http.get(
                        "/v1/webhooks/deliveries",
                        params={"status": "delivered", "attempts": "true"},
                    ).json()
                )

            assert wait_for(lambda: len(delivered()) == 1)
            [row] = delivered()
            assert row["message_id"] == got.message_id
            assert row["attempts_log"][0]["status_code"] == 200  # type: ignore[index]

            paused = http.post(f"/v1/webhooks/endpoints/{ep['id']}/disable")
            assert paused.status_code == 200 and paused.json()["enabled"] is False
            assert http.post("/v1/webhooks/endpoints/999/disable").status_code == 404
            assert http.post("/v1/webhooks/endpoints/x1/enable").status_code == 400
            replayed = http.post(
                f"/v1/webhooks/messages/{got.message_id}/replay", json={"endpoint": ep["id"]}
            )
            assert replayed.status_code == 200
            time.sleep(2)  # the dispatcher polls every second: a disabled endpoint waits
            assert len(receiver.received) == 1
            assert http.post(f"/v1/webhooks/endpoints/{ep['id']}/enable").json()["enabled"] is True
            assert wait_for(lambda: len(receiver.received) == 2)
            replayed = http.post(f"/v1/webhooks/messages/{got.message_id}/replay")
            assert replayed.status_code == 200 and len(replayed.json()["deliveries"]) == 1
            assert wait_for(lambda: len(receiver.received) == 2)
            assert (
                receiver.received[1].message_id == got.message_id and receiver.received[1].verified
            )
            missing = http.post("/v1/webhooks/messages/msg_nope/replay")
            assert (
                missing.status_code == 404
                and missing.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"
            )
        with store.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT action, actor FROM audit_log WHERE action LIKE 'webhook.%' ORDER BY id"
                )
            ).all()
        assert [(str(a), str(b)) for a, b in rows] == [
            ("webhook.add", "api:admin#2"),
            ("webhook.disable", "api:admin#2"),
            ("webhook.replay", "api:admin#2"),
            ("webhook.enable", "api:admin#2"),
            ("webhook.replay", "api:admin#2"),
        ]
    finally:
        receiver.stop()


def test_exports_stream_over_http(server: Server) -> None:
    january_world(server)
    invoice = issue_january(server)
    with admin(server) as http:
        with http.stream(
            "GET", "/v1/exports/lines", params={"period": "2024-01", "format": "parquet"}
        ) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"] == "application/vnd.apache.parquet"
            assert r.headers.get("transfer-encoding") == "chunked"
            data = r.read()
        table = pq.read_table(io.BytesIO(data)).to_pylist()
        lines = invoice["lines"]
        assert [row["amount"] for row in table] == [Decimal(ln["amount"]) for ln in lines]
        assert {row["number"] for row in table} == {invoice["number"]}
        csv_text = http.get("/v1/exports/invoices", params={"period": "2024-01"}).text
        header, first = csv_text.splitlines()[:2]
        assert header.startswith("number,kind,status,customer_id")
        assert first.split(",")[0] == invoice["number"]
        assert f",{invoice['total']}," in first
        for params, code in (
            ({"period": "2024-13"}, 400),
            ({"period": "2024-01", "format": "xlsx"}, 400),
            ({}, 400),
        ):
            bad = http.get("/v1/exports/invoices", params=params)
            assert (
                bad.status_code == code
                and json.loads(bad.text)["error"]["code"] == "INVALID_ARGUMENT"
            )
        assert http.get("/v1/exports/customers", params={"period": "2024-01"}).status_code == 400
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/v1/exports/lines", params={"period": "2024-01"}).status_code == 401
