"""The invoice run's and verify's fast paths give exactly what the general code gives.

Canonical decimal text (`pricing._exact.fmt` against `decimals.fmt`), parsed index
states (`usage_index._parse_state` against `from_json`, texts the parser must refuse
included), and credits spent as known at many cutoffs at once
(`documents.credits_spent_at` against `credits_spent`, on both backends).
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from tests.billing_support import FEB_US, calls, catalog, clock, close_january, setup
from tests.support import ingest

from meterline.domain.decimals import fmt as reference_fmt
from meterline.domain.timestamps import parse_rfc3339
from meterline.metering.aggregation import CorruptState, from_json
from meterline.pricing._exact import fmt
from meterline.services import invoicing
from meterline.services.verification import verify
from meterline.store import documents, sequence
from meterline.store.database import Store
from meterline.store.usage_index import _parse_state

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")

decimals = st.builds(
    lambda sign, digits, exponent: Decimal(f"{sign}{digits}E{exponent}"),
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**30),
    st.integers(min_value=-40, max_value=40),
)


@given(value=decimals | st.integers(min_value=-(10**20), max_value=10**20))
def test_fast_decimal_text_is_the_canonical_text(value: Decimal | int) -> None:
    assert fmt(value) == reference_fmt(value)


def test_fast_decimal_text_of_zeros_and_non_finite() -> None:
    for value in [Decimal("0"), Decimal("-0"), Decimal("0E-7"), Decimal("-0E+3"), 0, True]:
        assert fmt(value) == reference_fmt(value)
    for bad in [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]:
        try:
            reference_fmt(bad)
        except ValueError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the reference accepts a non-finite decimal")
        try:
            fmt(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} formatted")


def _outcome(parse: object, text: str) -> tuple[str, str]:
    try:
        got = parse(text)  # type: ignore[operator]
    except CorruptState as exc:
        return ("corrupt", str(exc))
    return (type(got).__name__, repr(got))


def _state(kind: str, raw: str) -> str:
    return f'{{"kind":"{kind}","{kind}":"{raw}"}}'


RAW = [
    "0", "-0", "00", "1", "-1", "0.5", "0.50", "-0.0", "1e5", "1E5", "12.340", ".5",
    "5.", "+1", " 1", "1 ", "NaN", "Infinity", "1_000", "123456789012345678901234567890.125",
]  # fmt: skip


def test_parsed_states_equal_from_json_and_refuse_the_same_texts() -> None:
    texts = [_state(kind, raw) for kind in ("sum", "max", "min", "count") for raw in RAW]
    texts += ['{"kind":"max","max":null}', '{"kind":"count","count":3}', '{"sum":"1","kind":"sum"}']
    texts += ['{"kind":"sum","max":"1"}', '{"kind":"sum","sum":"1"} ', '{"kind":"sum","sum":1}']
    for text in texts:
        assert _outcome(_parse_state, text) == _outcome(from_json, text), text


@given(value=decimals, kind=st.sampled_from(["sum", "max", "min"]))
def test_parsed_states_of_any_decimal_text_equal_from_json(value: Decimal, kind: str) -> None:
    for raw in {reference_fmt(value), f"{value:f}", str(value)}:
        text = _state(kind, raw)
        assert _outcome(_parse_state, text) == _outcome(from_json, text)


def test_credits_spent_at_many_cutoffs_equal_credits_spent_at_each(store: Store) -> None:
    """Catalog credits (no grant facts: verify's batched path), spent by an invoice
    that is then voided: every cutoff before, between and after, at once."""
    doc = catalog()
    doc["customers"][0]["credits"] = [
        {"id": "welcome", "amount": "3.00", "granted_at": "2024-01-01T00:00:00Z"}
    ]
    setup(store, doc)
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(600))
    close_january(store)
    [issued] = invoicing.issue(store, "2024-01", FEB_US).issued
    assert [c.grant for c in issued.body.credits] == ["welcome"]
    invoicing.set_status(store, issued.number, invoicing.Status.VOID, "test", LATER_US)
    with store.read() as conn:
        top = sequence.current(conn)
        wanted = [(c, k) for k in range(top + 2) for c in ("acme", "nobody")]
        got = documents.credits_spent_at(conn, wanted)
        assert got == [documents.credits_spent(conn, c, k) for c, k in wanted]
        assert any(spent for spent in got)  # the invoice spent, before the void
    assert verify(store).ok
