"""A document as PDF: something a company could send (DESIGN §7).

The public JSON dict of a document (invoice, credit note or debit note; issued
or draft) is filled into ``templates/invoice.html`` with ``invoice.css``
inlined, and WeasyPrint turns that into an A4 PDF. Page one is the document
itself: seller, customer, number, dates, period, lines, tax, credits, total.
From page two, every line is explained: formula, price versions, segments with
the tier breakdown and exact sub-amounts, rounding, events, windows, digest.

Nothing is recomputed here, so the PDF cannot disagree with the JSON.

Safety: every value from the document or the seller goes through `_e` (HTML
escaping) or `_css_string` (the page footer); the HTML has no external
resource and the URL fetcher refuses every URL, so rendering never touches the
network or the file system.

Determinism: the same document and seller give the same bytes on a machine
(fonts come from the system, so another machine's fonts may differ). The PDF
creation date is the document's issue time, never the clock, and fontTools'
font subsetting, which stamps fonts with the current time, is pinned to
``SOURCE_DATE_EPOCH=0`` while writing.

Importing this module needs WeasyPrint (the ``[pdf]`` extra).
"""

from __future__ import annotations

import html
import os
import string
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date
from babel.numbers import format_percent
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from meterline.billing.progressive import describe
from meterline.domain.errors import MeterlineError
from meterline.domain.money import Currency, format_money
from meterline.pricing.explanation import grouped
from meterline.render.price_words import exact_money as _exact_money
from meterline.render.price_words import segment_prices, unit_price_lines

LOCALE = "en_US"
DEFAULT_SELLER_NAME = "meterline demo seller"

_TITLES = {"invoice": "Invoice", "credit_note": "Credit note", "debit_note": "Debit note"}
# Lines that lower the usage total (a cap; later coupons): shown as adjustments.
_ADJUSTMENT_MODELS = frozenset({"maximum_spend", "coupon"})
_DASH = '<span class="muted">—</span>'


@dataclass(frozen=True)
class Seller:
    """Who sends the document: the block at the top left of page one."""

    name: str
    address_lines: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Seller:
        """METERLINE_SELLER_NAME, _ADDRESS ("|" between lines), _TAX_ID and _EMAIL."""
        env = os.environ if environ is None else environ
        address = env.get("METERLINE_SELLER_ADDRESS", "")
        return cls(
            name=env.get("METERLINE_SELLER_NAME", "").strip() or DEFAULT_SELLER_NAME,
            address_lines=tuple(part.strip() for part in address.split("|") if part.strip()),
            tax_id=env.get("METERLINE_SELLER_TAX_ID", "").strip() or None,
            email=env.get("METERLINE_SELLER_EMAIL", "").strip() or None,
        )


def _seller_of(doc: Mapping[str, Any]) -> Seller | None:
    """The seller recorded in the catalog as known at the document's cutoff."""
    found = (doc.get("finance") or {}).get("seller")
    if not found:
        return None
    return Seller(
        name=str(found["name"]),
        address_lines=tuple(found.get("address") or ()),
        tax_id=found.get("tax_id"),
        email=found.get("email"),
    )


def render_html(doc: Mapping[str, Any], seller: Seller | None = None) -> str:
    """The document as one self-contained HTML page (CSS inlined, nothing external)."""
    return _Renderer(doc, seller or _seller_of(doc) or Seller.from_env()).html()


def render_pdf(doc: Mapping[str, Any], seller: Seller | None = None) -> bytes:
    """The document as an A4 PDF; the same document and seller give the same bytes."""
    page = HTML(string=render_html(doc, seller), url_fetcher=_NoFetch())
    with _pinned_font_timestamps():
        return bytes(page.write_pdf())


class _NoFetch(URLFetcher):  # type: ignore[misc]
    """The document needs no resource, so every URL (http, file, data...) is refused."""

    def fetch(self, url: str, headers: Any = None) -> Any:
        raise ValueError(f"meterline PDFs fetch nothing: refused {url[:80]!r}")


_FONT_TIMESTAMP_LOCK = threading.Lock()


