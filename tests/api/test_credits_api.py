"""Credit grants and the balance over HTTP and on the command line, against a live
server and real processes (DESIGN §13)."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.api.billing_world import JSON, admin, issue_january, january_world
from tests.api.server import INGEST_KEY, NOW, Server, meterline

from meterline.store.database import Store

JAN = "2024-01-01T00:00:00Z"  # the server's clock is in February: grants for January


def test_grant_list_balance_void_over_http_and_the_cli(server: Server, store: Store) -> None:
    january_world(server)
    with admin(server) as http:
        made = http.post(
            "/v1/customers/acme/credits",
            content=json.dumps(
                {"amount": "50.00", "id": "top", "rollover": "100.00", "effective_at": JAN}
            ),
            headers=JSON,
        )
        assert made.status_code == 201, made.text
        assert made.json()["available"] == "50.00" and made.json()["kind"] == "paid"
        promo = http.post(
            "/v1/customers/acme/credits",
            content=json.dumps(
                {"amount": "5.00", "kind": "promotional", "priority": 1, "id": "promo"}
                | {"effective_at": JAN}
            ),
            headers=JSON,
        )
        assert promo.status_code == 201, promo.text
        again = http.post(
            "/v1/customers/acme/credits",
            content=json.dumps({"amount": "1.00", "id": "top"}),
            headers=JSON,
        )
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "CREDIT_GRANT_EXISTS"

    doc = issue_january(server)
    due = Decimal(doc["subtotal"]) + Decimal(doc["tax"])
    assert doc["credits"][0] == {"grant": "promo", "amount": "5.00"}
    assert Decimal(doc["credits_applied"]) == min(due, Decimal("55.00"))

    with admin(server) as http:
        listed = http.get("/v1/customers/acme/credits")
        assert listed.status_code == 200
        assert [g["id"] for g in listed.json()] == ["promo", "top"]
        balance = http.get("/v1/customers/acme/balance")
        assert balance.status_code == 200, balance.text
        b = balance.json()
        parts = sum(Decimal(b[k]) for k in ("used", "expired", "voided", "available"))
        assert parts == Decimal(b["granted"]) == Decimal("55.00")
        assert Decimal(b["used"]) == Decimal(doc["credits_applied"])
        # February is open: its flat fee (plus tax), rated as known now
        assert b["open_period"]["label"] == "2024-02"
        open_due = Decimal(b["open_period"]["due"])
        assert open_due > 0
        assert Decimal(b["projected"]) == Decimal(b["available"]) - open_due

        cli = meterline("--db", store.url, "--now", NOW, "balance", "acme", "--json")
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == b
        cli_list = meterline("--db", store.url, "--now", NOW, "credits", "list", "acme", "--json")
        assert json.loads(cli_list.stdout) == listed.json()
        plain = meterline("--db", store.url, "--now", NOW, "balance", "acme")
        assert plain.returncode == 0 and "granted" in plain.stdout and "│" not in plain.stdout

        voided = http.post(
            "/v1/credits/top/void", content=json.dumps({"reason": "refunded"}), headers=JSON
        )
        assert voided.status_code == 200, voided.text
        assert voided.json()["status"] == "void"
        twice = http.post(
            "/v1/credits/top/void", content=json.dumps({"reason": "again"}), headers=JSON
        )
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "CREDIT_GRANT_VOID"
        missing = http.post(
            "/v1/credits/nope/void", content=json.dumps({"reason": "x"}), headers=JSON
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "CREDIT_GRANT_NOT_FOUND"
        assert http.get("/v1/customers/nobody/balance").status_code == 404
        bad = http.post(
            "/v1/customers/acme/credits", content=json.dumps({"amount": "-3"}), headers=JSON
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"
        unknown_field = http.post(
            "/v1/customers/acme/credits",
            content=json.dumps({"amount": "3", "colour": "red"}),
            headers=JSON,
        )
        assert unknown_field.status_code == 400
        assert http.get("/v1/reconcile", params={"full": "true"}).json()["ok"] is True

        audit = meterline("--db", store.url, "audit", "--json")
        assert audit.returncode == 0, audit.stderr
        actions = [row["action"] for row in json.loads(audit.stdout)]
        assert {"credit_grant", "credit_void"} <= set(actions)

    with server.client(INGEST_KEY) as http:  # an ingest key is not an admin
        assert http.get("/v1/customers/acme/balance").status_code == 403
    with server.client(None) as http:
        assert http.post("/v1/credits/promo/void", json={"reason": "x"}).status_code == 401


def test_cli_grant_void_and_expire(store: Store) -> None:
    from tests.billing_support import setup

    setup(store)
    db = ["--db", store.url, "--now", "2024-01-05T00:00:00Z"]
    made = meterline(
        *db, "credits", "grant", "acme", "--amount", "12.50", "--expires",
        "2024-01-20T00:00:00Z", "--kind", "promotional", "--id", "g1", "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["expires_at"] == "2024-01-20T00:00:00Z"
    text_out = meterline(*db, "credits", "list", "acme")
    assert text_out.returncode == 0 and "g1" in text_out.stdout
    bad = meterline(*db, "credits", "grant", "acme", "--amount", "1", "--kind", "gift")
    assert bad.returncode == 2 and "INVALID_ARGUMENT" in bad.stderr
    later = ["--db", store.url, "--now", "2024-01-21T00:00:00Z"]
    expired = meterline(*later, "credits", "expire", "--json")
    assert expired.returncode == 0, expired.stderr
    [posted] = json.loads(expired.stdout)
    assert (posted["grant"], posted["amount"]) == ("g1", "12.50")
    assert json.loads(meterline(*later, "credits", "expire", "--json").stdout) == []
    void = meterline(*later, "credits", "void", "g1", "--reason", "cleanup", "--json")
    assert void.returncode == 0 and json.loads(void.stdout)["voided"] == "0.00"
    missing = meterline(*later, "credits", "void", "nope", "--reason", "x")
    assert missing.returncode != 0 and "CREDIT_GRANT_NOT_FOUND" in missing.stderr
    rec = meterline("--db", store.url, "reconcile", "--full", "--json")
    assert rec.returncode == 0, rec.stdout
