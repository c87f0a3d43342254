"""Price books and their versions as stored facts (DESIGN §5).

A version is recorded once, with the seq at which it became known; a changed
definition under an existing label is refused (PRICE_VERSION_IMMUTABLE). The
book as known at K is rebuilt from the versions recorded at or before K.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.domain.money import Currency, Rounding
from meterline.pricing.catalog import parse_version
from meterline.pricing.pricebook import PriceBook, PriceBookSpec, VersionSpec
from meterline.store import sequence
from meterline.store.window_index import add_mark


def load_price_book(conn: Connection, code: str, known_at: int | None = None) -> PriceBook:
    book = conn.execute(
        text("SELECT currency, rounding FROM price_books WHERE code = :c"), {"c": code}
    ).first()
    if book is None:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"no price book {code!r}")
    k = sequence.current(conn) if known_at is None else known_at
    rows = conn.execute(
        text(
            "SELECT seq, definition FROM price_versions WHERE book_code = :c AND seq <= :k ORDER BY seq"
        ),
        {"c": code, "k": k},
    ).all()
    versions = tuple(
        parse_version(decode_json(r[1]), _any_meter, f"price_books.{code}").recorded(int(r[0]))
        for r in rows
    )
    return PriceBook(code, Currency(str(book[0])), Rounding(str(book[1])), versions)


class _AnyMeter(frozenset[str]):
    """Stored versions were validated against the meters when applied."""

    def __contains__(self, item: object) -> bool:
        return True


_any_meter = _AnyMeter()


def invoiced_after(
    conn: Connection, book: str, effective_from: int
) -> list[tuple[str, str, int, int]]:
    """Issued invoices billed with `book` whose period ends after `effective_from`."""
    rows = conn.execute(
        text(
            "SELECT number, customer_id, period_start, period_end, body FROM documents "
            "WHERE kind = 'invoice' AND period_end > :t ORDER BY seq"
        ),
        {"t": effective_from},
    ).all()
    out = []
    for number, customer, start, end, body in rows:
        if any(s["price_book"] == book for s in decode_json(body).get("subscriptions", [])):
            out.append((str(number), str(customer), int(start), int(end)))
    return out


def price_book_codes(conn: Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(text("SELECT code FROM price_books ORDER BY code"))]


def apply_price_book(
    conn: Connection, spec: PriceBookSpec, now_us: int, added: list[str], unchanged: list[str]
) -> list[tuple[str, VersionSpec, int]]:
    """Record a book and its new versions; returns (book, version, seq) of what was added."""
    row = conn.execute(
        text("SELECT currency, rounding FROM price_books WHERE code = :c"), {"c": spec.code}
    ).first()
    if row is None:
        conn.execute(
            text(
                "INSERT INTO price_books (code, seq, currency, rounding, recorded_at) "
                "VALUES (:c, :q, :cur, :r, :t)"
            ),
            {
                "c": spec.code,
                "q": sequence.take(conn),
                "cur": spec.currency.code,
                "r": str(spec.rounding),
                "t": now_us,
            },
        )
        added.append(f"price book {spec.code} ({spec.currency.code})")
    elif (str(row[0]), str(row[1])) != (spec.currency.code, str(spec.rounding)):
        raise MeterlineError(
            ErrorCode.PRICE_VERSION_IMMUTABLE,
            f"price book {spec.code!r} is {row[0]}/{row[1]}; its currency and rounding cannot "
            "change (issued invoices depend on them): create a new price book",
        )
    stored = {
        str(r[0]): str(r[1])
        for r in conn.execute(
            text("SELECT label, content_hash FROM price_versions WHERE book_code = :c"),
            {"c": spec.code},
        )
    }
    new: list[tuple[str, VersionSpec, int]] = []
    for version in spec.versions:
        known = stored.get(version.label)
        if known == version.content_hash:
            unchanged.append(f"price {spec.code} {version.label}")
            continue
        if known is not None:
            raise MeterlineError(
                ErrorCode.PRICE_VERSION_IMMUTABLE,
                f"price book {spec.code!r} version {version.label!r} is already recorded with a "
                "different definition; versions never change: add a new version that supersedes "
                f"it (supersedes: {version.label}, reason: ...)",
            )
        invoiced = invoiced_after(conn, spec.code, version.effective_from)
        if invoiced and not version.retroactive:
            raise MeterlineError(
                ErrorCode.RETROACTIVE_VERSION_REQUIRED,
                f"price book {spec.code!r} version {version.label!r} takes effect "
                f"{version.definition()['effective_from']}, inside periods already invoiced "
                f"({', '.join(n for n, _, _, _ in invoiced[:5])}); mark it retroactive: true with a "
                "reason to record it and correct those invoices by re-rating",
            )
        seq = sequence.take(conn)
        for _, customer, _, end in invoiced:
            add_mark(
                conn,
                seq,
                customer,
                version.effective_from,
                end,
                "price",
                f"price version {version.label} of {spec.code} recorded retroactively: {version.reason}",
                0,
                now_us,
            )
        conn.execute(
            text(
                "INSERT INTO price_versions (seq, book_code, label, effective_from, definition, "
                "content_hash, recorded_at) VALUES (:q, :b, :l, :e, :d, :h, :t)"
            ),
            {
                "q": seq,
                "b": spec.code,
                "l": version.label,
                "e": version.effective_from,
                "d": dumps(version.definition()).decode(),
                "h": version.content_hash,
                "t": now_us,
            },
        )
        added.append(f"price {spec.code} {version.label}")
        new.append((spec.code, version, seq))
    return new
