"""The seller as a versioned fact: the version as known at K."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.seller import Seller, parse_seller
from meterline.domain.canonical import dumps
from meterline.domain.events import decode_json
from meterline.store import sequence


def load_seller(conn: Connection, known_at: int | None = None) -> Seller | None:
    k = sequence.current(conn) if known_at is None else known_at
    row = conn.execute(
        text("SELECT definition FROM seller_versions WHERE seq <= :k ORDER BY seq DESC LIMIT 1"),
        {"k": k},
    ).first()
    return None if row is None else parse_seller(decode_json(row[0]))


def apply_seller(conn: Connection, seller: Seller, now_us: int) -> bool:
    """Record a new version if it changed; True when recorded."""
    row = conn.execute(
        text("SELECT content_hash FROM seller_versions ORDER BY seq DESC LIMIT 1")
    ).first()
    if row is not None and str(row[0]) == seller.content_hash:
        return False
    conn.execute(
        text(
            "INSERT INTO seller_versions (seq, definition, content_hash, recorded_at) "
            "VALUES (:q, :d, :h, :t)"
        ),
        {
            "q": sequence.take(conn),
            "d": dumps(seller.definition()).decode(),
            "h": seller.content_hash,
            "t": now_us,
        },
    )
    return True
