"""The operator console in real Chromium against a real `meterline serve` (DESIGN §15).

One demo-like store per module; the tests run in file order because the story
(issue a correction, replay a quarantined event) changes it on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.api.server import Server
from tests.console_env import (
    IN_CI,
    INGEST_KEY,
    NOW,
    SCRIPT,
    SECRET,
    Seeded,
    chromium,
    chromium_path,
    login,
    seed,
    start_console,
)
from tests.console_shots import capture

from meterline.domain.timestamps import parse_rfc3339

ACTOR = "console:admin#2"  # the admin key is the second configured key

pytestmark = pytest.mark.xdist_group("console-browser")


def _browser_available() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if chromium_path() is None:
        return "chromium is not installed"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Seeded, Server]]:
    missing = _browser_available()
    if missing:
        if IN_CI:
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    directory = tmp_path_factory.mktemp("console")
    seeded = seed(directory / "store")
    server = start_console(seeded.db_url, directory)
    try:
        yield seeded, server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(world: tuple[Seeded, Server]) -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()


def test_operator_story(world: tuple[Seeded, Server], page: Any) -> None:
    seeded, server = world
    base = server.url

    # log in
    login(page, base)
    assert page.url.rstrip("/").endswith("/console")
    assert page.locator("h1").first.inner_text().startswith("Overview")
    assert ACTOR in page.locator(".who").inner_text()

    # find a customer
    page.click("nav >> text=Customers")
    page.fill("#q", seeded.late_customer[-4:])
    page.click("form[role=search] button")
    rows = page.locator("tbody tr")
    assert rows.count() == 1
    page.click(f"text={seeded.late_customer}")
    assert seeded.late_customer in page.locator("h1").inner_text()
    assert page.locator("svg.chart").count() >= 1
    assert "Running bill" in page.content()

    # open its invoice
    page.click(f"a:text-is('{seeded.late_invoice}')")
    assert page.locator("h1").inner_text().startswith(seeded.late_invoice)
    assert page.locator("tr.line-head").count() >= 2
    assert "tier 1" in page.content()  # the line's tiers are shown

    # drill down: line -> windows -> events, each event linked to its proof
    page.locator("a.button", has_text="Windows and events").first.click()
    assert page.locator("svg.chart rect.bar").count() > 24
    page.locator("a.button", has_text="Source events").click()
    events = page.locator("table.events tbody tr")
    assert events.count() > 0
    href = events.first.locator("a", has_text="inclusion proof").get_attribute("href")
    assert href is not None
    assert href.startswith(f"/console/invoices/{seeded.late_invoice}/proof?event_id=")
    assert "&source=" in href
    events_url = page.url
    events.first.locator("a", has_text="inclusion proof").click()
    assert "verifies" in page.locator("section.panel").first.inner_text()
    assert page.locator("ol li code").count() > 0  # the audit path, leaf to root
    page.goto(events_url)
    assert "as known at the cutoff: the line's event count" in page.content()
    if page.locator(".pager a", has_text="Next").count():
        page.locator(".pager a", has_text="Next").click()
        assert "offset=" in page.url
        assert page.locator("table.events tbody tr").count() > 0

    # preview the re-rate (the late events), then issue it
    page.goto(f"{base}/console/invoices/{seeded.late_invoice}/rerate")
    heading = page.locator("h2").first.inner_text()
    assert "debit note that would be issued" in heading
    diff = page.locator("table.diff tbody tr")
    assert diff.count() >= 1
    assert "40 events received after" in page.content()
    preview_total = heading.rsplit(":", 1)[1].strip()
    page.fill("input[name=reason]", "late gateway retries")
    page.check("input[name=confirm]")
    page.click("button:has-text('Issue debit note')")
    assert re.search(r"/console/invoices/DN-\d+", page.url)
    note_heading = page.locator("h1").inner_text()
    assert note_heading.startswith("DN-")
    assert "late gateway retries" in page.content()
    assert preview_total.split()[0] in page.locator("tfoot tr.total").inner_text()

    # the note's events include the hostile one, rendered as text, never run
    page.locator("a.button", has_text="Windows and events").first.click()
    page.locator("a.button", has_text="Source events").click()
    while SCRIPT not in page.locator("table.events").inner_text():
        following = page.locator(".pager a", has_text="Next")
        assert following.count() == 1, "the <script> event is on one of the pages"
        following.click()
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.locator("table.events script").count() == 0

    # the invoice shows its chain with the reason
    page.goto(f"{base}/console/invoices/{seeded.late_invoice}")
    assert "re-rating requested: late gateway retries" in page.locator("ol.chain").inner_text()

    # fix and replay a quarantined event
    page.goto(f"{base}/console/quarantine")
    page.click(f"a[href='/console/quarantine/{seeded.fixable_quarantine_id}']")
    assert "INVALID_EVENT_TIME" in page.content()
    raw = json.loads(page.input_value("#raw"))
    raw["event_time"] = "2024-02-01T11:00:00Z"
    page.fill("#raw", json.dumps(raw))
    page.click("button:has-text('Replay')")
    assert "Replayed: 1 accepted" in page.locator("[role=status]").inner_text()
    page.goto(f"{base}/console/quarantine")
    row = page.locator("tr", has=page.locator(f"a:text-is('{seeded.fixable_quarantine_id}')"))
    assert "replayed" in row.inner_text()

    # every action is in the audit trail under the session's actor
    page.goto(f"{base}/console/audit")
    trail = page.locator("table tbody").inner_text()
    for action in ("console.login", "rerate.mark", "console.quarantine.replay"):
        assert re.search(rf"{re.escape(ACTOR)}\s+{re.escape(action)}", trail), action
    assert re.search(rf"{re.escape(ACTOR)}\s+ingest", trail)

    # log out: the session is over
    page.click("text=Log out")
    assert "/console/login" in page.url
    page.goto(f"{base}/console/invoices")
    assert "/console/login" in page.url


def _sign(number: str, expires: int) -> str:
    message = f"share\x1f{number}\x1f{expires}".encode()
    digest = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_share_link(world: tuple[Seeded, Server], browser: Any, page: Any) -> None:
    seeded, server = world
    base = server.url
    login(page, base)
    page.goto(f"{base}/console/invoices/{seeded.late_invoice}")
    page.fill("input[name=days]", "7")
    page.click("text=Create read-only link")
    link = page.input_value("input.copy")
    assert f"/console/share/{seeded.late_invoice}?expires=" in link

    outsider = browser.new_context().new_page()  # the customer: no session at all
    try:
        response = outsider.goto(link)
        assert response is not None and response.status == 200
        assert seeded.late_invoice in outsider.locator("h1").inner_text()
        assert outsider.locator("tr.line-head").count() >= 2
        assert outsider.locator("nav").count() == 0  # nothing else of the console

        def status(url: str) -> int:
            r = outsider.goto(url)
            assert r is not None
            return int(r.status)

        expires = int(re.search(r"expires=(\d+)", link).group(1))  # type: ignore[union-attr]
        sig = re.search(r"sig=([^&]+)", link).group(1)  # type: ignore[union-attr]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        other = "INV-000001" if seeded.late_invoice != "INV-000001" else "INV-000002"
        assert status(link.replace(sig, flipped)) == 403
        assert status(link.replace(f"expires={expires}", f"expires={expires + 1}")) == 403
        assert status(link.replace(seeded.late_invoice, other)) == 403
        assert "expired or was altered" in outsider.content()
        # a genuine signature whose expiry has passed (the server's clock is NOW)
        past = parse_rfc3339(NOW) - 1
        assert (
            status(
                f"{base}/console/share/{seeded.late_invoice}?expires={past}&sig={_sign(seeded.late_invoice, past)}"
            )
            == 403
        )
        future = parse_rfc3339(NOW) + 3600 * 1_000_000
        assert (
            status(
                f"{base}/console/share/{seeded.late_invoice}?expires={future}&sig={_sign(seeded.late_invoice, future)}"
            )
            == 200
        )
    finally:
        outsider.context.close()
    page.goto(f"{base}/console/audit?action=console.share")
    assert seeded.late_invoice in page.locator("table tbody").inner_text()


def test_ingest_key_cannot_log_in(world: tuple[Seeded, Server], page: Any) -> None:
    _, server = world
    login(page, server.url, INGEST_KEY)
    assert "/console/login" in page.url
    assert "only admin API keys" in page.locator("[role=alert]").inner_text()
    assert not [c for c in page.context.cookies() if c["name"] == "meterline_console"]
    page.goto(f"{server.url}/console")
    assert "/console/login" in page.url
    login(page, server.url, "not-a-key-at-all")
    assert "only admin API keys" in page.locator("[role=alert]").inner_text()


def test_form_without_csrf_token_is_refused(world: tuple[Seeded, Server], page: Any) -> None:
    seeded, server = world
    base = server.url
    login(page, base)
    cookie = next(c for c in page.context.cookies() if c["name"] == "meterline_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # a real form, its token removed before submitting
    page.goto(f"{base}/console/quarantine/{seeded.script_quarantine_id}")
    page.evaluate("() => document.querySelector('main form input[name=csrf]').remove()")
    with page.expect_navigation() as navigation:
        page.click("button:has-text('Replay')")
    assert navigation.value.status == 403
    assert "CSRF" in page.content()
    # the same POSTs sent by hand, with the session cookie: no token, wrong token
    for form in ({"confirm": "yes"}, {"confirm": "yes", "csrf": "forged"}):
        r = page.request.post(f"{base}/console/invoices/{seeded.late_invoice}/rerate", form=form)
        assert r.status == 403
    r = page.request.post(f"{base}/console/logout", form={})
    assert r.status == 403
    page.goto(f"{base}/console")  # still logged in: the refused logout did nothing
    assert page.locator("h1").first.inner_text().startswith("Overview")


def test_script_in_inputs_renders_inert(world: tuple[Seeded, Server], page: Any) -> None:
    seeded, server = world
    base = server.url
    login(page, base)
    for path in (
        "/console/quarantine",
        f"/console/quarantine/{seeded.script_quarantine_id}",
        "/console/audit",
    ):
        response = page.goto(base + path)
        assert response is not None
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert page.evaluate("() => window.__pwned === undefined")
        assert page.locator("main script").count() == 0
    page.goto(f"{base}/console/quarantine/{seeded.script_quarantine_id}")
    assert SCRIPT in page.input_value("#raw")  # editable as text, never as markup
    page.goto(f"{base}/console/quarantine")
    assert "<script>window" in page.locator("table").inner_text()  # shown as text


def test_screenshots(world: tuple[Seeded, Server], browser: Any, tmp_path: Path) -> None:
    """The docs' screenshot helper runs against the tested server and writes real PNGs."""
    seeded, server = world
    shots = capture(browser, server.url, seeded, tmp_path)
    assert len(shots) >= 12
    for shot in shots:
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, shot.name
