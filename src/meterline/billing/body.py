"""A document body as a typed value (DESIGN §7, §8, §10): decode at the edges, typed inside.

A body is a frozen msgspec ``Struct`` tree: money, quantities and rates are
``Decimal``, counts and cutoffs ``int``. JSON (a dict or canonical bytes) exists
only at the edges: ``decode`` when a body is read (store, API), ``encode`` /
``encode_bytes`` when it is hashed, stored or shown.

Issued documents' content hashes must never change, so ``encode(decode(d))``
is byte-identical to ``d`` in canonical JSON, for both document formats and
every kind:

- Money (``__money__`` fields) is written with exactly the currency's minor
  digits (``money_str``; the line explanation's own currency for its amounts);
  every other Decimal with canonical decimal text (``decimals.fmt``): the
  same functions the producers always used, so the text is reproduced.
- Fields some documents lack are explicit optional fields defaulting to
  ``UNSET`` and omitted when unset (format 1 lines' ``events_digest`` and
  ``windows``, format 2's ``format`` and ``tree_head``, a correction's
  ``billed_*`` deltas and ``billed_cutoff_seq``, a coupon line's ``coupon`` and
  ``base``, a subscription's non-default cycle and progressive ``threshold``,
  an interim/final invoice's ``role``, ``interim``, ``thresholds``,
  ``interims``, ``period_subtotal`` and ``period_tax``). ``None`` stays ``null``: an
  absent field and a null one are different bytes. There is no catch-all:
  unknown fields are refused on decode (``forbid_unknown_fields``), so a body
  this model cannot reproduce fails loudly instead of losing a field.
- Two open maps stay maps: a line's ``dimensions`` (the meter's group_by
  names) and a segment's ``pricing`` (the model's parameters as canonical text,
  different keys per pricing model); both are str -> str.
- Sequences are tuples (frozen values); JSON key order does not matter (the
  canonical form sorts keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import cache
from types import UnionType
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

import msgspec
from msgspec import UNSET as UNSET
from msgspec import Struct, UnsetType, field

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, money_str
from meterline.domain.timestamps import format_us
from meterline.pricing._exact import fmt
from meterline.pricing.explanation import Explanation as PricingExplanation
from meterline.pricing.explanation import SegmentLine


class _Typed(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base: names of Decimal fields that are money (formatted to the minor unit)."""

    __money__: ClassVar[frozenset[str]] = frozenset()


class Period(_Typed, frozen=True, kw_only=True):
    start: str
    end: str
    label: str

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end, "label": self.label}


class SubscriptionRef(_Typed, frozen=True, kw_only=True):
    """A subscription as the body records it; cycle fields only when not the default."""

    price_book: str
    start: str
    end: str | None
    billing_cycle: str | UnsetType = UNSET
    anchor: str | UnsetType = UNSET
    trial_days: int | UnsetType = UNSET
    trial_usage: str | UnsetType = UNSET
    # progressive billing (DESIGN §7): canonical decimal text, only when set
    threshold: Decimal | UnsetType = UNSET


class PriceVersion(_Typed, frozen=True, kw_only=True):
    price_book: str
    version: str
    effective_from: str
    content_hash: str


class VersionRef(_Typed, frozen=True, kw_only=True):
    version: str
    effective_from: str
    content_hash: str


class Tier(_Typed, frozen=True, kw_only=True):
    """One tier's share of a segment, exact (``after`` is the JSON field ``from``)."""

    tier: int
    after: Decimal = field(name="from")
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal
    amount: Decimal
    up_to: Decimal | UnsetType = UNSET


class Segment(_Typed, frozen=True, kw_only=True):
    """A [start, end) piece of the period priced with one version; amount exact."""

    start: str
    end: str
    version: str
    amount: Decimal
    formula: str
    quantity: Decimal | UnsetType = UNSET
    tiers: tuple[Tier, ...] | UnsetType = UNSET
    pricing: dict[str, str] | UnsetType = UNSET
    note: str | UnsetType = UNSET


class CouponTerms(_Typed, frozen=True, kw_only=True):
    code: str
    start: str
    duration: str
    percent_off: Decimal | UnsetType = UNSET
    amount_off: Decimal | UnsetType = UNSET
    periods: int | UnsetType = UNSET
    charges: tuple[str, ...] | UnsetType = UNSET


