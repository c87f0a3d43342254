"""The entitlement and alert surfaces: HTTP (in-process app, real store on both
backends) and the command line (a real `meterline` process), same JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import httpx
from tests.billing_support import clock
from tests.support import ingest
from tests.test_entitlements import JAN_20, jan, setup

from meterline.api import create_app
from meterline.store.database import Store


def cli(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", "--db", store.url, "--now", JAN_20, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_http_answers_equal_the_cli(store: Store) -> None:
    setup(store)
    ingest(store, clock(JAN_20), jan(10, "a"))
    app = create_app(store.url, clock(JAN_20))
    got: dict[str, Any] = {}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            got["one"] = await client.get("/v1/customers/acme/entitlements/api")
            got["all"] = await client.get("/v1/customers/acme/entitlements")
            got["alerts"] = await client.get("/v1/alerts", params={"customer": "acme"})
            got["unknown_feature"] = await client.get("/v1/customers/acme/entitlements/nope")
            got["unknown_customer"] = await client.get("/v1/customers/nobody/entitlements/api")

    anyio.run(scenario)
    one = got["one"].json()
    assert got["one"].status_code == 200
    assert (one["has_access"], one["usage"], one["limit"], one["balance"], one["overage"]) == (
        False,
        "10",
        "10",
        "0",
        "0",
    )
    assert {"feature", "period", "as_of_seq"} <= set(one)
    assert [a["feature"] for a in got["all"].json()["entitlements"]] == ["api", "burst", "sso"]
    codes = sorted(a["code"] for a in got["alerts"].json()["alerts"])
    assert codes == ["api", "burst", "eight", "half", "ten_cents"]
    assert got["unknown_feature"].status_code == 404
    assert got["unknown_feature"].json()["error"]["code"] == "UNKNOWN_FEATURE"
    assert got["unknown_customer"].json()["error"]["code"] == "UNKNOWN_CUSTOMER"

    done = cli(store, "entitlements", "acme", "api", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == one
    done = cli(store, "entitlements", "acme")
    assert done.returncode == 0 and "limit reached" in done.stdout and "sso" in done.stdout
    done = cli(store, "alerts", "list", "--customer", "acme", "--json")
    assert json.loads(done.stdout) == got["alerts"].json()
    done = cli(store, "alerts", "list")
    assert done.returncode == 0 and "entitlement_exhausted" in done.stdout
    done = cli(store, "entitlements", "acme", "nope")
    assert done.returncode == 2 and done.stderr.startswith("meterline: UNKNOWN_FEATURE: ")