@contextmanager
def _pinned_font_timestamps() -> Iterator[None]:
    """Without HarfBuzz-Subset, WeasyPrint subsets fonts with fontTools, which
    writes the current time into each font's ``head`` table unless
    SOURCE_DATE_EPOCH is set; pin it (and serialise renders while it is set)."""
    with _FONT_TIMESTAMP_LOCK:
        before = os.environ.get("SOURCE_DATE_EPOCH")
        os.environ["SOURCE_DATE_EPOCH"] = "0"
        try:
            yield
        finally:
            if before is None:
                del os.environ["SOURCE_DATE_EPOCH"]
            else:
                os.environ["SOURCE_DATE_EPOCH"] = before


@cache
def _template(name: str) -> str:
    return resources.files("meterline.render").joinpath("templates", name).read_text("utf-8")


# ---------------------------------------------------------------------------
# text helpers: each returns plain text, to be escaped with _e where used


def _e(value: Any) -> str:
    """HTML-escaped text of a value (None -> "")."""
    return "" if value is None else html.escape(str(value), quote=True)


def _css_string(text: str) -> str:
    """A CSS string literal; anything but plain characters is hex-escaped."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-_:#")
    return '"' + "".join(ch if ch in safe else f"\\{ord(ch):06x} " for ch in text) + '"'


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _currency(code: str) -> Currency | None:
    try:
        return Currency(code)
    except MeterlineError:
        return None


def _money(value: Any, code: str, *, negate: bool = False) -> str:
    """Rounded money as people read it ("$1,234.50", "¥1,500", "-$2.98")."""
    number = _decimal(value)
    currency = _currency(code)
    if number is None or currency is None:
        return f"{'-' if negate else ''}{'' if value is None else value} {code}".strip()
    if negate and not number.is_zero():
        number = -number
    try:
        return format_money(number, currency, LOCALE)
    except ValueError:  # not on the minor unit: show it exactly rather than round it
        return _exact_money(number, code)


def _quantity(value: Any) -> str:
    number = _decimal(value)
    return "" if number is None else grouped(number)


def _percent(value: Any) -> str:
    number = _decimal(value)
    if number is None:
        return str(value)
    with localcontext() as ctx:
        ctx.prec = 100
        return str(format_percent(number, locale=LOCALE, decimal_quantization=False))


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _utc(value: Any) -> str:
    """An instant as "2024-01-01 00:00 UTC" (seconds only when not zero)."""
    moment = _instant(value)
    if moment is None:
        return "" if value is None else str(value)
    moment = moment.astimezone(UTC)
    pattern = "%Y-%m-%d %H:%M:%S" if moment.second or moment.microsecond else "%Y-%m-%d %H:%M"
    return moment.strftime(pattern) + " UTC"


def _zone(name: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(name or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _long_date(day: date) -> str:
    return str(format_date(day, "long", locale=LOCALE))


def _plural(count: Any, noun: str) -> str:
    return f"{_quantity(count)} {noun}{'' if count == 1 else 's'}"


def _tag(tag: str, inner_html: str, cls: str = "") -> str:
    return f'<{tag} class="{cls}">{inner_html}</{tag}>' if cls else f"<{tag}>{inner_html}</{tag}>"


def _rows(pairs: list[tuple[str, str]]) -> str:
    """<tr><th>label</th><td>value</td></tr>: labels are escaped here, values are HTML."""
    return "\n".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _line_rate(line: Mapping[str, Any]) -> Any:
    """The one rate of a percentage line, when every segment has the same."""
    if line.get("model") != "percentage":
        return None
    segments = (line.get("explanation") or {}).get("segments") or []
    rates = {(s.get("pricing") or {}).get("rate") for s in segments}
    return rates.pop() if len(rates) == 1 else None


def _is_zero(value: Any) -> bool:
    number = _decimal(value)
    return number is None or number.is_zero()


# ---------------------------------------------------------------------------
# the document


class _Renderer:
    def __init__(self, doc: Mapping[str, Any], seller: Seller) -> None:
        self.doc = doc
        self.seller = seller
        self.code = str(doc.get("currency") or "")
        self.kind = str(doc.get("kind") or "invoice")
        self.status = str(doc.get("status") or "")
        self.number: str | None = doc.get("number") or None
        self.is_draft = self.number is None or self.status == "draft"
        self.title = _TITLES.get(self.kind, "Document")
        self.zone = _zone(doc.get("timezone"))
        self.period: Mapping[str, Any] = doc.get("period") or {}
        self.lines: list[Mapping[str, Any]] = list(doc.get("lines") or [])
        self.customer = str(doc.get("customer_name") or doc.get("customer_id") or "")
        self.cutoff = _quantity(doc.get("cutoff_seq"))

    def money(self, value: Any, *, negate: bool = False) -> str:
        return _e(_money(value, self.code, negate=negate))

    def exact(self, value: Any) -> str:
        return _e(_exact_money(value, self.code))

    def html(self) -> str:
        return string.Template(_template("invoice.html")).substitute(
            title=_e(self._name()),
            metadata=self._metadata(),
            css=_template("invoice.css"),
            footer_css=self._footer_css(),
            seller=self._seller(),
            heading=_e(self.title),
            meta_rows=self._meta_rows(),
            stamp=self._stamp(),
            customer=self._customer(),
            summary=self._summary(),
            notices=self._notices(),
            line_rows=self._line_rows(),
            total_rows=self._total_rows(),
            closing=self._closing(),
            explanations="\n".join(self._explanation(line) for line in self.lines),
            integrity_rows=self._integrity_rows(),
        )

    # -- frame ------------------------------------------------------------------

    def _name(self) -> str:
        who = f" for {self.customer}" if self.customer else ""
        return f"{self.title} {self.number or 'DRAFT'}{who}"

    def _metadata(self) -> str:
        meta = [("author", self.seller.name), ("generator", "meterline")]
        issued = _instant(self.doc.get("issued_at"))
        if issued is not None:  # WeasyPrint's /CreationDate; no meta, no date
            stamp = issued.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta += [("dcterms.created", stamp), ("dcterms.modified", stamp)]
        return "\n".join(f'<meta name="{k}" content="{_e(v)}">' for k, v in meta)

    def _footer_css(self) -> str:
        ref = self.number or "DRAFT - not a valid document"
        content_hash = self.doc.get("content_hash")
        footer = f"{ref} · content hash {content_hash}" if content_hash else ref
        return "@page { @bottom-left { content: " + _css_string(footer) + "; } }"

    def _stamp(self) -> str:
        label = "DRAFT" if self.is_draft else {"paid": "PAID", "void": "VOID"}.get(self.status)
        return f'<div class="stamp {label.lower()}">{label}</div>' if label else ""

    # -- header, parties, notices ---------------------------------------------------

    def _seller(self) -> str:
        s = self.seller
        parts = [_tag("div", _e(s.name), "name")]
        parts += [_tag("div", _e(line)) for line in s.address_lines]
        if s.tax_id:
            parts.append(_tag("div", f"Tax ID: {_e(s.tax_id)}"))
        if s.email:
            parts.append(_tag("div", _e(s.email)))
        return "\n".join(parts)

    def _period_label(self) -> str:
        start = _instant(self.period.get("start"))
        label = str(self.period.get("label") or "")
        if start is None:
            return label
        return str(format_date(start.astimezone(self.zone).date(), "MMMM y", locale=LOCALE))

    def _period_dates(self) -> str:
        """ "January 1, 2024 – January 31, 2024" in the customer's time zone."""
        start, end = _instant(self.period.get("start")), _instant(self.period.get("end"))
        if start is None or end is None:
            return ""
        first = start.astimezone(self.zone).date()
        last = (end - timedelta(microseconds=1)).astimezone(self.zone).date()
        return f"{_long_date(first)} – {_long_date(last)}"

    def _meta_rows(self) -> str:
        number = _tag("strong", _e(self.number)) if self.number else "DRAFT (no number)"
        issued = _instant(self.doc.get("issued_at"))
        issue_date = (
            "not issued (preview)"
            if issued is None
            else _e(_long_date(issued.astimezone(self.zone).date()))
        )
        period = (
            _e(self._period_label())
            + _tag("span", _e(self._period_dates()), "small muted block")
            + _tag("span", _e(self.zone.key), "small muted block nowrap")
        )
        fin: Mapping[str, Any] = self.doc.get("finance") or {}
        rows = [("Number", number), ("Issue date", issue_date)]
        if fin.get("due_date"):
            due = date.fromisoformat(str(fin["due_date"]))
            rows.append(("Due date", _tag("strong", _e(_long_date(due)))))
        if fin.get("payment_terms") and fin.get("due_date"):
            rows.append(("Payment terms", _e(str(fin["payment_terms"]).capitalize())))
        rows.append(("Billing period", period))
        if self.doc.get("corrects"):
            rows.append(("Corrects", _tag("strong", _e(self.doc["corrects"]))))
        if self.status:
            rows.append(("Status", _e(self.status.capitalize())))
        return _rows(rows)

    def _customer(self) -> str:
        parts = [_tag("div", _e(self.customer), "name")]
        bill_to: Mapping[str, Any] = (self.doc.get("finance") or {}).get("bill_to") or {}
        parts += [_tag("div", _e(line)) for line in bill_to.get("address") or []]
        if self.doc.get("customer_id"):
            parts.append(_tag("div", f"Customer ID: {_e(self.doc['customer_id'])}"))
        parts.append(_tag("div", f"Billing time zone: {_e(self.zone.key)}", "small muted"))
        return "\n".join(parts)

    def _total_label(self) -> str:
        return "Total credited" if self.kind == "credit_note" else "Total due"

    def _summary(self) -> str:
        return (
            f'<div class="label">{_e(self._total_label())} ({_e(self.code)})</div>'
            f'<div class="amount">{self.money(self.doc.get("total"))}</div>'
            f'<div class="small muted">{_e(self.title)} for {_e(self._period_label())}</div>'
        )

    def _notices(self) -> str:
        kind = _e(self.title.lower())
        out: list[tuple[str, str, str]] = []  # (class, headline, body html)
        if self.is_draft:
            out.append(
                (
                    "draft",
                    f"DRAFT — not a valid {kind}",
                    f"A preview computed from the usage known at sequence {_e(self.cutoff)}. It "
                    "has no number, is not payable and may change until it is issued.",
                )
            )
        if self.status == "void":
            out.append(
                (
                    "void",
                    "VOID",
                    f"This {kind} has been voided and is not payable. Its content is kept "
                    "unchanged for the record.",
                )
            )
        if self.doc.get("forced"):
            out.append(
                (
                    "forced",
                    "Issued before the period closed",
                    "This document was issued (forced) before every usage window of the period "
                    f"was final. Usage recorded after sequence {_e(self.cutoff)} is not included "
                    "and may be billed or credited by a later correction.",
                )
            )
        progressive = describe(self.doc)
        if progressive:
            role = str(self.doc.get("role"))
            out.append(
                (role, f"{role.capitalize()} invoice (progressive billing)", _e(progressive))
            )
        corrects = self.doc.get("corrects")
        if corrects:
            reasons = "".join(f"<li>{_e(r)}</li>" for r in self.doc.get("reasons") or [])
            out.append(
                (
                    "corrects",
                    f"Corrects invoice {_e(corrects)}",
                    f"This {kind} corrects invoice {_e(corrects)} for "
                    f"{_e(self._period_label())}. Each amount is the difference between the "
                    "period recomputed and what was billed so far."
                    + (f"<ul>{reasons}</ul>" if reasons else ""),
                )
            )
        return "\n".join(
            f'<div class="notice {cls}"><p class="headline">{head}</p><p>{body}</p></div>'
            for cls, head, body in out
        )

    # -- lines and totals -------------------------------------------------------------

    def _line_rows(self) -> str:
        rows = []
        for line in self.lines:
            sub = " · ".join(
                _e(part)
                for part in (line.get("charge"), line.get("price_book"), line.get("model"))
                if part
            )
            if "billed_amount" in line:
                sub += _tag("div", self._billed_and_now(line))
            metered = bool(line.get("meter"))
            quantity = _e(_quantity(line.get("quantity"))) if metered else ""
            price = self._price_cell(line)
            rows.append(
                "<tr>"
                f'<td class="muted">{_e(line.get("line"))}</td>'
                f'<td><div class="desc">{_e(line.get("description"))}</div>'
                f'<div class="sub">{sub}</div></td>'
                f'<td class="num">{quantity or _DASH}</td>'
                f'<td class="num">{price}</td>'
                f'<td class="num">{self.money(line.get("amount"))}</td>'
                "</tr>"
            )
        if not rows:
            rows.append('<tr><td></td><td colspan="4" class="muted">No lines.</td></tr>')
        return "\n".join(rows)

    def _price_cell(self, line: Mapping[str, Any]) -> str:
        """Prices per their unit; with a price change, each version and its days.
        Percentage charges show their rate; caps and coupons are adjustments."""
        if line.get("unit_price") is None:
            rate = _line_rate(line)
            if rate is not None:
                return _tag("div", _e(_percent(rate)), "price")
            if line.get("model") in _ADJUSTMENT_MODELS:
                return '<span class="muted">adjustment</span>'
        prices = segment_prices(line, lambda v: _exact_money(v, self.code), self.zone.key)
        if not prices:
            fallback = unit_price_lines(line, lambda v: _exact_money(v, self.code))
            return "".join(_tag("div", _e(p), "price") for p in fallback) or _DASH
        out = []
        for version, parts in prices:
            if len(prices) > 1:
                out.append(_tag("div", _e(version), "price version"))
            out += [_tag("div", _e(p), "price") for p in parts]
        return "".join(out)

    def _billed_and_now(self, line: Mapping[str, Any]) -> str:
        """A correction line: "billed $178.75 (12,500) → now $190.25 (13,500)"."""
        metered = bool(line.get("meter"))

        def amount(money: Any, quantity: Any) -> str:
            units = f" ({_e(_quantity(quantity))})" if metered else ""
            return f"{self.money(money)}{units}"

        return (
            f"billed {amount(line.get('billed_amount'), line.get('billed_quantity'))} → "
            f"now {amount(line.get('new_amount'), line.get('new_quantity'))}"
        )

    def _total_rows(self) -> str:
        rate = self.doc.get("tax_rate")
        rows = [
            ("Subtotal", self.money(self.doc.get("subtotal"))),
            (
                f"Tax {_percent(rate)}" if rate is not None else "Tax",
                self.money(self.doc.get("tax")),
            ),
        ]
        credits = [c for c in self.doc.get("credits") or [] if not _is_zero(c.get("amount"))]
        for credit in credits:
            label = f"Prepaid credit ({credit.get('grant', '')})"
            rows.append((label, self.money(credit.get("amount"), negate=True)))
        applied = self.doc.get("credits_applied")
        if not credits and not _is_zero(applied):
            rows.append(("Credits applied", self.money(applied, negate=True)))
        out = [f'<tr><th>{_e(k)}</th><td class="num">{v}</td></tr>' for k, v in rows]
        out.append(
            f'<tr class="grand"><th>{_e(self._total_label())} ({_e(self.code)})</th>'
            f'<td class="num">{self.money(self.doc.get("total"))}</td></tr>'
        )
        return "\n".join(out)

    def _closing(self) -> str:
        parts = [
            f"All amounts in {_e(self.code)}. Usage is counted from the events recorded up to "
            f"sequence {_e(self.cutoff)} (the cutoff); events recorded later are not on this "
            "document.",
            "The following pages explain how each line was computed: the formula, the prices "
            "in effect, the tier breakdown and the events behind it.",
        ]
        fin: Mapping[str, Any] = self.doc.get("finance") or {}
        if fin.get("tax_note"):
            parts.insert(0, f"Tax: {_e(fin['tax_note'])}")
        if fin.get("due_date") and self.kind != "credit_note" and not self.is_draft:
            due = _long_date(date.fromisoformat(str(fin["due_date"])))
            parts.insert(0, f"Payment due by {_e(due)} ({_e(fin.get('payment_terms'))}).")
        if self.seller.email:
            parts.append(f"Questions about this document: {_e(self.seller.email)}")
        return "\n".join(_tag("p", p) for p in parts)

    # -- explanations -------------------------------------------------------------------

    def _explanation(self, line: Mapping[str, Any]) -> str:
        x: Mapping[str, Any] = line.get("explanation") or {}
        correction = "billed_amount" in line
        n = line.get("line")
        facts: list[tuple[str, str]] = []
        charge = f"<code>{_e(line.get('charge'))}</code>"
        if line.get("meter"):
            charge += f" on meter <code>{_e(line['meter'])}</code>"
        facts.append(("Charge", charge))
        dims: Mapping[str, Any] = line.get("dimensions") or {}
        if dims:
            pairs = (f"{_e(k)} = <code>{_e(v)}</code>" for k, v in dims.items())
            facts.append(("Dimensions", ", ".join(pairs)))
        facts.append(
            (
                "Price book",
                f"<code>{_e(line.get('price_book'))}</code>, model {_e(line.get('model'))}",
            )
        )
        versions = [
            f"<code>{_e(v.get('version'))}</code> from {_e(_utc(v.get('effective_from')))}"
            for v in x.get("versions") or []
        ]
        if versions:
            facts.append(("Price versions", "; ".join(versions)))
        if correction:
            facts.append(("Billed so far", self._with_quantity(line, "billed")))
            facts.append(("Recomputed", self._with_quantity(line, "new")))
            facts.append(("Difference", self._with_quantity(line, None)))
        elif x.get("quantity") is not None:
            facts.append(("Quantity", _e(_quantity(x["quantity"]))))
        if x.get("exact_amount") is not None:
            facts.append(("Rounding", self._rounding(x)))
        formula = line.get("formula") or x.get("formula")
        head = (
            '<div class="xhead">'
            f'<div class="title">Line {_e(n)} — {_e(line.get("description"))}</div>'
            f'<div class="amount">{self.money(line.get("amount"))}</div></div>'
        )
        parts = [
            f'<div class="xline"><div class="blk">{head}',
            f'<table class="facts">{_rows(facts)}</table>',
            f"<h3>{'Formula (recomputed period)' if correction else 'Formula'}</h3>",
            f'<div class="formula">{_e(formula)}</div></div>',
        ]
        segments = x.get("segments") or []
        rates = line.get("model") == "graduated_percentage"
        for index, segment in enumerate(segments, start=1):
            parts.append(self._segment(segment, index, len(segments), rates))
        notes = "".join(f"<li>{_e(note)}</li>" for note in x.get("notes") or [])
        if notes:
            parts.append(f'<div class="blk"><h3>Notes</h3><ul>{notes}</ul></div>')
        if line.get("usage"):
            parts.append(self._usage(line["usage"], n))
        parts.append("</div>")
        return "\n".join(parts)

    def _with_quantity(self, line: Mapping[str, Any], which: str | None) -> str:
        """Billed / recomputed / difference of a correction line, with units if metered."""
        amount = line.get(f"{which}_amount" if which else "amount")
        quantity = line.get(f"{which}_quantity" if which else "quantity")
        text = self.money(amount)
        if line.get("meter") and quantity is not None:
            text += f" for {_e(_quantity(quantity))} units"
        return text

    def _rounding(self, x: Mapping[str, Any]) -> str:
        exact, rounded = _decimal(x.get("exact_amount")), _decimal(x.get("amount"))
        if exact is not None and exact == rounded:
            return f"{self.exact(exact)} is exact; no rounding needed"
        how = _e(str(x.get("rounding") or "half_up").replace("_", " "))
        return (
            f"exact {self.exact(x.get('exact_amount'))} → {self.money(x.get('amount'))}, "
            f"rounded once ({how}) to the currency's minor unit"
        )

    def _segment(
        self, segment: Mapping[str, Any], index: int, count: int, rates: bool = False
    ) -> str:
        label = f"Segment {index} of {count}" if count > 1 else "Priced period"
        head = (
            f"<strong>{_e(label)}:</strong> {_e(_utc(segment.get('start')))} → "
            f"{_e(_utc(segment.get('end')))}, version <code>{_e(segment.get('version'))}</code>"
        )
        if segment.get("quantity") is not None:
            head += f", quantity {_e(_quantity(segment['quantity']))}"
        if segment.get("note"):
            head += f' <span class="muted">({_e(segment["note"])})</span>'
        out = [f'<div class="segment"><div class="segment-head">{head}</div>']
        tiers = segment.get("tiers") or []
        if tiers:
            out.append(self._tier_table(tiers, segment.get("amount"), rates))
        # Microsecond counts (a flat fee's active_us) are in the formula as days.
        terms = [
            f"{_e(str(k).replace('_', ' '))} = <code>{_e(v)}</code>"
            for k, v in (segment.get("pricing") or {}).items()
            if not str(k).endswith("_us")
        ]
        if terms:
            out.append(f'<div class="small">Pricing terms: {", ".join(terms)}</div>')
        if not tiers and count > 1:
            out.append(f'<div class="formula">{_e(segment.get("formula"))}</div>')
        out.append("</div>")
        return "".join(out)

    def _tier_table(self, tiers: list[Mapping[str, Any]], total: Any, rates: bool = False) -> str:
        with_fee = any(not _is_zero(t.get("flat_fee")) for t in tiers)

        def price(value: Any) -> str:  # graduated_percentage tiers carry a rate
            return _e(_percent(value)) if rates else self.exact(value)

        body = []
        for t in tiers:
            low = _quantity(t.get("from"))
            bounds = f"{low} – {_quantity(t['up_to'])}" if t.get("up_to") else f"over {low}"
            fee = f'<td class="num">{self.exact(t.get("flat_fee"))}</td>' if with_fee else ""
            body.append(
                f"<tr><td>{_e(t.get('tier'))}</td><td>{_e(bounds)}</td>"
                f'<td class="num">{_e(_quantity(t.get("units")))}</td>'
                f'<td class="num">{price(t.get("unit_price"))}</td>{fee}'
                f'<td class="num">{self.exact(t.get("amount"))}</td></tr>'
            )
        columns = 6 if with_fee else 5
        fee_col, fee_head = (
            ('<col class="w-fee">', '<th class="num">Flat fee</th>') if with_fee else ("", "")
        )
        return (
            '<table class="grid tiers"><colgroup><col class="w-tier"><col>'
            f'<col class="w-units"><col class="w-price">{fee_col}<col class="w-amount">'
            "</colgroup><thead><tr><th>Tier</th><th>Units in range</th>"
            f'<th class="num">Units</th><th class="num">{"Rate" if rates else "Unit price"}</th>'
            f"{fee_head}"
            '<th class="num">Amount (exact)</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody>"
            f'<tfoot><tr><td colspan="{columns - 1}">Segment amount (exact, before rounding)'
            f'</td><td class="num">{self.exact(total)}</td></tr></tfoot></table>'
        )

    def _usage(self, usage: Mapping[str, Any], n: Any) -> str:
        windows: Mapping[str, Any] = usage.get("windows") or {}
        count = windows.get("count") or 0
        size = windows.get("size") or usage.get("window")
        if "windows" not in usage:
            window_text = f"windows of {size}"
        elif count:
            window_text = (
                f"{_plural(count, 'window')} of {size}, from {_utc(windows.get('first'))} "
                f"to {_utc(windows.get('last'))}"
            )
        else:
            window_text = f"no window with usage (windows of {size})"
        facts = [
            ("Events", _e(_plural(usage.get("event_count"), "event"))),
            ("Windows", _e(window_text)),
        ]
        if usage.get("events_digest"):  # format-1 documents only
            facts.append(("Events digest", _tag("span", _e(usage.get("events_digest")), "hash")))
        if self.number:
            command = f"meterline explain {self.number} --line {n} --events"
            drill = (
                f"The source events of this line, as known at sequence {_e(self.cutoff)}:"
                f'<code class="cmd">{_e(command)}</code>'
            )
        else:
            drill = (
                "Drafts have no number; once issued, list the source events with"
                f'<code class="cmd">meterline explain NUMBER --line {_e(n)} --events</code>'
            )
        return (
            '<div class="blk"><h3>Usage behind this line</h3>'
            f'<table class="facts">{_rows(facts)}</table><div class="drill">{drill}</div></div>'
        )

    def _integrity_rows(self) -> str:
        doc = self.doc
        rows = [
            ("Document", _e(f"{self.title} {self.number or 'DRAFT'}")),
            ("Usage cutoff", f"sequence {_e(self.cutoff)}"),
        ]
        if doc.get("billed_cutoff_seq") is not None:
            billed = _quantity(doc["billed_cutoff_seq"])
            rows.append(("Billed up to", f"sequence {_e(billed)} (before this correction)"))
        if doc.get("issued_at"):
            rows.append(("Issued at", _e(_utc(doc["issued_at"]))))
        for key, label in (
            ("content_hash", "Content hash"),
            ("previous_hash", "Previous hash"),
            ("document_hash", "Document hash"),
        ):
            if doc.get(key):
                rows.append((label, _tag("span", _e(doc[key]), "hash")))
        for v in doc.get("price_versions") or []:
            rows.append(
                (
                    "Price version",
                    f"<code>{_e(v.get('price_book'))}</code> {_e(v.get('version'))}, effective "
                    f"{_e(_utc(v.get('effective_from')))}"
                    + _tag("span", _e(v.get("content_hash")), "hash block"),
                )
            )
        return _rows(rows)
