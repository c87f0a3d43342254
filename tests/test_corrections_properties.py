"""Hypothesis (DESIGN §8): original + corrections == recomputed from scratch.

Random histories of late events, retractions, retroactive price versions and
re-rating runs, interleaved. A new price version may switch the charge to
per_unit with free units, package with a unit conversion or a percentage with
a fixed fee per event (on a sum meter), and may carry a minimum spend and a
maximum spend (a cap line) and a seat fee billed in advance; each customer has
a coupon and one a free trial, so corrections of those are covered too; the
other is billed progressively (a threshold), so January's events, arriving in two
halves while it is open, issue interim invoices that the final invoice nets. At
the end, for every customer, the sums of subtotal and tax over its interim
invoices, its final invoice and all corrections equal the invoice computed from
scratch at the final cutoff; and the same facts arriving in another order give the
same final totals.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.billing_support import FEB, FEB_US, V1, catalog, clock, close_january
from tests.conftest import reset
from tests.support import event, ingest

from meterline.billing.body import UNSET
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.progressive import issue_interims
from meterline.services.retraction import retract_event
from meterline.store import documents, sequence
from meterline.store.database import Store

LATER = "2024-02-03T00:00:00Z"
LATER_US = parse_rfc3339(LATER)
# Each customer has a coupon, so corrections must recompute discounts too.
COUPONS = {
    "acme": {"code": "P15", "percent_off": "15", "duration": "forever"},
    "beta": {"code": "A25", "amount_off": "0.25", "duration": "once"},
}
# beta is in a free trial for its first 5 days: late events in it change nothing billed.
# acme is billed progressively: interim invoices while January is open, then a final one.
TRIAL: dict[str, dict[str, Any]] = {
    "acme": {"threshold": "0.40"},
    "beta": {"trial_days": 5, "trial_usage": "free"},
}
CUSTOMERS = [
    {
        "id": c,
        "name": c,
        "currency": "USD",
        "tax_rate": "0.19",
        "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z", **TRIAL[c]}],
        "coupons": [{**COUPONS[c], "start": "2024-01-01T00:00:00Z"}],
    }
    for c in ("acme", "beta")
]
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def ev(i: int, day: int, customer: str) -> dict[str, Any]:
    return event(
        f"e{i}",
        customer=customer,
        time=f"2024-01-{day:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        props={"amount": str(i % 7)},
    )


# A sum meter over the same events, for the models that price a sum.
VOLUME = {"code": "volume", "event_type": "api_call", "aggregation": "sum", "property": "amount"}


def doc(*versions: dict[str, Any]) -> dict[str, Any]:
    out = catalog(*versions, customers=CUSTOMERS)
    out["meters"].append(VOLUME)
    return out


def charges(kind: str, price: str) -> list[dict[str, Any]]:
    """The charges of a generated version: the api line, under one of several models."""
    tiers = [{"up_to": 50, "unit_price": "0.03"}, {"up_to": None, "unit_price": price}]
    graduated = {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": tiers}
    if kind == "free_units":  # with a seat fee billed in advance
        per_unit = {"model": "per_unit", "unit_price": price, "free_units": 20}
        seat = {"code": "seat", "model": "flat", "amount": "3.00", "in_advance": True}
        return [{"code": "api", "meter": "api_calls", **per_unit}, seat]
    if kind == "conversion":
        package = {"model": "package", "package_size": 2, "package_price": price}
        conversion = {"divide_by": 3, "round": "up"}
        return [{"code": "api", "meter": "api_calls", **package, "conversion": conversion}]
    if kind == "percentage":
        fee = {"rate": "0.015", "fixed_fee": price, "free_events": 5, "free_units": 10}
        return [graduated, {"code": "fees", "meter": "volume", "model": "percentage", **fee}]
    return [graduated]


MODELS = st.sampled_from(["graduated", "free_units", "conversion", "percentage"])
# (minimum_spend, maximum_spend): caps low enough to bite on a few dozen events.
LIMITS = st.sampled_from([(None, None), (None, "0.50"), ("0.30", "1.20"), ("0.80", None)])


op = st.one_of(
    st.tuples(
        st.just("late"),
        st.lists(
            st.tuples(st.integers(1, 31), st.sampled_from(["acme", "beta"])),
            min_size=1,
            max_size=40,
        ),
    ),
    st.tuples(st.just("retract"), st.lists(st.integers(0, 10**6), min_size=1, max_size=4)),
    st.tuples(
        st.just("price"),
        st.tuples(
            st.integers(2, 30),
            st.sampled_from(["0.011", "0.02", "0.005", "0.0137"]),
            MODELS,
            LIMITS,
        ),
    ),
    st.tuples(st.just("rerate"), st.none()),
)
history = st.tuples(
    st.lists(
        st.tuples(st.integers(1, 31), st.sampled_from(["acme", "beta"])), min_size=0, max_size=120
    ),
    st.lists(op, min_size=1, max_size=6),
)


def play(
    store: Store, initial: list[Any], ops: list[Any], rng: random.Random | None
) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    reset(store)
    apply_catalog(store, doc(V1), parse_rfc3339("2024-01-01T00:00:00Z"))
    first = [ev(i, d, c) for i, (d, c) in enumerate(initial)]
    if rng:
        rng.shuffle(first)
    # January's events arrive in two halves while it is open; after each, the interim
    # invoices due (progressive billing) are issued.
    half = len(first) // 2
    for part in (first[:half], first[half:]):
        ingest(store, clock(FEB), part, batch_size=37)
        issue_interims(store, FEB_US)
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    n, versions, ids = len(initial), [V1], [e["event_id"] for e in first]
    for kind, arg in ops:
        if kind == "late":
            batch = [ev(n + j, d, c) for j, (d, c) in enumerate(arg)]
            n += len(arg)
            ids += [e["event_id"] for e in batch]
            if rng:
                rng.shuffle(batch)
            ingest(store, clock(LATER), batch, batch_size=7)
        elif kind == "retract" and ids:
            for pick in arg:
                retract_event(store, "default", sorted(ids)[pick % len(ids)], "dispute", LATER_US)
        elif kind == "price":
            day, price, model, (minimum, maximum) = arg
            label = f"v{len(versions) + 1}"
            when = f"2024-01-{day:02d}T00:00:00Z"
            version: dict[str, Any] = {
                "version": label,
                "effective_from": when,
                "retroactive": True,
                "reason": f"fix {label}",
                "charges": charges(model, price),
            }
            if minimum is not None:
                version["minimum_spend"] = minimum
            if maximum is not None:
                version["maximum_spend"] = maximum
            same_day = [v for v in versions if v["effective_from"] == when]
            if same_day:  # a correction of that version: it must say so
                version["supersedes"] = max(same_day, key=lambda v: int(v["version"][1:]))[
                    "version"
                ]
            versions.append(version)
            versions.sort(key=lambda v: v["effective_from"])
            apply_catalog(store, doc(*versions), LATER_US)
        else:
            rerate(store, LATER_US)
    rerate(store, LATER_US)
    assert rerate(store, LATER_US).issued == []  # idempotent at the end
    out = {}
    with store.read() as conn:
        k = sequence.current(conn)
        docs = documents.list_documents(conn)
        finals = [d for d in docs if d.kind == "invoice" and d.body.role_of != "interim"]
        for inv in finals:
            interims = [
                d
                for d in docs
                if d.body.role_of == "interim" and d.body.customer_id == inv.body.customer_id
            ]
            got = inv.body.interims
            assert (() if got is UNSET else got) == tuple(d.number for d in interims)
            notes = [d for d in docs if d.body.corrects == inv.number]
            related = [*interims, inv, *notes]  # billed = interims + final + corrections
            billed_sub = sum((d.body.subtotal for d in related), Decimal(0))
            billed_tax = sum((d.body.tax for d in related), Decimal(0))
            scratch = invoicing.compute_body(conn, inv.body.customer_id, "2024-01", k)
            assert billed_sub == Decimal(scratch["subtotal"]), (
                inv.number,
                billed_sub,
                scratch["subtotal"],
            )
            assert billed_tax == Decimal(scratch["tax"]), (inv.number, billed_tax, scratch["tax"])
            out[inv.body.customer_id] = (
                billed_sub,
                billed_tax,
                Decimal(scratch["subtotal"]) + Decimal(scratch["tax"]),
            )
    return out


# Always covered: a percentage with fees and a cap, then a conversion and a tighter cap.
COVERED = (
    [(d % 31 + 1, "acme" if d % 3 else "beta") for d in range(60)],
    [
        ("price", (10, "0.02", "percentage", ("0.30", "1.20"))),
        ("late", [(12, "acme"), (25, "beta"), (3, "acme")]),
        ("rerate", None),
        ("price", (20, "0.011", "conversion", (None, "0.50"))),
        ("retract", [7, 8]),
        ("price", (5, "0.005", "free_units", ("0.80", None))),
    ],
)


@SETTINGS
@example(h=COVERED, seed=7)
@given(h=history, seed=st.integers(0, 2**16))
def test_original_plus_corrections_equals_recomputed_and_order_does_not_matter(
    store: Store, h: tuple[list[Any], list[Any]], seed: int
) -> None:
    initial, ops = h
    in_order = play(store, initial, ops, None)
    shuffled = play(store, initial, ops, random.Random(seed))
    assert in_order == shuffled
