"""The console over plain HTTP against a live server, on SQLite and PostgreSQL:
sessions, CSRF, the pages, re-rating, fix-and-replay, share links, the audit trail."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import urlsplit

import httpx
from tests.api.billing_world import api_calls, ingest, issue_january, january_world
from tests.api.server import ADMIN_KEY, INGEST_KEY, Server
from tests.support import event

from meterline.services.audit import entries
from meterline.store.database import Store

ACTOR = "console:admin#2"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def browser(server: Server) -> httpx.Client:
    """A cookie-keeping client with no Authorization header, like a browser."""
    return httpx.Client(base_url=server.url, timeout=60, follow_redirects=False)


def log_in(http: httpx.Client, key: str = ADMIN_KEY) -> httpx.Response:
    form = http.get("/console/login")
    assert form.status_code == 200
    token = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    return http.post("/console/login", data={"csrf": token, "key": key, "next": "/console"})


def csrf_of(page: httpx.Response) -> str:
    return CSRF.search(page.text).group(1)  # type: ignore[union-attr]


def test_session_cookie_and_refusals(server: Server, store: Store) -> None:
    with browser(server) as http:
        assert http.get("/console").status_code == 303
        # the login form itself needs its token
        assert http.post("/console/login", data={"key": ADMIN_KEY}).status_code == 403
        refused = log_in(http, INGEST_KEY)
        assert refused.status_code == 403
        assert "only admin API keys" in refused.text
        assert "meterline_console" not in http.cookies
        ok = log_in(http)
        assert ok.status_code == 303 and ok.headers["location"] == "/console"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Max-Age=" in cookie
        assert ADMIN_KEY not in cookie
        overview = http.get("/console")
        assert overview.status_code == 200
        assert overview.headers["content-security-policy"].startswith("default-src 'none'")
        assert overview.headers["cache-control"] == "no-store"
        token = csrf_of(overview)
        assert http.post("/console/logout", data={}).status_code == 403
        assert http.post("/console/logout", data={"csrf": "x" + token}).status_code == 403
        out = http.post("/console/logout", data={"csrf": token})
        assert out.status_code == 303
    # the old session cookie no longer opens anything
    with browser(server) as stale:
        stale.cookies.set("meterline_console", ok.cookies["meterline_console"], path="/console")
        assert stale.get("/console").status_code == 303
    actions = [(r["actor"], r["action"]) for r in entries(store)]
    assert (ACTOR, "console.login") in actions and (ACTOR, "console.logout") in actions


def test_pages_rerate_replay_and_share(server: Server, store: Store) -> None:
    january_world(server)
    invoice = issue_january(server)["number"]
    ingest(server, api_calls(25, prefix="late"))  # late January events: a debit is due
    summary = ingest(
        server, [event("fix-me", time="2024-01-12 10:00:00", props={"note": "<b>x</b>"})]
    )
    assert summary["rejected"] == 1
    with browser(server) as http:
        assert log_in(http).status_code == 303
        for path, needle in (
            ("/console", "Periods that close next"),
            ("/console/customers?q=acm", "acme"),
            ("/console/customers/acme", "Running bill"),
            ("/console/invoices?period=2024-01&kind=invoice", invoice),
            (f"/console/invoices/{invoice}", "tier 1"),
            (f"/console/invoices/{invoice}/lines/1", "per window"),
            (f"/console/invoices/{invoice}/lines/1/events", "inclusion proof"),
            ("/console/price-books", "v1"),
            ("/console/audit", "console.login"),
            ("/console/quarantine", "INVALID_EVENT_TIME"),
        ):
            page = http.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert needle in page.text, path
        events_page = http.get(f"/console/invoices/{invoice}/lines/1/events").text
        proof_href = re.search(r'href="(/console/invoices/[^"]+/proof\?[^"]+)"', events_page)
        assert proof_href is not None
        proof = http.get(html.unescape(proof_href.group(1)))
        assert proof.status_code == 200 and "verifies" in proof.text
        missing = http.get(f"/console/invoices/{invoice}/proof?event_id=nope&source=default")
        assert missing.status_code == 404
        assert http.get("/console/invoices/INV-999999").status_code == 404
        assert http.get("/console/invoices/x/lines/notanumber").status_code == 400

        preview = http.get(f"/console/invoices/{invoice}/rerate")
        assert "debit note that would be issued" in preview.text
        assert "25 events received after" in preview.text
        post = f"/console/invoices/{invoice}/rerate"
        assert http.post(post, data={"confirm": "yes"}).status_code == 403
        unconfirmed = http.post(post, data={"csrf": csrf_of(preview)})
        assert unconfirmed.status_code == 400
        issued = http.post(post, data={"csrf": csrf_of(preview), "confirm": "yes"})
        assert issued.status_code == 303
        note = urlsplit(issued.headers["location"]).path.rsplit("/", 1)[1]
        assert note.startswith("DN-")
        assert http.get(f"/console/invoices/{invoice}/rerate").text.count("Nothing to correct")

        queue = http.get("/console/quarantine").text
        entry_id = re.findall(r'href="/console/quarantine/(\d+)"', queue)[-1]
        entry = http.get(f"/console/quarantine/{entry_id}")
        assert "&lt;b&gt;x&lt;/b&gt;" in entry.text  # markup shown as text
        raw = json.loads(
            re.search(r"<textarea[^>]*>(.*?)</textarea>", entry.text, re.S)
            .group(1)
            .replace("&#34;", '"')
            .replace("&lt;", "<")
            .replace("&gt;", ">")
        )  # type: ignore[union-attr]
        bad = http.post(
            f"/console/quarantine/{entry_id}/replay",
            data={"csrf": csrf_of(entry), "raw": json.dumps(raw)},
        )
        assert bad.status_code == 422 and "Rejected again" in bad.text
        raw["event_time"] = "2024-01-12T10:00:00Z"
        good = http.post(
            f"/console/quarantine/{entry_id}/replay",
            data={"csrf": csrf_of(entry), "raw": json.dumps(raw)},
        )
        assert good.status_code == 200 and "Replayed: 1 accepted" in good.text

        invoice_page = http.get(f"/console/invoices/{invoice}")
        shared = http.post(
            f"/console/invoices/{invoice}/share", data={"csrf": csrf_of(invoice_page), "days": "3"}
        )
        assert shared.status_code == 200
        link = re.search(r'class="copy" readonly value="([^"]+)"', shared.text).group(1)  # type: ignore[union-attr]
        link = link.replace("&amp;", "&")
    with httpx.Client(timeout=60) as outsider:
        assert outsider.get(link).status_code == 200
        assert invoice in outsider.get(link).text
        assert (
            outsider.get(link[:-2] + ("AA" if not link.endswith("AA") else "BB")).status_code == 403
        )
        assert outsider.get(link.replace(invoice, note)).status_code == 403
    trail = [(r["actor"], r["action"]) for r in entries(store)]
    for action in ("rerate", "console.quarantine.replay", "console.share", "ingest"):
        assert (ACTOR, action) in trail, action
