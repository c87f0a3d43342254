"""POST /v1/events against the real server, on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tests.api.server import INGEST_KEY, MAX_BODY, Server, quarantined, stored_events
from tests.support import event, line

from meterline.domain.timestamps import parse_rfc3339
from meterline.store.database import Store

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def test_object_array_and_ndjson_are_ingested_event_by_event(server: Server, store: Store) -> None:
    with server.client(INGEST_KEY) as http:
        one = http.post(
            "/v1/events", content=line(event("e1", props={"tokens": 0.1})), headers=JSON
        )
        assert one.status_code == 200
        assert one.headers["content-type"] == "application/json"
        assert one.json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "rejects": []}

        batch = [
            event("e2", customer="globex", type_="llm_call"),
            {"event_id": "e3", "event_type": "api_call", "event_time": "2024-02-01T00:00:00Z"},
            42,
            event("e1", props={"tokens": 0.10}),  # same content: a duplicate
            event("e2", customer="someone-else"),  # same key, other content: a conflict
            event("e4", time="2024-02-01T10:00:00"),  # naive timestamp
        ]
        mixed = http.post("/v1/events", content=json.dumps(batch), headers=JSON).json()
        assert (mixed["accepted"], mixed["duplicates"], mixed["rejected"]) == (1, 1, 4)
        assert [(r["index"], r["code"]) for r in mixed["rejects"]] == [
            (1, "MISSING_FIELD"),
            (2, "INVALID_JSON"),
            (4, "EVENT_ID_CONFLICT"),
            (5, "INVALID_EVENT_TIME"),
        ]
        assert all("line" not in r for r in mixed["rejects"])

        body = b"\n".join([line(event("e5")), b"", b"{not json", line(event("e6")), b""])
        nd = http.post("/v1/events", content=body, headers=NDJSON).json()
        assert (nd["accepted"], nd["duplicates"], nd["rejected"]) == (2, 0, 1)
        assert nd["rejects"][0] | {"message": ""} == {
            "index": 1,
            "line": 3,
            "code": "INVALID_JSON",
            "message": "",
        }

    events = stored_events(store)
    assert [(e["source"], e["event_id"]) for e in events] == [
        ("default", "e1"),
        ("default", "e2"),
        ("default", "e5"),
        ("default", "e6"),
    ]
    assert events[0]["properties"] == '{"tokens":0.1}'  # exact decimal, never a float
    assert events[1]["customer_id"] == "globex" and events[1]["event_type"] == "llm_call"
    assert events[1]["event_time"] == parse_rfc3339("2024-02-01T10:00:00Z")
    q = quarantined(store)
    assert [row["code"] for row in q] == [
        "MISSING_FIELD",
        "INVALID_JSON",
        "EVENT_ID_CONFLICT",
        "INVALID_EVENT_TIME",
        "INVALID_JSON",
    ]
    assert q[1]["raw"] == b"42" and q[4]["raw"] == b"{not json"  # kept exactly as sent


def test_source_and_backfill_query_parameters(server: Server, store: Store) -> None:
    old = event("old", time="2023-11-01T00:00:00Z")
    with server.client(INGEST_KEY) as http:
        named = http.post(
            "/v1/events",
            params={"source": "gateway"},
            content=json.dumps([event("a"), event("b", source="billing")]),
            headers=JSON,
        )
        assert named.json()["accepted"] == 2
        too_old = http.post("/v1/events", content=line(old), headers=JSON).json()
        assert [r["code"] for r in too_old["rejects"]] == ["EVENT_TOO_OLD"]
        backfilled = http.post(
            "/v1/events", params={"backfill": "true"}, content=line(old), headers=JSON
        )
        assert backfilled.json()["accepted"] == 1
        for params in ({"backfill": "maybe"}, {"source": ""}, {"source": "x" * 257}):
            bad = http.post("/v1/events", params=params, content=line(event("c")), headers=JSON)
            assert bad.status_code == 400, params
            assert bad.json()["error"]["code"] == "INVALID_ARGUMENT"

    events = stored_events(store)
    assert [(e["source"], e["event_id"], bool(e["backfill"])) for e in events] == [
        ("gateway", "a", False),
        ("billing", "b", False),
        ("default", "old", True),
    ]


def test_request_level_errors_store_nothing(server: Server, store: Store) -> None:
    with server.client(INGEST_KEY) as http:
        cases = [
            (b'{"event_id": "e1", ', JSON, 400, "INVALID_JSON"),
            (b'[{"event_id": "e1"}, ', JSON, 400, "INVALID_JSON"),
            (line(event("a")) + b"\n" + line(event("b")), JSON, 400, "INVALID_JSON"),
            (b'"just a string"', JSON, 400, "INVALID_JSON"),
            (b"", JSON, 400, "INVALID_JSON"),
            (line(event("a")), {"Content-Type": "text/csv"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
            (line(event("a")), {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ]
        for body, headers, status, code in cases:
            response = http.post("/v1/events", content=body, headers=headers)
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert error["code"] == code and error["message"]
            assert isinstance(error["details"], dict)
            assert "Traceback" not in response.text

        padding = {"pad": "x" * 1000}
        big = json.dumps([event(f"big{i}", props=padding) for i in range(MAX_BODY // 1000 + 1)])
        assert len(big) > MAX_BODY
        declared = http.post("/v1/events", content=big, headers=JSON)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        def chunks() -> Iterator[bytes]:  # no Content-Length: enforced while reading
            data = big.encode()
            for start in range(0, len(data), 64 * 1024):
                yield data[start : start + 64 * 1024]

        streamed = http.post("/v1/events", content=chunks(), headers=JSON)
        assert streamed.status_code == 413
        assert streamed.json()["error"]["details"] == {"limit_bytes": MAX_BODY}

        assert http.post("/v1/events", content=b"[]", headers=JSON).json()["accepted"] == 0

    assert stored_events(store) == []
    assert quarantined(store) == []


def test_a_value_the_store_cannot_hold_is_never_a_server_error(server: Server) -> None:
    # PostgreSQL text cannot hold NUL: whatever the backend, the client gets a
    # per-event answer or a 400 envelope, never a 5xx.
    nul = event("nul\u0000id", type_="api\u0000call")
    with server.client(INGEST_KEY) as http:
        for body, headers in [
            (json.dumps([event("fine"), nul]), JSON),
            (
                json.dumps({"specversion": "1.0", "id": "x", "source": "s\u0000", "type": "t"}),
                {"Content-Type": "application/cloudevents+json"},
            ),
        ]:
            response = http.post(
                "/v1/events" if headers is JSON else "/api/v1/events", content=body, headers=headers
            )
            assert response.status_code < 500, response.text
            payload = response.json()
            assert "rejects" in payload or payload["error"]["code"] in (
                "INVALID_FIELD",
                "EVENTS_REJECTED",
            )


def test_changes_are_audited_under_the_key_that_made_them(server: Server, store: Store) -> None:
    from sqlalchemy import text
    from tests.api.server import ADMIN_KEY

    with server.client(INGEST_KEY) as http:
        http.post("/v1/events", content=line(event("a1")), headers=JSON).raise_for_status()
    with server.client(ADMIN_KEY) as http:
        http.post(
            "/v1/retractions",
            json={"event_id": "a1", "source": "default", "reason": "test traffic"},
        ).raise_for_status()
    with store.read() as conn:
        rows = conn.execute(text("SELECT actor, action FROM audit_log ORDER BY id")).all()
    actors = {action: actor for actor, action in rows}
    assert actors == {"ingest": "api:ingest#1", "retract": "api:admin#2"}
    assert all(INGEST_KEY not in a and ADMIN_KEY not in a for a, _ in rows)
