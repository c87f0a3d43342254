"""The catalog's features and catalog-wide alerts as versioned facts (DESIGN §13).

One table, `entitlement_catalog`, rows of kind `feature` or `alert`; the row
with the greatest seq per (kind, code) as known at K is in force. Applying an
unchanged definition records nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.entitlements import AlertRule, Feature, parse_alert, parse_feature
from meterline.domain.canonical import dumps
from meterline.domain.events import decode_json
from meterline.store import sequence

FEATURE = "feature"
ALERT = "alert"


def _latest(conn: Connection, kind: str, known_at: int | None) -> list[tuple[str, str]]:
    k = sequence.current(conn) if known_at is None else known_at
    rows = conn.execute(
        text(
            "SELECT e.code, e.definition FROM entitlement_catalog e WHERE e.kind = :kind AND "
            "e.seq = (SELECT MAX(e2.seq) FROM entitlement_catalog e2 WHERE e2.kind = e.kind "
            "AND e2.code = e.code AND e2.seq <= :k) ORDER BY e.code"
        ),
        {"kind": kind, "k": k},
    ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def load_features(conn: Connection, known_at: int | None = None) -> dict[str, Feature]:
    return {
        code: parse_feature(decode_json(d), f"feature {code}")
        for code, d in _latest(conn, FEATURE, known_at)
    }


def load_feature(conn: Connection, code: str, known_at: int | None = None) -> Feature | None:
    """One feature as known at K: one indexed row."""
    k = sequence.current(conn) if known_at is None else known_at
    row = conn.execute(
        text(
            "SELECT definition FROM entitlement_catalog WHERE kind = 'feature' AND code = :c "
            "AND seq <= :k ORDER BY seq DESC LIMIT 1"
        ),
        {"c": code, "k": k},
    ).first()
    return None if row is None else parse_feature(decode_json(row[0]), f"feature {code}")


def load_alerts(conn: Connection, known_at: int | None = None) -> list[AlertRule]:
    """Catalog-wide alerts in force (disabled ones included; callers skip them)."""
    return [
        parse_alert(decode_json(d), f"alert {code}") for code, d in _latest(conn, ALERT, known_at)
    ]


def entitlement_sections(conn: Connection) -> dict[str, Any]:
    """`features` and `alerts` as a catalog file writes them (only when there are any,
    so catalogs without them read back as before)."""
    out: dict[str, Any] = {}
    features = [f.definition() for f in load_features(conn).values()]
    if features:
        out["features"] = [{k: v for k, v in f.items() if v is not None} for f in features]
    alerts = [a.definition() for a in load_alerts(conn)]
    if alerts:
        out["alerts"] = alerts
    return out


def apply(conn: Connection, kind: str, item: Feature | AlertRule, now_us: int) -> bool:
    """Record a new version if the definition changed; True when recorded."""
    row = conn.execute(
        text(
            "SELECT content_hash FROM entitlement_catalog WHERE kind = :kind AND code = :c "
            "ORDER BY seq DESC LIMIT 1"
        ),
        {"kind": kind, "c": item.code},
    ).first()
    if row is not None and str(row[0]) == item.content_hash:
        return False
    conn.execute(
        text(
            "INSERT INTO entitlement_catalog (seq, kind, code, definition, content_hash, "
            "recorded_at) VALUES (:q, :kind, :c, :d, :h, :t)"
        ),
        {
            "q": sequence.take(conn),
            "kind": kind,
            "c": item.code,
            "d": dumps(item.definition()).decode(),
            "h": item.content_hash,
            "t": now_us,
        },
    )
    return True
