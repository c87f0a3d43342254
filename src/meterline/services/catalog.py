"""`catalog apply`: meters, price books and customers as versioned facts.

Applying is one transaction: a catalog either lands whole or not at all.
Re-applying the same catalog is a no-op. Meters are immutable once defined: a
changed aggregation would silently change what past windows mean, so a new
definition needs a new meter code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.customers import parse_customers
from meterline.domain.canonical import dumps
from meterline.domain.catalog_input import catalog_error
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.metering import Meter, parse_meters
from meterline.pricing.catalog import parse_price_books
from meterline.services import entitlements
from meterline.store import audit, sequence, usage_index
from meterline.store.customer_catalog import apply_customer
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters, stored_definitions
from meterline.store.price_catalog import apply_price_book


def apply_seller_section(
    conn: Connection, raw: Any, now_us: int, added: list[str], unchanged: list[str]
) -> None:
    from meterline.billing.seller import parse_seller
    from meterline.store.seller_catalog import apply_seller

    seller = parse_seller(raw)
    if seller is None:
        return
    (added if apply_seller(conn, seller, now_us) else unchanged).append(f"seller {seller.name}")


_TOP_LEVEL = {"meters", "price_books", "customers", "seller", "features", "alerts"}


@dataclass
class ApplyReport:
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    windows_built: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "unchanged": self.unchanged,
            "windows_built": self.windows_built,
        }


class _DecimalSafeLoader(yaml.SafeLoader):
    """YAML floats stay text: 0.015 must never pass through float."""


def _float_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    return _YamlFloat(loader.construct_scalar(node))


class _YamlFloat(str):
    """A number written without quotes in YAML: kept exactly, flagged as unquoted."""


_DecimalSafeLoader.add_constructor("tag:yaml.org,2002:float", _float_as_text)


def load_file(path: str) -> dict[str, Any]:
    """Read a catalog file (YAML or JSON; JSON numbers become exact Decimals)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MeterlineError(
            ErrorCode.INVALID_INPUT, f"cannot read {path}: {exc.strerror}"
        ) from None
    try:
        if path.lower().endswith(".json"):
            doc = decode_json(raw)
        else:
            doc = yaml.load(raw, Loader=_DecimalSafeLoader)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeterlineError(
            ErrorCode.INVALID_CATALOG, f"{path}: not valid YAML/JSON: {first}"
        ) from None
    return validate_shape(doc)


def validate_shape(doc: Any) -> dict[str, Any]:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise MeterlineError(
            ErrorCode.INVALID_CATALOG, "a catalog is a mapping with meters, price_books, customers"
        )
    unknown = sorted(set(doc) - _TOP_LEVEL)
    if unknown:
        raise MeterlineError(
            ErrorCode.INVALID_CATALOG,
            f"unknown catalog section(s): {', '.join(unknown)} (expected {', '.join(sorted(_TOP_LEVEL))})",
        )
    return doc


def _apply_meters(conn: Connection, meters: list[Meter], now_us: int, report: ApplyReport) -> None:
    stored = stored_definitions(conn)
    for m in meters:
        prior = stored.get(m.code)
        if prior is not None:
            if prior[0] != m.content_hash:
                raise catalog_error(
                    "meters",
                    f"meter {m.code!r} already exists with a different definition; meters "
                    "are immutable (their windows depend on it): define a new meter code instead",
                )
            report.unchanged.append(f"meter {m.code}")
            continue
        seq = sequence.take(conn)
        conn.execute(
            text(
                "INSERT INTO meters (code, seq, event_type, definition, content_hash, recorded_at) "
                "VALUES (:c, :q, :t, :d, :h, :r)"
            ),
            {
                "c": m.code,
                "q": seq,
                "t": m.event_type,
                "d": dumps(m.to_catalog()).decode(),
                "h": m.content_hash,
                "r": now_us,
            },
        )
        # A meter defined after its events arrived: index what is already stored.
        report.windows_built += usage_index.build_meter(conn, m, seq)
        report.added.append(f"meter {m.code}")


class _DryRun(Exception):
    """Raised inside the transaction of a dry run so that nothing is kept."""


def apply_catalog(
    store: Store, doc: dict[str, Any], now_us: int, dry_run: bool = False
) -> ApplyReport:
    """Apply a catalog; with `dry_run`, run every check of a real apply and roll back."""
    doc = validate_shape(doc)
    report = ApplyReport()
    with contextlib.suppress(_DryRun):
        _apply(store, doc, now_us, report, dry_run)
    return report


def _apply(
    store: Store, doc: dict[str, Any], now_us: int, report: ApplyReport, dry_run: bool
) -> None:
    with store.write() as conn:
        sequence.lock(conn)  # one catalog change at a time, in seq order
        new_meters = parse_meters(doc.get("meters") or [])
        _apply_meters(conn, new_meters, now_us, report)
        entitlements.apply_section(conn, doc, now_us, report.added, report.unchanged)
        all_meters = {m.code: m for m in load_meters(conn)}
        _apply_price_books(conn, doc.get("price_books") or [], all_meters, now_us, report)
        _apply_customers(conn, doc.get("customers"), now_us, report)
        apply_seller_section(conn, doc.get("seller"), now_us, report.added, report.unchanged)
        audit.catalog_apply(conn, report, now_us)
        if dry_run:
            raise _DryRun


def _apply_customers(conn: Connection, raw: Any, now_us: int, report: ApplyReport) -> None:
    books = {
        str(r[0]): str(r[1]) for r in conn.execute(text("SELECT code, currency FROM price_books"))
    }
    for i, customer in enumerate(parse_customers(raw)):
        for j, sub in enumerate(customer.subscriptions):
            path = f"customers[{i}].subscriptions[{j}].price_book"
            if sub.price_book not in books:
                raise catalog_error(path, f"no price book {sub.price_book!r}")
            if books[sub.price_book] != customer.currency.code:
                raise catalog_error(
                    path,
                    f"price book {sub.price_book} is in {books[sub.price_book]} but the "
                    f"customer is billed in {customer.currency.code}",
                )
        if apply_customer(conn, customer, now_us):
            report.added.append(f"customer {customer.id}")
        else:
            report.unchanged.append(f"customer {customer.id}")


def _apply_price_books(
    conn: Connection, raw: Any, meters: dict[str, Meter], now_us: int, report: ApplyReport
) -> None:
    sums = frozenset(code for code, m in meters.items() if m.aggregation == "sum")
    for spec in parse_price_books(raw, frozenset(meters), sums=sums):
        apply_price_book(conn, spec, now_us, report.added, report.unchanged)
