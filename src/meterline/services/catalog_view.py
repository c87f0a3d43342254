"""`catalog show`: the catalog as known now, in the shape `catalog apply` reads.

Everything comes from the stored definitions (the facts), so what is shown is
what invoices are computed from, and applying the output again changes nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import text

from meterline.domain.events import decode_json
from meterline.store.customer_catalog import load_customers
from meterline.store.database import Store
from meterline.store.entitlement_catalog import entitlement_sections
from meterline.store.seller_catalog import load_seller


def _plain(value: Any) -> Any:
    """Decimals as strings (never floats), recursively."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def catalog_as_known(store: Store) -> dict[str, Any]:
    with store.read() as conn:
        meters = [
            decode_json(r[0])
            for r in conn.execute(text("SELECT definition FROM meters ORDER BY seq"))
        ]
        books = []
        for code, currency, rounding in conn.execute(
            text("SELECT code, currency, rounding FROM price_books ORDER BY seq")
        ).all():
            versions = [
                decode_json(r[0])
                for r in conn.execute(
                    text("SELECT definition FROM price_versions WHERE book_code = :c ORDER BY seq"),
                    {"c": code},
                )
            ]
            books.append(
                {
                    "code": str(code),
                    "currency": str(currency),
                    "rounding": str(rounding),
                    "versions": versions,
                }
            )
        customers = [c.definition() for c in load_customers(conn)]
        seller = load_seller(conn)
        extra = entitlement_sections(conn)
    out: dict[str, Any] = {}
    if seller is not None:
        out["seller"] = seller.definition()
    out.update({"meters": meters, "price_books": books, "customers": customers})
    out.update(extra)
    plain: dict[str, Any] = _plain(out)
    return plain
