"""The console's pure parts: share-link signatures, sessions, SVG charts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.api.auth import KeyRing, Scope
from meterline.console.charts import Bar, bar_chart
from meterline.console.sessions import (
    ABSOLUTE_US,
    IDLE_US,
    TOUCH_US,
    LoginRefused,
    MemoryTable,
    Session,
    Sessions,
    csrf_ok,
)
from meterline.console.share import sign, valid

SECRET = b"unit-test-secret-0123456789"
NOW = 1_707_000_000_000_000


def test_share_link_valid_altered_expired() -> None:
    sig = sign(SECRET, "INV-000001", NOW + 10)
    assert valid(SECRET, "INV-000001", str(NOW + 10), sig, NOW)
    assert not valid(SECRET, "INV-000001", str(NOW + 10), sig, NOW + 10)  # expired
    assert not valid(SECRET, "INV-000002", str(NOW + 10), sig, NOW)  # other document
    assert not valid(SECRET, "INV-000001", str(NOW + 11), sig, NOW)  # longer life
    assert not valid(b"another-secret-0123456789", "INV-000001", str(NOW + 10), sig, NOW)
    assert not valid(SECRET, "INV-000001", "-1", sig, NOW)
    assert not valid(SECRET, "INV-000001", "1e30", sig, NOW)
    assert not valid(SECRET, "INV-000001", str(NOW + 10), sig[:-1] + "é", NOW)


def test_sessions_admin_only_expiry_and_logout() -> None:
    sessions = Sessions(KeyRing({"ingest-key": Scope.INGEST, "admin-key": Scope.ADMIN}))
    for key in ("ingest-key", "nope", "", "  "):
        with pytest.raises(LoginRefused):
            sessions.login(key, NOW)
    token, session = sessions.login("admin-key", NOW)
    assert session.actor == "console:admin#2"
    assert "admin-key" not in token

    def same(found: Session | None) -> bool:
        return found is not None and (found.actor, found.csrf) == (session.actor, session.csrf)

    assert same(sessions.get(token, NOW + IDLE_US))  # touched: idle clock restarts
    assert same(sessions.get(token, NOW + 2 * IDLE_US))
    assert sessions.get(token, NOW + 3 * IDLE_US + 1) is None  # idle too long: gone
    token, session = sessions.login("admin-key", NOW)
    at = NOW
    while at < NOW + ABSOLUTE_US - IDLE_US:
        at += IDLE_US
        assert same(sessions.get(token, at))
    assert sessions.get(token, NOW + ABSOLUTE_US + 1) is None  # absolute limit
    token, session = sessions.login("admin-key", NOW)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, session.csrf + "x")
    sessions.logout(token)
    assert sessions.get(token, NOW) is None


def test_the_idle_clock_is_written_at_most_once_a_minute() -> None:
    table = MemoryTable()
    sessions = Sessions(KeyRing({"admin-key": Scope.ADMIN}), table)
    token, _ = sessions.login("admin-key", NOW)
    [key] = list(table._rows)
    sessions.get(token, NOW + TOUCH_US - 1)
    assert table.fetch(key) == (table._rows[key][0], table._rows[key][1], NOW, NOW)
    sessions.get(token, NOW + TOUCH_US)
    assert table._rows[key][3] == NOW + TOUCH_US


def test_chart_escapes_labels_and_handles_no_data() -> None:
    svg = str(
        bar_chart(
            [Bar("<script>", Decimal("2.5"), "note & more"), Bar("b", Decimal(0))],
            title="a <b> title",
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "a &lt;b&gt; title" in svg and "note &amp; more" in svg
    assert svg.count("<rect") == 2
    assert "2.5" in svg
    empty = str(bar_chart([], title="nothing"))
    assert "no data" in empty and "<rect" not in empty
