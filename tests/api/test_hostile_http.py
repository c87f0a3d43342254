"""Issue 11 over HTTP, property-based, against a real `meterline serve`: any
body on the native and CloudEvents endpoints yields per-event rejects or a
4xx, never a 5xx; every valid event beside the bad ones is stored; the store
then reconciles clean. Both backends."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.api.server import INGEST_KEY, Server
from tests.hostile import CATALOG, good_event, hostile_line
from tests.test_hostile_properties import assert_reconciles, stored_ids

from meterline.domain.timestamps import parse_rfc3339
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def _cloudevent(native: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": native["event_id"],
        "source": "hostile-test",
        "type": native["event_type"],
        "subject": native["customer_id"],
        "time": native["event_time"],
        "data": native["properties"],
    }


def _hostile_cloudevent(line: bytes) -> bytes:
    """A CloudEvent around a hostile native line when it is an object, else the line."""
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    if not isinstance(obj, dict):
        return line
    ce = {
        "specversion": "1.0",
        "id": obj.get("event_id"),
        "source": obj.get("source", "hostile-test"),
        "type": obj.get("event_type"),
        "subject": obj.get("customer_id"),
        "time": obj.get("event_time"),
        "data": obj.get("properties"),
    }
    return json.dumps(ce).encode("utf-8", "surrogatepass")


def test_any_body_is_per_event_rejects_or_4xx_never_5xx(server: Server, store: Store) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    expected: set[str] = set()

    @SETTINGS
    @given(
        lines=st.lists(hostile_line(), min_size=1, max_size=5),
        shape=st.sampled_from(["ndjson", "array", "cloudevents", "raw"]),
        raw=st.binary(max_size=200),
    )
    def run(lines: list[bytes], shape: str, raw: bytes) -> None:
        goods = [good_event() for _ in range(2)]
        with server.client(INGEST_KEY) as http:
            if shape == "ndjson":
                body = b"\n".join(
                    [json.dumps(goods[0]).encode(), *lines, json.dumps(goods[1]).encode()]
                )
                r = http.post("/v1/events", content=body, headers=NDJSON)
            elif shape == "array":
                parts = [json.dumps(goods[0]).encode(), *lines, json.dumps(goods[1]).encode()]
                r = http.post("/v1/events", content=b"[" + b",".join(parts) + b"]", headers=JSON)
            elif shape == "cloudevents":
                parts = [
                    json.dumps(_cloudevent(goods[0])).encode(),
                    *[_hostile_cloudevent(x) for x in lines],
                    json.dumps(_cloudevent(goods[1])).encode(),
                ]
                r = http.post(
                    "/api/v1/events", content=b"[" + b",".join(parts) + b"]", headers=CE_BATCH
                )
            else:
                r = http.post("/v1/events", content=raw, headers=JSON)
                r2 = http.post("/api/v1/events", content=raw, headers=CE_BATCH)
                assert r2.status_code < 500, r2.text
        assert r.status_code < 500, r.text
        if shape == "raw":
            return
        if r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON":
            # A hostile element broke the array's syntax: nothing can be cut out.
            assert shape in ("array", "cloudevents"), r.text
            return
        assert r.status_code in (200, 204, 400), r.text
        expected.update(g["event_id"] for g in goods)
        assert {g["event_id"] for g in goods} <= stored_ids(store), r.text

    run()
    assert "Traceback" not in server.log()
    assert_reconciles(store)
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one() > 0


def test_deep_and_nul_elements_are_rejected_one_by_one(server: Server, store: Store) -> None:
    goods = [good_event() for _ in range(2)]
    deep = b'{"event_id":"d","properties":' + b'{"n":' * 5000 + b"1" + b"}" * 5000 + b"}"
    nul = json.dumps(good_event() | {"customer_id": "a\u0000b"}).encode()
    body = (
        b"["
        + b",".join([json.dumps(goods[0]).encode(), deep, nul, json.dumps(goods[1]).encode()])
        + b"]"
    )
    with server.client(INGEST_KEY) as http:
        r = http.post("/v1/events", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["rejected"]) == (2, 2)
    assert [x["code"] for x in out["rejects"]] == ["NESTING_TOO_DEEP", "INVALID_TEXT"]
    assert {g["event_id"] for g in goods} <= stored_ids(store)


def test_issue_run_with_a_customer_that_cannot_be_invoiced_is_422_with_the_rest_issued(
    server: Server, store: Store
) -> None:
    from tests.api.server import ADMIN_KEY
    from tests.test_hostile_inputs import _two_customers

    apply_catalog(store, _two_customers(), parse_rfc3339("2024-01-01T00:00:00Z"))
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE price_versions SET definition = replace(definition, '0.02', '1e400') "
                "WHERE book_code = 'premium'"
            )
        )
    with server.client(ADMIN_KEY) as http:
        r = http.post("/v1/invoices/issue", json={"period": "2024-01", "force": True})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "INVOICE_RUN_INCOMPLETE"
    assert [(f["customer_id"], f["code"]) for f in error["details"]["failed"]] == [
        ("beta", "INVALID_CATALOG")
    ]
    assert sorted(d["customer_id"] for d in error["details"]["issued"]) == ["acme", "gamma"]
