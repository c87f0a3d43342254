"""Producers written for OpenMeter work unchanged: the `cloudevents` and the
`openmeter` Python SDKs, pointed at meterline, store their events, and those
events are billed like any other."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from corehttp.exceptions import HttpResponseError
from openmeter import Client
from openmeter.models import Event
from tests.api.billing_world import admin, apply_catalog, close_january
from tests.api.server import INGEST_KEY, Server, stored_events

from meterline.domain.timestamps import parse_rfc3339
from meterline.store.database import Store

FEB_1 = dt.datetime(2024, 2, 1, 12, 30, tzinfo=dt.UTC)


def test_cloudevents_sdk_structured_events_are_stored(server: Server, store: Store) -> None:
    events = [
        CloudEvent(
            {
                "id": f"sdk-{i}",
                "source": "cloudevents-sdk",
                "type": "api_call",
                "subject": "acme",
                "time": "2024-02-01T12:30:00Z",
            },
            {"tokens": 100 * i},
        )
        for i in range(3)
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for ce in events:
            headers, body = to_structured(ce)
            headers["Authorization"] = f"Bearer {INGEST_KEY}"
            response = http.post("/api/v1/events", content=body, headers=headers)
            assert response.status_code == 204, response.text

    stored = stored_events(store)
    assert [(e["source"], e["event_id"], e["customer_id"]) for e in stored] == [
        ("cloudevents-sdk", f"sdk-{i}", "acme") for i in range(3)
    ]
    assert [json.loads(e["properties"]) for e in stored] == [{"tokens": 100 * i} for i in range(3)]


def test_openmeter_sdk_ingests_single_and_batch_events(server: Server, store: Store) -> None:
    def om_event(id_: str, subject: str = "acme", time: dt.datetime = FEB_1) -> Event:
        return Event(
            id=id_,
            source="openmeter-sdk",
            specversion="1.0",
            type="llm_call",
            subject=subject,
            time=time,
            data={"tokens": 1.5, "model": "small"},
        )

    with Client(endpoint=server.url, token=INGEST_KEY) as client:
        client.events.ingest_event(om_event("om-1"))
        client.events.ingest_events([om_event("om-2", "globex"), om_event("om-3")])
        client.events.ingest_events_json(om_event("om-4"))
        client.events.ingest_event(om_event("om-1"))  # a retry is a duplicate: success
        with pytest.raises(HttpResponseError) as rejected:
            client.events.ingest_events(
                [om_event("om-5"), om_event("om-old", time=dt.datetime(2023, 1, 1, tzinfo=dt.UTC))]
            )
        assert rejected.value.status_code == 400

    with (
        Client(endpoint=server.url, token="wrong-key") as intruder,
        pytest.raises(HttpResponseError) as denied,
    ):
        intruder.events.ingest_event(om_event("om-x"))
    assert denied.value.status_code == 401

    stored = stored_events(store)
    assert [(e["event_id"], e["customer_id"]) for e in stored] == [
        ("om-1", "acme"),
        ("om-2", "globex"),
        ("om-3", "acme"),
        ("om-4", "acme"),
        ("om-5", "acme"),  # the good event of the partly rejected batch is kept
    ]
    assert stored[0]["event_time"] == parse_rfc3339("2024-02-01T12:30:00Z")
    assert json.loads(stored[0]["properties"]) == {"tokens": 1.5, "model": "small"}
    assert stored[0]["properties"] == '{"model":"small","tokens":1.5}'


def test_sdk_events_reach_usage_and_an_issued_invoice(server: Server, store: Store) -> None:
    """End to end: OpenMeter producers -> usage query -> issued invoice."""
    with admin(server) as http:
        apply_catalog(http)
    jan = dt.datetime(2024, 1, 15, 9, 0, tzinfo=dt.UTC)
    with Client(endpoint=server.url, token=INGEST_KEY) as client:
        client.events.ingest_events(
            [
                Event(
                    id=f"om-{i}",
                    source="openmeter-sdk",
                    specversion="1.0",
                    type="llm_call",
                    subject="acme",
                    time=jan,
                    data={"tokens": 600, "model": "small"},
                )
                for i in range(4)
            ]
        )
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(3):
            ce = CloudEvent(
                {
                    "id": f"ce-{i}",
                    "source": "cloudevents-sdk",
                    "type": "api_call",
                    "subject": "acme",
                    "time": "2024-01-15T09:30:00Z",
                },
                {},
            )
            headers, body = to_structured(ce)
            headers["Authorization"] = f"Bearer {INGEST_KEY}"
            assert http.post("/api/v1/events", content=body, headers=headers).status_code == 204
    close_january(server, "openmeter-sdk", "cloudevents-sdk")

    with admin(server) as http:
        january = {"customer": "acme", "from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
        tokens = http.get("/v1/usage", params={**january, "meter": "tokens"}).json()
        assert tokens["total"] == "2400"
        assert tokens["groups"] == [{"dimensions": {"model": "small"}, "total": "2400"}]
        calls = http.get("/v1/usage", params={**january, "meter": "api_calls"}).json()
        assert calls["total"] == "3" and calls["windows"][0]["final"] is True

        issued = http.post("/v1/invoices/issue", json={"period": "2024-01", "customer": "acme"})
        assert issued.status_code == 200, issued.text
        [doc] = issued.json()
        lines = {(ln["charge"], ln["quantity"]): ln["amount"] for ln in doc["lines"]}
        assert lines[("api", "3")] == "0.06"
        assert lines[("tok", "2400")] == "1.50"  # ceil(2400 / 1000) packages x 0.50
        tok = next(ln for ln in doc["lines"] if ln["charge"] == "tok")
        explained = http.get(
            f"/v1/invoices/{doc['number']}/explain",
            params={"line": tok["line"], "events": "true"},
        ).json()
        assert sorted(e["event_id"] for e in explained["events"]) == [f"om-{i}" for i in range(4)]
        assert {e["source"] for e in explained["events"]} == {"openmeter-sdk"}
        assert explained["count_matches"] is True