class Explanation(_Typed, frozen=True, kw_only=True):
    """Why a line costs what it costs. Rated lines carry versions and segments;
    coupon lines carry the coupon's terms and the base it discounted."""

    __money__ = frozenset({"amount", "base"})

    charge: str
    model: str
    currency: str
    rounding: str
    basis: str
    exact_amount: Decimal
    amount: Decimal
    formula: str
    notes: tuple[str, ...]
    price_book: str | UnsetType = UNSET
    versions: tuple[VersionRef, ...] | UnsetType = UNSET
    segments: tuple[Segment, ...] | UnsetType = UNSET
    meter: str | UnsetType = UNSET
    quantity: Decimal | UnsetType = UNSET
    coupon: CouponTerms | UnsetType = UNSET
    base: Decimal | UnsetType = UNSET


class Windows(_Typed, frozen=True, kw_only=True):
    """Format 1: the windows a line's events fell in."""

    size: str
    count: int
    first: str | None
    last: str | None


class Usage(_Typed, frozen=True, kw_only=True):
    """A metered line's provenance: format 2 has the event count and window size;
    format 1 also the digest of its sorted event keys and its windows."""

    event_count: int
    window: str | UnsetType = UNSET
    events_digest: str | UnsetType = UNSET
    windows: Windows | UnsetType = UNSET


class Line(_Typed, frozen=True, kw_only=True):
    """One line. A correction's line carries signed deltas in quantity and amount,
    and what was billed and is due now in the ``billed_*`` / ``new_*`` fields."""

    __money__ = frozenset({"amount", "billed_amount", "new_amount"})

    line: int
    charge: str
    description: str
    price_book: str
    model: str
    meter: str | None
    dimensions: dict[str, str | None]
    quantity: Decimal | None
    unit_price: Decimal | None
    amount: Decimal
    formula: str
    explanation: Explanation | None
    usage: Usage | None
    # a progressive interim/final line without a quantity writes null here
    billed_quantity: Decimal | UnsetType | None = UNSET
    billed_amount: Decimal | UnsetType = UNSET
    new_quantity: Decimal | UnsetType | None = UNSET
    new_amount: Decimal | UnsetType = UNSET

    @property
    def identity(self) -> tuple[str, str, tuple[tuple[str, str | None], ...]]:
        """Line identity for corrections: price book, charge code, dimension values."""
        return (self.price_book, self.charge, tuple(sorted(self.dimensions.items())))


class CreditApplied(_Typed, frozen=True, kw_only=True):
    __money__ = frozenset({"amount"})

    grant: str
    amount: Decimal


class TreeHead(_Typed, frozen=True, kw_only=True):
    size: int
    root: str


class Body(_Typed, frozen=True, kw_only=True):
    """Everything a document computes from the store as known at its cutoff."""

    __money__ = frozenset(
        {
            "subtotal",
            "tax",
            "credits_applied",
            "total",
            "thresholds",
            "period_subtotal",
            "period_tax",
        }
    )

    kind: str
    customer_id: str
    customer_name: str
    currency: str
    timezone: str
    period: Period
    subscriptions: tuple[SubscriptionRef, ...]
    lines: tuple[Line, ...]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    credits: tuple[CreditApplied, ...]
    credits_applied: Decimal
    total: Decimal
    corrects: str | None
    reasons: tuple[str, ...]
    cutoff_seq: int
    price_versions: tuple[PriceVersion, ...]
    billed_cutoff_seq: int | UnsetType = UNSET
    format: int | UnsetType = UNSET
    tree_head: TreeHead | UnsetType = UNSET
    # Progressive billing (billing/progressive.py): an interim invoice has its role,
    # number in the period and the thresholds (money per price book); a final invoice
    # the interims' numbers and the whole period's subtotal and tax.
    role: str | UnsetType = UNSET
    interim: int | UnsetType = UNSET
    thresholds: dict[str, Decimal] | UnsetType = UNSET
    interims: tuple[str, ...] | UnsetType = UNSET
    period_subtotal: Decimal | UnsetType = UNSET
    period_tax: Decimal | UnsetType = UNSET

    @property
    def role_of(self) -> str | None:
        """The progressive role ("interim" or "final"), None on any other document."""
        return None if self.role is UNSET else self.role

    @property
    def doc_format(self) -> int:
        """The format the document was issued under (absent = 1)."""
        return 1 if self.format is UNSET else int(self.format)

    @property
    def money_currency(self) -> Currency:
        return _currency(self.currency)

    def text(self, amount: Decimal) -> str:
        """Money of this body as its JSON text ("180.00", JPY "1500")."""
        return money_str(amount, _currency(self.currency))


@cache
def _currency(code: str) -> Currency:
    return Currency(code)


