"""Catalog, customers, usage and retraction endpoints against the real server,
with the JSON compared to the CLI's `--json` on the same store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.api.billing_world import (
    CATALOG,
    CATALOG_YAML,
    JSON,
    admin,
    api_calls,
    apply_catalog,
    ingest,
    token_calls,
)
from tests.api.server import NOW, Server, meterline

from meterline.store.database import Store

YAML = {"Content-Type": "application/yaml"}


def cli_json(store: Store, *args: str) -> Any:
    proc = meterline("--db", store.url, "--now", NOW, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return str(body["error"]["code"])


def test_catalog_apply_read_and_customers(server: Server, store: Store, tmp_path: Path) -> None:
    with admin(server) as http:
        first = apply_catalog(http).json()
        assert first["added"] == [
            "meter api_calls",
            "meter tokens",
            "price book standard (USD)",
            "price standard v1",
            "customer acme",
            "customer globex",
        ]
        assert first["unchanged"] == [] and first["windows_built"] == 0

        # The same catalog as YAML is a no-op; the report is `catalog apply --json`'s.
        again = http.post("/v1/catalog", content=CATALOG_YAML, headers=YAML)
        assert again.status_code == 200, again.text
        assert again.json() == {
            "added": [],
            "unchanged": first["added"][:2] + first["added"][3:],
            "windows_built": 0,
        }

        view = http.get("/v1/catalog").json()
        assert [m["code"] for m in view["meters"]] == ["api_calls", "tokens"]
        assert view["meters"][1] == {
            "code": "tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "group_by": ["model"],
            "window": "1h",
            "allowed_lateness": "3h",
        }
        [book] = view["price_books"]
        assert (book["code"], book["currency"], book["rounding"]) == ("standard", "USD", "half_up")
        [v1] = book["versions"]
        assert v1["version"] == "v1" and v1["recorded_seq"] > 0
        assert v1["charges"][0]["tiers"][1]["unit_price"] == "0.015"  # exact, never a float
        assert [c["id"] for c in view["customers"]] == ["acme", "globex"]

        customers = http.get("/v1/customers").json()
        assert customers == view["customers"]
        acme = http.get("/v1/customers/acme")
        assert acme.status_code == 200
        assert acme.json()["tax_rate"] == "0.2" and acme.json()["name"] == "Acme Corp"

        missing = http.get("/v1/customers/nobody")
        assert missing.status_code == 404 and error_code(missing) == "UNKNOWN_CUSTOMER"

        # Changing a recorded price version is refused, and nothing is applied.
        changed = copy.deepcopy(CATALOG)
        changed["price_books"][0]["versions"][0]["charges"][1]["amount"] = "59.00"
        changed["customers"].append(
            {"id": "initech", "name": "Initech", "currency": "USD", "subscriptions": []}
        )
        refused = http.post("/v1/catalog", content=json.dumps(changed), headers=JSON)
        assert refused.status_code == 409 and error_code(refused) == "PRICE_VERSION_IMMUTABLE"

        invalid = http.post(
            "/v1/catalog", content=json.dumps({"meters": [{"code": "x"}]}), headers=JSON
        )
        assert invalid.status_code == 422 and error_code(invalid) == "INVALID_CATALOG"
        # a missing field is reported at its parent: "meters[0]: missing field 'event_type'"
        assert invalid.json()["error"]["details"] == {"path": "meters[0]"}
        unknown_section = http.post("/v1/catalog", content=b'{"plans": []}', headers=JSON)
        assert unknown_section.status_code == 422

        books_only = CATALOG_YAML.split("customers:")[0]
        float_price = http.post(
            "/v1/catalog",
            content=books_only.replace('"0.015"', "0.015").replace("standard", "std2"),
            headers=YAML,
        )
        assert float_price.status_code == 200, float_price.text  # YAML floats stay exact text

        not_yaml = http.post("/v1/catalog", content=b"meters: [unclosed", headers=YAML)
        assert not_yaml.status_code == 400 and error_code(not_yaml) == "INVALID_INPUT"
        not_json = http.post("/v1/catalog", content=b"{", headers=JSON)
        assert not_json.status_code == 400 and error_code(not_json) == "INVALID_INPUT"
        wrong_type = http.post("/v1/catalog", content=b"x", headers={"Content-Type": "text/csv"})
        assert wrong_type.status_code == 415 and error_code(wrong_type) == "UNSUPPORTED_MEDIA_TYPE"

        after = http.get("/v1/catalog").json()
    assert [c["id"] for c in after["customers"]] == ["acme", "globex"]
    assert [b["code"] for b in after["price_books"]] == ["standard", "std2"]
    assert after["price_books"][0] == book
    assert after["price_books"][1]["versions"][0]["charges"][0]["tiers"][1]["unit_price"] == "0.015"
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG_YAML)
    assert cli_json(store, "catalog", "apply", str(path)) == {
        "added": [],
        "unchanged": first["added"][:2] + first["added"][3:],
        "windows_built": 0,
    }


def test_usage_equals_the_cli_and_errors(server: Server, store: Store) -> None:
    with admin(server) as http:
        apply_catalog(http)
    ingest(server, [*api_calls(12), *token_calls(5)])
    params = {
        "customer": "acme",
        "meter": "tokens",
        "from": "2024-01-01T00:00:00Z",
        "to": "2024-02-01T00:00:00Z",
    }
    with admin(server) as http:
        usage = http.get("/v1/usage", params=params)
        assert usage.status_code == 200, usage.text
        body = usage.json()
        assert body["total"] == "3500"
        assert body["groups"] == [
            {"dimensions": {"model": "big"}, "total": "1400"},
            {"dimensions": {"model": "small"}, "total": "2100"},
        ]
        cli = cli_json(
            store,
            "usage",
            "--customer",
            "acme",
            "--meter",
            "tokens",
            "--from",
            params["from"],
            "--to",
            params["to"],
        )
        assert body == cli

        daily = http.get("/v1/usage", params={**params, "meter": "api_calls", "window": "1d"})
        assert daily.status_code == 200
        assert [w["value"] for w in daily.json()["windows"]] == ["3", "3", "2", "2", "2"]
        assert daily.json()["total"] == "12"

        cases = {
            "missing": ({k: v for k, v in params.items() if k != "meter"}, 400, "INVALID_ARGUMENT"),
            "unknown meter": ({**params, "meter": "nope"}, 404, "UNKNOWN_METER"),
            "misaligned": ({**params, "from": "2024-01-01T00:30:00Z"}, 400, "INVALID_ARGUMENT"),
            "naive time": ({**params, "to": "2024-02-01T00:00:00"}, 400, "INVALID_ARGUMENT"),
            "backwards": ({**params, "to": "2023-12-01T00:00:00Z"}, 400, "INVALID_ARGUMENT"),
            "bad window": ({**params, "window": "fortnight"}, 400, "INVALID_ARGUMENT"),
            "far future": ({**params, "to": "9999-12-31T23:00:00-05:00"}, 400, "INVALID_ARGUMENT"),
        }
        for name, (query, status, code) in cases.items():
            response = http.get("/v1/usage", params=query)
            assert (response.status_code, error_code(response)) == (status, code), name


def test_retraction(server: Server, store: Store) -> None:
    with admin(server) as http:
        apply_catalog(http)
    ingest(server, api_calls(3))
    with admin(server) as http:
        done = http.post("/v1/retractions", json={"event_id": "c1", "reason": "test traffic"})
        assert done.status_code == 200, done.text
        body = done.json()
        assert (body["source"], body["event_id"], body["already_retracted"]) == (
            "default",
            "c1",
            False,
        )
        again = http.post("/v1/retractions", json={"event_id": "c1", "reason": "twice"})
        assert again.json()["already_retracted"] is True
        assert again.json()["seq"] == body["seq"] and again.json()["reason"] == "test traffic"

        missing = http.post("/v1/retractions", json={"event_id": "zz", "reason": "x"})
        assert missing.status_code == 404 and error_code(missing) == "EVENT_NOT_FOUND"
        for bad in (
            {"event_id": "c2"},
            {"event_id": "c2", "reason": "  "},
            {"event_id": "c2", "reason": "x", "extra": 1},
            {"event_id": "", "reason": "x"},
        ):
            response = http.post("/v1/retractions", json=bad)
            assert response.status_code == 400, bad
        not_json = http.post("/v1/retractions", content=b"{", headers=JSON)
        assert not_json.status_code == 400 and error_code(not_json) == "INVALID_JSON"

        usage = http.get(
            "/v1/usage",
            params={
                "customer": "acme",
                "meter": "api_calls",
                "from": "2024-01-01T00:00:00Z",
                "to": "2024-02-01T00:00:00Z",
            },
        )
        assert usage.json()["total"] == "2"
