"""POST /api/v1/events: OpenMeter-compatible CloudEvents, on both backends."""

from __future__ import annotations

import json
from typing import Any

from tests.api.server import INGEST_KEY, MAX_BODY, Server, quarantined, stored_events

from meterline.domain.timestamps import parse_rfc3339
from meterline.store.database import Store

SINGLE = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json"}
JSON = {"Content-Type": "application/json"}


def cloud_event(id_: str, **overrides: Any) -> dict[str, Any]:
    ce: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_,
        "source": "gateway",
        "type": "api_call",
        "subject": "acme",
        "time": "2024-02-01T10:00:00.123Z",
        "data": {"tokens": 1200, "model": "small"},
    }
    ce.update(overrides)
    return {k: v for k, v in ce.items() if v is not ...}


def test_every_content_type_answers_204_and_maps_to_native_events(
    server: Server, store: Store
) -> None:
    with server.client(INGEST_KEY) as http:
        posts = [
            (SINGLE, cloud_event("c1")),
            (BATCH, [cloud_event("c2", subject="globex"), cloud_event("c3", data=None)]),
            (JSON, cloud_event("c4", datacontenttype="application/json")),
            (JSON, [cloud_event("c5", data=...), cloud_event("c6", source="other")]),
            (BATCH, [cloud_event("c1")]),  # a resend is a duplicate: still success
            (BATCH, []),
        ]
        for headers, body in posts:
            response = http.post("/api/v1/events", content=json.dumps(body), headers=headers)
            assert response.status_code == 204, response.text
            assert response.content == b""

    events = stored_events(store)
    assert [(e["source"], e["event_id"], e["customer_id"]) for e in events] == [
        ("gateway", "c1", "acme"),
        ("gateway", "c2", "globex"),
        ("gateway", "c3", "acme"),
        ("gateway", "c4", "acme"),
        ("gateway", "c5", "acme"),
        ("other", "c6", "acme"),
    ]
    first = events[0]
    assert first["event_type"] == "api_call"
    assert first["event_time"] == parse_rfc3339("2024-02-01T10:00:00.123Z")
    assert json.loads(first["properties"]) == {"tokens": 1200, "model": "small"}
    assert events[2]["properties"] == "{}" and events[4]["properties"] == "{}"


def test_rejected_events_answer_problem_details_and_the_rest_are_stored(
    server: Server, store: Store
) -> None:
    batch = [
        cloud_event("ok1"),
        cloud_event("no-time", time=...),
        cloud_event("no-subject", subject=...),
        cloud_event("no-spec", specversion=...),
        cloud_event("old-spec", specversion="0.3"),
        cloud_event("xml", datacontenttype="application/xml"),
        cloud_event("scalar-data", data="tokens=5"),
        "not an event",
        cloud_event("too-old", time="2023-01-01T00:00:00Z"),
        cloud_event("ok2", subject="globex"),
        cloud_event("ok1", subject="someone-else"),  # same (source, id), other content
    ]
    with server.client(INGEST_KEY) as http:
        response = http.post("/api/v1/events", content=json.dumps(batch), headers=BATCH)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "about:blank"
    assert problem["title"] == "Bad Request"
    assert problem["status"] == 400
    assert "9 of 11" in problem["detail"]
    assert [(e["index"], e["code"]) for e in problem["errors"]] == [
        (1, "MISSING_FIELD"),
        (2, "MISSING_FIELD"),
        (3, "MISSING_FIELD"),
        (4, "INVALID_FIELD"),
        (5, "INVALID_FIELD"),
        (6, "INVALID_FIELD"),
        (7, "INVALID_JSON"),
        (8, "EVENT_TOO_OLD"),
        (10, "EVENT_ID_CONFLICT"),
    ]
    messages = {e["index"]: e["message"] for e in problem["errors"]}
    assert "'time'" in messages[1] and "'subject'" in messages[2] and "specversion" in messages[3]
    error = problem["error"]
    assert error["code"] == "EVENTS_REJECTED"
    assert error["details"]["accepted"] == 2 and error["details"]["rejected"] == 9

    assert [e["event_id"] for e in stored_events(store)] == ["ok1", "ok2"]

    # Every rejected CloudEvent is quarantined exactly as sent, with its code.
    def canonical(value: Any, code: str) -> str:
        return json.dumps([value, code], sort_keys=True)

    q = sorted(canonical(json.loads(row["raw"]), row["code"]) for row in quarantined(store))
    assert q == sorted(canonical(batch[e["index"]], e["code"]) for e in problem["errors"])


def test_request_level_errors_are_problem_details_and_store_nothing(
    server: Server, store: Store
) -> None:
    cases = [
        (JSON, b'{"specversion": "1.0", ', "INVALID_JSON"),
        (BATCH, json.dumps(cloud_event("x")).encode(), "INVALID_JSON"),
        (SINGLE, json.dumps([cloud_event("x")]).encode(), "INVALID_JSON"),
        ({"Content-Type": "text/plain"}, b"hello", "UNSUPPORTED_MEDIA_TYPE"),
        ({"Content-Type": "application/x-ndjson"}, b"{}", "UNSUPPORTED_MEDIA_TYPE"),
    ]
    with server.client(INGEST_KEY) as http:
        for headers, body, code in cases:
            response = http.post("/api/v1/events", content=body, headers=headers)
            assert response.status_code == 400, response.text
            assert response.headers["content-type"] == "application/problem+json"
            problem = response.json()
            assert problem["status"] == 400 and problem["error"]["code"] == code
        big = json.dumps([cloud_event(f"b{i}", data={"pad": "x" * 1000}) for i in range(1100)])
        assert len(big) > MAX_BODY
        too_big = http.post("/api/v1/events", content=big, headers=BATCH)
        assert too_big.status_code == 413
        assert too_big.json()["status"] == 413
        assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    with server.client(None) as anonymous:
        denied = anonymous.post(
            "/api/v1/events", content=json.dumps(cloud_event("x")), headers=SINGLE
        )
        assert denied.status_code == 401
        assert denied.json()["status"] == 401 and denied.json()["error"]["code"] == "UNAUTHORIZED"

    assert stored_events(store) == []
    assert quarantined(store) == []