def _money(value: Decimal, currency: str) -> str:
    """`money_str`, without its quantize when the value already has exactly the minor
    digits (every amount decoded from a stored body): the same text, cheaper."""
    cur = _currency(currency)
    if value:  # zero goes through money_str (which never writes "-0.00")
        text = f"{value:f}"
        dot = text.find(".")
        if (len(text) - dot - 1 if dot >= 0 else 0) == cur.minor_digits:
            return text
    return money_str(value, cur)


def _value(v: Any, cur: str, money: bool) -> Any:
    """One field's plain JSON data, whatever its runtime type (the reference rule;
    the compiled encoders below take the declared type's branch first)."""
    t = type(v)
    if t is str or t is int or v is None or t is bool:
        return v
    if isinstance(v, Decimal):
        return _money(v, cur) if money else fmt(v)
    if money and isinstance(v, dict):  # a map of money (thresholds)
        return {k: _money(x, cur) for k, x in v.items()}
    return _plain(v, cur)


def _plain(value: Any, currency: str) -> Any:
    """Plain JSON data of a struct tree: money at the minor unit, decimals canonical."""
    if isinstance(value, _Typed):
        return _encoder(type(value))(value, currency)
    t = type(value)
    if t is str or t is int or value is None or t is bool:
        return value
    if isinstance(value, tuple):
        return [_plain(v, currency) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, currency) for k, v in value.items()}
    if isinstance(value, Decimal):
        return fmt(value)
    return value


_ENCODERS: dict[type, Callable[[Any, str], dict[str, Any]]] = {}


def _encoder(cls: type[_Typed]) -> Callable[[Any, str], dict[str, Any]]:
    got = _ENCODERS.get(cls)
    if got is None:
        got = _ENCODERS[cls] = _compile(cls)
    return got


def _field_code(hint: Any, money: bool) -> str:
    """The expression for ``x`` of declared type ``hint`` (UNSET and None already
    peeled off by the caller's guard): the declared type's branch when the runtime
    type is the declared one, else `_value` (same data as before, never a guess)."""
    m = repr(money)
    if isinstance(hint, UnionType):  # peel "| None" and "| UnsetType" off
        rest = [a for a in get_args(hint) if a is not UnsetType and a is not type(None)]
        return _field_code(rest[0], money) if len(rest) == 1 else f"_value(x, cur, {m})"
    if get_origin(hint) is tuple:
        (item, _) = get_args(hint)
        if isinstance(item, type) and issubclass(item, _Typed):
            return (
                f"[_enc_{item.__name__}(i, cur) if type(i) is {item.__name__} "
                f"else _plain(i, cur) for i in x] if type(x) is tuple else _value(x, cur, {m})"
            )
        return f"[i if type(i) is str else _plain(i, cur) for i in x] if type(x) is tuple else _value(x, cur, {m})"
    if get_origin(hint) is dict:
        if money:
            return f"{{k: _money(i, cur) for k, i in x.items()}} if type(x) is dict else _value(x, cur, {m})"
        return (
            "{k: i if i is None or type(i) is str else _plain(i, cur) for k, i in x.items()} "
            f"if type(x) is dict else _value(x, cur, {m})"
        )
    if hint is Decimal:
        how = "_money(x, cur)" if money else "fmt(x)"
        return f"{how} if type(x) is Decimal else _value(x, cur, {m})"
    if hint in (str, int, bool):
        return f"x if type(x) is {hint.__name__} else _value(x, cur, {m})"
    if isinstance(hint, type) and issubclass(hint, _Typed):
        name = hint.__name__
        return f"_enc_{name}(x, cur) if type(x) is {name} else _value(x, cur, {m})"
    return f"_value(x, cur, {m})"


def _structs_in(hints: Iterable[Any]) -> set[type[_Typed]]:
    out: set[type[_Typed]] = set()
    for h in hints:
        if isinstance(h, type) and issubclass(h, _Typed):
            out.add(h)
        else:
            out |= _structs_in(get_args(h))
    return out


def _compile(cls: type[_Typed]) -> Callable[[Any, str], dict[str, Any]]:
    """A plain-data encoder for one struct class, generated from its declared field
    types (as attrs and msgspec build theirs): no per-field type dispatch, lookup
    or generic recursion on the hot path (every issued and verified body)."""
    hints = get_type_hints(cls)
    src = ["def enc(v, currency):"]
    if "currency" in cls.__struct_fields__:  # an explanation has its own currency
        src += ["    own = v.currency", "    cur = own if type(own) is str else currency"]
    else:
        src.append("    cur = currency")
    src.append("    out = {}")
    for name, key in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True):
        hint = hints[name]
        expr = _field_code(hint, name in cls.__money__)
        src += [
            f"    x = v.{name}",
            "    if x is None:",
            f"        out[{key!r}] = None",
            "    elif x is not UNSET:",
            f"        out[{key!r}] = {expr}",
        ]
    src.append("    return out")
    scope: dict[str, Any] = dict(globals())
    for t in _structs_in(hints.values()):  # nested classes' encoders, bound by name
        scope[f"_enc_{t.__name__}"] = _encoder(t)
    exec("\n".join(src), scope)  # our own source, built from our own declared types
    return scope["enc"]  # type: ignore[no-any-return]


