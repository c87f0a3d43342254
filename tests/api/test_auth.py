"""API keys and scopes against the real server; `serve` refusing unsafe setups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.api.server import (
    ADMIN_KEY,
    INGEST_KEY,
    Server,
    clean_env,
    free_port,
    meterline,
    quarantined,
    start_server,
    stored_events,
)
from tests.support import event, line

from meterline.store.database import Store

JSON = {"Content-Type": "application/json"}
CLOUD_EVENT = {
    "specversion": "1.0",
    "id": "c1",
    "source": "s",
    "type": "api_call",
    "subject": "acme",
    "time": "2024-02-01T00:00:00Z",
}


def test_missing_or_wrong_key_is_401_and_changes_nothing(server: Server, store: Store) -> None:
    native = json.dumps([event("e1"), {"bad": True}])
    attempts = {
        "no header": {},
        "wrong key": {"Authorization": "Bearer not-a-key"},
        "key prefix": {"Authorization": f"Bearer {ADMIN_KEY[:-1]}"},
        "not bearer": {"Authorization": f"Basic {ADMIN_KEY}"},
        "empty bearer": {"Authorization": "Bearer"},
        "non-ascii": {"Authorization": "Bearer clé".encode()},
    }
    with server.client(None) as http:
        for name, headers in attempts.items():
            responses = [
                http.post("/v1/events", content=native, headers=JSON | headers),
                http.post(
                    "/api/v1/events",
                    content=json.dumps(CLOUD_EVENT),
                    headers={"Content-Type": "application/cloudevents+json"} | headers,
                ),
                http.get("/v1/quarantine", headers=headers),
            ]
            for response in responses:
                assert response.status_code == 401, (name, response.request.url)
                assert response.json()["error"]["code"] == "UNAUTHORIZED"
                assert response.headers["www-authenticate"].startswith("Bearer")
        metrics = http.get("/metrics").text
    assert stored_events(store) == []
    assert quarantined(store) == []
    assert 'meterline_events_accepted_total{endpoint="native"}' not in metrics
    server.stop()
    log = server.log()
    assert ADMIN_KEY not in log and INGEST_KEY not in log and "not-a-key" not in log


def test_ingest_key_is_forbidden_on_admin_endpoints(server: Server, store: Store) -> None:
    with server.client(ADMIN_KEY) as admin:  # admin implies ingest
        body = b"\n".join([line(event("e1")), b"{broken"])
        sent = admin.post(
            "/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"}
        )
        assert sent.json()["accepted"] == 1
        before = admin.get("/v1/quarantine").json()
    assert [(e["code"], e["raw"]) for e in before["items"]] == [("INVALID_JSON", "{broken")]

    with server.client(INGEST_KEY) as producer:
        forbidden = producer.get("/v1/quarantine", params={"limit": 5})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"] == {
            "code": "FORBIDDEN",
            "message": "this API key lacks the 'admin' scope",
            "details": {"needed": "admin"},
        }
        assert (
            producer.post("/v1/events", content=line(event("e2")), headers=JSON).status_code == 200
        )

    with server.client(ADMIN_KEY) as admin:
        assert admin.get("/v1/quarantine").json() == before
    assert [e["event_id"] for e in stored_events(store)] == ["e1", "e2"]


def test_quarantine_pages_and_validates_its_parameters(server: Server) -> None:
    with server.client(ADMIN_KEY) as admin:
        body = b"\n".join(b'{"n": %d}' % i for i in range(5)) + b"\n\xff\xfe"
        admin.post("/v1/events", content=body, headers={"Content-Type": "application/x-ndjson"})
        first = admin.get("/v1/quarantine", params={"limit": 4}).json()
        assert len(first["items"]) == 4 and first["next_after"] == first["items"][-1]["id"]
        rest = admin.get("/v1/quarantine", params={"after": first["next_after"]}).json()
        assert rest["next_after"] is None
        assert [i["raw"] for i in rest["items"]] == ['{"n": 4}', None]  # not UTF-8: base64 only
        assert rest["items"][1]["raw_base64"] == "//4="
        assert rest["items"][0]["received_at"] == "2024-02-10T00:00:00Z"
        for params in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"after": "-1"}):
            bad = admin.get("/v1/quarantine", params=params)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_without_keys_the_api_is_open_on_loopback_only(store: Store, tmp_path: Path) -> None:
    open_server = start_server(store.url, tmp_path, keys=None)
    try:
        with open_server.client(None) as http:
            assert (
                http.post("/v1/events", content=line(event("e1")), headers=JSON).status_code == 200
            )
            assert http.get("/v1/quarantine").status_code == 200
    finally:
        open_server.stop()
    assert "no API keys configured" in open_server.log()
    assert [e["event_id"] for e in stored_events(store)] == ["e1"]


@pytest.mark.parametrize(
    ("host", "keys", "expected"),
    [
        ("0.0.0.0", None, "refusing to serve on 0.0.0.0 without API keys"),
        ("10.1.2.3", "", "refusing to serve on 10.1.2.3 without API keys"),
        ("127.0.0.1", "secret-key-1:root", "entry 1: unknown scope 'root'"),
        ("127.0.0.1", "k:ingest,secret-key-2", "entry 2: expected KEY:SCOPE"),
    ],
)
def test_serve_refuses_unsafe_or_invalid_configuration(
    tmp_path: Path, host: str, keys: str | None, expected: str
) -> None:
    db = f"sqlite:///{tmp_path / 'never-opened.db'}"
    proc = meterline(
        "--db", db, "serve", "--host", host, "--port", str(free_port()), env=clean_env(keys)
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert expected in err
    assert "secret-key" not in err
    assert not (tmp_path / "never-opened.db").exists()
