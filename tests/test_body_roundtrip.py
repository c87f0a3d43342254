"""The typed document model reproduces every stored body byte for byte (billing/body.py).

Issued documents' content hashes must never change: every body a realistic
history stores (invoices with every pricing model, spend limits, coupons,
trials, in-advance fees and unused time, credits, tax, JPY, a +05:30 zone;
credit and debit notes; format 1 and format 2; progressive interim and final
invoices; credits paid by credit grant facts) decodes and re-encodes to the
same canonical JSON and the same hash. A hypothesis round trip covers shapes
no fixture produces.
"""

from __future__ import annotations

import copy
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from sqlalchemy import text
from tests.billing_support import FEB, clock
from tests.support import event, ingest
from tests.test_pricing_invoices import CATALOG, _events

from meterline.billing import body as typed
from meterline.domain.canonical import content_hash, dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.store import sequence
from meterline.store.database import Store, open_store

_NOW = parse_rfc3339("2024-04-02T12:00:00Z")
_LATER = parse_rfc3339("2024-04-03T12:00:00Z")

# The pricing fixture's catalog plus a JPY customer in a +05:30 zone with tax, a
# credit grant and an amount-off coupon on a graduated (tiered) and a volume book.
_EXTRA_BOOK = {
    "code": "tiers_jpy",
    "currency": "JPY",
    "versions": [
        {
            "version": "v1",
            "effective_from": "2023-12-01T00:00:00Z",
            "charges": [
                {"code": "api", "meter": "api_calls", "model": "graduated",
                 "tiers": [{"up_to": 3, "unit_price": "7", "flat_fee": "50"},
                           {"up_to": None, "unit_price": "3"}]},
                {"code": "pay", "meter": "payments", "model": "volume",
                 "tiers": [{"up_to": 100, "unit_price": "0.5"},
                           {"up_to": None, "unit_price": "0.25"}]},
            ],
        },
        {
            "version": "v2",
            "effective_from": "2024-01-20T00:00:00Z",
            "charges": [
                {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "9"},
                {"code": "pay", "meter": "payments", "model": "per_unit", "unit_price": "1"},
            ],
        },
    ],
}  # fmt: skip
_EXTRA_CUSTOMER = {
    "id": "theta",
    "name": "Theta KK",
    "currency": "JPY",
    "timezone": "Asia/Kolkata",
    "tax_rate": "0.10",
    "subscriptions": [{"price_book": "tiers_jpy", "start": "2023-12-31T18:30:00Z"}],
    "credits": [{"id": "intro", "amount": "1000", "granted_at": "2023-12-01T00:00:00Z"}],
    "coupons": [
        {"code": "TENOFF", "amount_off": "10", "duration": "forever",
         "start": "2024-01-01T00:00:00Z", "charges": ["api"]}
    ],
}  # fmt: skip


def _theta_events(prefix: str, n: int, day: int) -> list[dict[str, Any]]:
    out = [
        event(f"{prefix}a{i}", customer="theta", time=f"2024-01-{day:02d}T{i % 24:02d}:00:00Z")
        for i in range(n)
    ]
    out += [
        event(
            f"{prefix}p{i}",
            customer="theta",
            type_="payment",
            time=f"2024-01-{day:02d}T10:{i:02d}:00Z",
            props={"amount": str(40 + i)},
        )
        for i in range(n)
    ]
    return out