_canonical = msgspec.json.Encoder(order="sorted")
_from_json = msgspec.json.Decoder(Body)


def encode(body: Body) -> dict[str, Any]:
    """The body as plain JSON data (str, int, None, list, dict): the public shape."""
    return _plain(body, body.currency)  # type: ignore[no-any-return]


# The last body encoded and its bytes: issuing hashes a body and then stores it,
# so the second call is free (one entry, compared by identity; bodies are frozen).
_last: tuple[Body, bytes] | None = None


def remember(body: Body, data: bytes) -> None:
    """Make ``data`` what `encode_bytes` returns for ``body`` next: its canonical
    bytes, encoded elsewhere (an invoice worker process), checked by the caller
    against the body's content hash."""
    global _last
    _last = (body, data)


def encode_bytes(body: Body) -> bytes:
    """Canonical JSON of the body (what is hashed and stored; domain/canonical.py)."""
    global _last
    last = _last
    if last is not None and last[0] is body:
        return last[1]
    data = _canonical.encode(encode(body))
    _last = (body, data)
    return data


def decode(data: dict[str, Any] | bytes) -> Body:
    """A body from its JSON (a dict or bytes); a shape this model does not know is
    refused with INVALID_DOCUMENT rather than silently re-encoded differently."""
    try:
        if isinstance(data, bytes | bytearray | memoryview):
            return _from_json.decode(data)
        return msgspec.convert(data, Body, strict=False)
    except msgspec.ValidationError as e:
        raise MeterlineError(ErrorCode.INVALID_DOCUMENT, f"not a document body: {e}") from None


class _CreditsOnly(Struct, frozen=True, kw_only=True):
    """The credits of a stored body and nothing else (other fields are skipped)."""

    credits: tuple[CreditApplied, ...] = ()


_credits_from_json = msgspec.json.Decoder(_CreditsOnly)


def credits_of(data: bytes) -> tuple[CreditApplied, ...]:
    """The credits a stored body applied, without decoding the rest of it (credit
    balances read every document of a customer)."""
    try:
        return _credits_from_json.decode(data).credits
    except msgspec.ValidationError as e:
        raise MeterlineError(ErrorCode.INVALID_DOCUMENT, f"not a document body: {e}") from None


_INSTANTS: dict[int, str] = {}


def _instant(us: int) -> str:
    """`format_us`, remembered: explanations repeat the same few segment bounds and
    version dates on every line of every invoice of a run. Bounded."""
    got = _INSTANTS.get(us)
    if got is None:
        if len(_INSTANTS) >= 4096:
            _INSTANTS.clear()
        got = _INSTANTS[us] = format_us(us)
    return got


def explanation_of(x: PricingExplanation) -> Explanation:
    """The typed explanation of a rated amount (what ``Explanation.to_dict`` writes)."""
    return Explanation(
        charge=x.charge,
        model=x.model,
        currency=x.currency.code,
        rounding=x.rounding.value,
        basis=x.basis.value,
        exact_amount=x.exact_amount,
        amount=x.amount,
        formula=x.formula,
        notes=x.notes,
        price_book=x.price_book,
        versions=tuple(
            VersionRef(
                version=v.label,
                effective_from=_instant(v.effective_from),
                content_hash=v.content_hash,
            )
            for v in x.versions
        ),
        segments=tuple(_segment_of(s) for s in x.segments),
        meter=UNSET if x.meter is None else x.meter,
        quantity=UNSET if x.quantity is None else x.quantity,
    )


def _segment_of(s: SegmentLine) -> Segment:
    p = s.priced
    return Segment(
        start=_instant(s.start),
        end=_instant(s.end),
        version=s.version.label,
        amount=p.amount,
        formula=s.formula,
        quantity=UNSET if s.quantity is None else s.quantity,
        tiers=tuple(
            Tier(
                tier=t.tier,
                after=t.after,
                units=t.units,
                unit_price=t.unit_price,
                flat_fee=t.flat_fee,
                amount=t.amount,
                up_to=UNSET if t.up_to is None else t.up_to,
            )
            for t in p.tiers
        )
        if p.tiers
        else UNSET,
        pricing=dict(p.pricing) if p.pricing else UNSET,
        note=p.note or UNSET,
    )
