"""Producers written for OpenMeter work unchanged: the `cloudevents` and the
`openmeter` Python SDKs, pointed at meterline, store their events."""

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