def _rich_history(store: Store) -> None:
    """Invoices for every customer and label of the catalog, then late events and
    re-rating: debit and credit notes."""
    catalog = copy.deepcopy(CATALOG)
    catalog["price_books"].append(_EXTRA_BOOK)
    catalog["customers"].append(_EXTRA_CUSTOMER)
    apply_catalog(store, catalog, parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(store, clock(FEB), _events() + _theta_events("t", 5, 12) + _theta_events("u", 3, 25))
    for label in ("2024-01", "2024-02", "2024-03", "2024-01-15", "2024-Q1"):
        invoicing.issue(store, label, _NOW, force=True)
    late = [
        event("late-p", type_="payment", time="2024-01-28T10:00:00Z", props={"amount": "50.00"}),
        *[event(f"late-b{i}", customer="beta", time="2024-01-29T10:00:00Z") for i in range(9)],
        *_theta_events("late", 4, 21),
        *[event(f"late-e{i}", customer="epsilon", time="2024-01-30T10:00:00Z") for i in range(9)],
    ]
    ingest(store, clock("2024-04-03T00:00:00Z"), late, backfill=True)
    for event_id in ("b1", "b2", "delta-p0", "ta0", "tp1"):  # retracted: credit notes
        retract_event(store, "default", event_id, "sent twice", _LATER - 1)
    rerate(store, _LATER)


def _stored(store: Store) -> list[tuple[str, str, str]]:
    with store.read() as conn:
        rows = conn.execute(text("SELECT number, body, content_hash FROM documents ORDER BY seq"))
        return [(str(n), str(b), str(h)) for n, b, h in rows]


def _assert_round_trips(number: str, raw: str, digest: str) -> None:
    data = raw.encode()
    from_bytes = typed.decode(data)
    assert typed.encode_bytes(from_bytes) == data, number
    import msgspec

    from_dict = typed.decode(msgspec.json.decode(data))
    assert from_dict == from_bytes, number
    again = typed.encode_bytes(from_dict)
    assert again == data and content_hash(typed.encode(from_dict)) == digest, number


def test_every_stored_document_of_a_rich_history_round_trips(store: Store) -> None:
    _rich_history(store)
    docs = _stored(store)
    kinds = {number[:2] for number, _, _ in docs}
    assert kinds == {"IN", "CN", "DN"}, kinds
    assert len(docs) >= 15
    for number, raw, digest in docs:
        _assert_round_trips(number, raw, digest)
    bodies = [typed.decode(raw.encode()) for _, raw, _ in docs]
    # What the history was built to exercise is really there.
    models = {line.model for b in bodies for line in b.lines}
    assert {"percentage", "dynamic", "coupon", "flat", "minimum_spend", "maximum_spend"} <= models
    assert any(b.credits for b in bodies) and any(b.currency == "JPY" for b in bodies)
    assert any(line.billed_amount is not typed.UNSET for b in bodies for line in b.lines)
    tiers = [
        t
        for b in bodies
        for line in b.lines
        if line.explanation is not None and line.explanation.segments is not typed.UNSET
        for s in line.explanation.segments
        if s.tiers is not typed.UNSET
        for t in s.tiers
    ]
    assert tiers and all(isinstance(t.amount, Decimal) for t in tiers)


def test_progressive_and_credit_grant_documents_round_trip(store: Store) -> None:
    """Interim and final invoices (role, interim, thresholds, interims, period_subtotal,
    period_tax; null quantities on a flat fee the interims never billed), credits paid
    by credit grant facts, a subscription's threshold, and a correction of the final:
    every stored body round-trips byte for byte."""
    from tests.test_progressive import MID_US, final, interims, use, world

    from meterline.services import credits
    from meterline.services.progressive import recompute as recompute_progressive
    from meterline.store import documents

    world(
        store,
        tax_rate="0.20",
        extra_charges=[{"code": "platform", "model": "flat", "amount": "49.00"}],
    )
    gid = credits.grant(store, "acme", "30.00", parse_rfc3339("2024-01-01T00:00:00Z"))["id"]
    use(store, 120)
    [first] = interims(store)
    use(store, 110, day=12)
    [second] = interims(store, MID_US + 1)
    use(store, 30, day=14)
    last = final(store)
    use(store, 7, at="2024-02-02T00:00:00Z")
    [note] = rerate(store, parse_rfc3339("2024-02-03T00:00:00Z")).issued
    docs = _stored(store)
    assert [n for n, _, _ in docs] == [first.number, second.number, last.number, note.number]
    for number, raw, digest in docs:
        _assert_round_trips(number, raw, digest)
    one, two, fin, cor = (typed.decode(raw.encode()) for _, raw, _ in docs)
    assert (one.role, one.interim, two.role, two.interim) == ("interim", 1, "interim", 2)
    assert one.thresholds == {"usage": Decimal("100")}
    assert fin.role == "final" and fin.interims == (first.number, second.number)
    assert fin.period_subtotal == Decimal("309.00") and fin.period_tax is not typed.UNSET
    assert fin.subscriptions[0].threshold == Decimal("100")
    # the interim's credit is a grant fact's: the grant id and its amount, typed
    assert one.credits == (typed.CreditApplied(grant=str(gid), amount=Decimal("30.00")),)
    assert one.credits_applied == Decimal("30.00")
    [platform] = [x for x in fin.lines if x.charge == "platform"]
    assert platform.quantity is None and platform.billed_quantity is None
    assert platform.new_quantity is None
    assert cor.corrects == last.number and cor.role is typed.UNSET
    # the public JSON is what the dict-based code wrote: money on the minor unit
    public = typed.encode(one)
    assert public["thresholds"] == {"usage": "100.00"} and public["role"] == "interim"
    assert typed.encode(fin)["period_subtotal"] == "309.00"
    # recomputation reproduces the stored bytes of interim and final invoices
    with store.read() as conn:
        for number in (first.number, second.number, last.number):
            doc = documents.get(conn, number)
            again = recompute_progressive(conn, doc)
            assert content_hash(typed.encode(again)) == doc.content_hash, number


def test_format_1_bodies_round_trip(store: Store) -> None:
    """Format 1 (events digest and windows on lines, no format field, no tree head)."""
    _rich_history(store)
    with store.read() as conn:
        k = sequence.current(conn)
        for customer, label in (("acme", "2024-01"), ("theta", "2024-01"), ("beta", "2024-01-15")):
            body = invoicing.compute_body(conn, customer, label, k, fmt=1)
            data = dumps(body)
            decoded = typed.decode(data)
            assert decoded.doc_format == 1 and decoded.tree_head is typed.UNSET
            assert any(
                line.usage is not None and line.usage.events_digest is not typed.UNSET
                for line in decoded.lines
            )
            assert typed.encode_bytes(decoded) == data
            assert typed.encode(decoded) == body  # the same plain data, field for field


def test_demo_documents_round_trip(tmp_path: Path) -> None:
    from meterline.demo.run import run_demo
    from meterline.demo.workload import Workload

    run_demo(tmp_path, Workload(customers=12, events=4_000), Console(file=io.StringIO()))
    store = open_store(f"sqlite:///{tmp_path / 'meterline.db'}")
    try:
        docs = _stored(store)
    finally:
        store.engine.dispose()
    assert {number[:2] for number, _, _ in docs} >= {"IN", "CN", "DN"}
    for number, raw, digest in docs:
        _assert_round_trips(number, raw, digest)


def test_unknown_fields_and_wrong_types_are_refused() -> None:
    base = _minimal_body()
    typed.decode(dumps(base))  # the baseline decodes
    with pytest.raises(MeterlineError) as info:
        typed.decode(dumps({**base, "surprise": 1}))
    assert info.value.code is ErrorCode.INVALID_DOCUMENT and "surprise" in info.value.message
    with pytest.raises(MeterlineError) as info:
        typed.decode({**base, "cutoff_seq": "twelve"})
    assert info.value.code is ErrorCode.INVALID_DOCUMENT


# ---- hypothesis: generated bodies -------------------------------------------------------

_CURRENCIES = {"USD": 2, "JPY": 0, "BHD": 3}
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


def _decimal_text(scale_max: int = 6) -> st.SearchStrategy[str]:
    return st.builds(
        lambda n, s: _fmt(Decimal(n).scaleb(-s)),
        st.integers(-(10**12), 10**12),
        st.integers(0, scale_max),
    )


def _fmt(d: Decimal) -> str:
    from meterline.domain.decimals import fmt

    return fmt(d)


def _money_text(digits: int) -> st.SearchStrategy[str]:
    return st.integers(-(10**10), 10**10).map(lambda n: f"{Decimal(n).scaleb(-digits):f}")


def _optional(d: dict[str, Any], extra: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`d` plus any subset of `extra`'s fields (absent is not null)."""
    return st.fixed_dictionaries(d, optional=extra)


def _tier() -> st.SearchStrategy[dict[str, Any]]:
    q = _decimal_text()
    return _optional(
        {"tier": st.integers(1, 9), "from": q, "units": q, "unit_price": q, "flat_fee": q,
         "amount": q},
        {"up_to": q},
    )  # fmt: skip


def _segment() -> st.SearchStrategy[dict[str, Any]]:
    return _optional(
        {"start": _text, "end": _text, "version": _text, "amount": _decimal_text(),
         "formula": _text},
        {"quantity": _decimal_text(), "tiers": st.lists(_tier(), max_size=3),
         "pricing": st.dictionaries(_text, _text, max_size=3), "note": _text},
    )  # fmt: skip


def _explanation(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    digits = _CURRENCIES[currency]
    version = st.fixed_dictionaries(
        {"version": _text, "effective_from": _text, "content_hash": _text}
    )
    coupon = _optional(
        {"code": _text, "start": _text, "duration": _text},
        {"percent_off": _decimal_text(), "amount_off": _decimal_text(),
         "periods": st.integers(1, 12), "charges": st.lists(_text, max_size=2)},
    )  # fmt: skip
    return _optional(
        {"charge": _text, "model": _text, "currency": st.just(currency), "rounding": _text,
         "basis": _text, "exact_amount": _decimal_text(12), "amount": _money_text(digits),
         "formula": _text, "notes": st.lists(_text, max_size=2)},
        {"price_book": _text, "versions": st.lists(version, max_size=2),
         "segments": st.lists(_segment(), max_size=2), "meter": _text,
         "quantity": _decimal_text(), "coupon": coupon, "base": _money_text(digits)},
    )  # fmt: skip


def _usage() -> st.SearchStrategy[dict[str, Any]]:
    windows = st.fixed_dictionaries(
        {"size": _text, "count": st.integers(0, 99), "first": st.none() | _text,
         "last": st.none() | _text}
    )  # fmt: skip
    return _optional(
        {"event_count": st.integers(0, 10**9)},
        {"window": _text, "events_digest": _text, "windows": windows},
    )


def _line(currency: str) -> st.SearchStrategy[dict[str, Any]]:
    money = _money_text(_CURRENCIES[currency])
    return _optional(
        {"line": st.integers(1, 99), "charge": _text, "description": _text,
         "price_book": _text, "model": _text, "meter": st.none() | _text,
         "dimensions": st.dictionaries(_text, st.none() | _text, max_size=3),
         "quantity": st.none() | _decimal_text(), "unit_price": st.none() | _decimal_text(),
         "amount": money, "formula": _text,
         "explanation": st.none() | _explanation(currency), "usage": st.none() | _usage()},
        {"billed_quantity": st.none() | _decimal_text(), "billed_amount": money,
         "new_quantity": st.none() | _decimal_text(), "new_amount": money},
    )  # fmt: skip


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(st.sampled_from(sorted(_CURRENCIES)))
    money = _money_text(_CURRENCIES[currency])
    period = st.fixed_dictionaries({"start": _text, "end": _text, "label": _text})
    sub = _optional(
        {"price_book": _text, "start": _text, "end": st.none() | _text},
        {"billing_cycle": _text, "anchor": _text, "trial_days": st.integers(1, 90),
         "trial_usage": _text, "threshold": _decimal_text()},
    )  # fmt: skip
    pv = st.fixed_dictionaries(
        {"price_book": _text, "version": _text, "effective_from": _text, "content_hash": _text}
    )
    return draw(
        _optional(
            {"kind": st.sampled_from(["invoice", "credit_note", "debit_note"]),
             "customer_id": _text, "customer_name": _text, "currency": st.just(currency),
             "timezone": _text, "period": period, "subscriptions": st.lists(sub, max_size=2),
             "lines": st.lists(_line(currency), max_size=3), "subtotal": money,
             "tax_rate": _decimal_text(), "tax": money,
             "credits": st.lists(st.fixed_dictionaries({"grant": _text, "amount": money}),
                                 max_size=2),
             "credits_applied": money, "total": money, "corrects": st.none() | _text,
             "reasons": st.lists(_text, max_size=2), "cutoff_seq": st.integers(0, 10**12),
             "price_versions": st.lists(pv, max_size=2)},
            {"billed_cutoff_seq": st.integers(0, 10**12), "format": st.integers(2, 3),
             "tree_head": st.fixed_dictionaries({"size": st.integers(0, 10**9), "root": _text}),
             # progressive billing: interim and final invoices
             "role": st.sampled_from(["interim", "final"]), "interim": st.integers(1, 9),
             "thresholds": st.dictionaries(_text, money, max_size=2),
             "interims": st.lists(_text, max_size=3), "period_subtotal": money,
             "period_tax": money},
        )
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(_bodies())
def test_generated_bodies_round_trip(body: dict[str, Any]) -> None:
    data = dumps(body)
    decoded = typed.decode(data)
    assert typed.encode_bytes(decoded) == data
    assert typed.encode(decoded) == body
    assert typed.decode(body) == decoded


def _minimal_body() -> dict[str, Any]:
    return {
        "kind": "invoice", "customer_id": "c", "customer_name": "C", "currency": "USD",
        "timezone": "UTC",
        "period": {"start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z",
                   "label": "2024-01"},
        "subscriptions": [], "lines": [], "subtotal": "0.00", "tax_rate": "0", "tax": "0.00",
        "credits": [], "credits_applied": "0.00", "total": "0.00", "corrects": None,
        "reasons": [], "cutoff_seq": 3, "price_versions": [],
    }  # fmt: skip


def _reference(value: Any, currency: str) -> Any:
    """The generic rule the compiled encoders must follow (billing/body.py before
    they existed): per field, by the value's runtime type."""
    if isinstance(value, typed._Typed):
        own = getattr(value, "currency", currency)
        cur = own if type(own) is str else currency
        out: dict[str, Any] = {}
        for name, key in zip(
            type(value).__struct_fields__, type(value).__struct_encode_fields__, strict=True
        ):
            v = getattr(value, name)
            money = name in type(value).__money__
            if v is typed.UNSET:
                continue
            if isinstance(v, Decimal):
                out[key] = typed._money(v, cur) if money else _fmt(v)
            elif money and isinstance(v, dict):
                out[key] = {k: typed._money(x, cur) for k, x in v.items()}
            else:
                out[key] = _reference(v, cur)
        return out
    if isinstance(value, tuple):
        return [_reference(v, currency) for v in value]
    if isinstance(value, dict):
        return {k: _reference(v, currency) for k, v in value.items()}
    if isinstance(value, Decimal):
        return _fmt(value)
    return value


def _as_producers_build(value: Any, data: st.DataObject, money: bool = False) -> Any:
    """The same tree as a producer may hold it before encoding: decimals with more
    digits than their canonical text, integral decimals as ints, exact amounts
    with more digits (money only padded: it is always a Decimal on the minor unit)."""
    if isinstance(value, typed._Typed):
        cls = type(value)
        changes = {
            name: _as_producers_build(getattr(value, name), data, name in cls.__money__)
            for name in cls.__struct_fields__
        }
        return msgspec.structs.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(_as_producers_build(v, data, money) for v in value)
    if isinstance(value, dict):
        return {k: _as_producers_build(v, data, money) for k, v in value.items()}
    if isinstance(value, Decimal):
        # money: only more zeros (producers hold Decimals on the minor unit)
        ways = ["keep", "padded"] if money else ["keep", "padded", "int", "finer"]
        how = data.draw(st.sampled_from(ways))
        exponent = value.as_tuple().exponent
        if how == "padded" and isinstance(exponent, int):
            return value.quantize(Decimal(1).scaleb(exponent - 3))
        if how == "int" and value == value.to_integral_value():
            return int(value)
        if how == "finer":
            return value + Decimal("0.0000001")
    return value


@settings(max_examples=60, deadline=None)
@given(_bodies(), st.data())
def test_compiled_encoder_follows_the_generic_rule(
    body: dict[str, Any], data: st.DataObject
) -> None:
    built = _as_producers_build(typed.decode(dumps(body)), data)
    assert typed.encode(built) == _reference(built, built.currency)
