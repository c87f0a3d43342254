"""Rollup passes of the usage index: computing, recording and re-checking them.

A pass at seq S folds, for each (customer, UTC month) that facts since the last
pass touched, the month's day rows as known at S into ``cpt`` rows of its rollup
units (``bitemporal.month_units``: the month, 8-day and 2-day blocks) and records
(customer, month, S) in ``usage_rollups``. Reads pick each customer's latest
pass <= K (``usage_index._read`` with ``rollups``). A pass is derived data: it
takes no seq and changes no fold, so it is computed in a read transaction and
written in a short write transaction; its cost follows what changed: a
customer's later pass folds forward from its previous one (that pass's units
plus the day rows since), never from the whole month again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Inexact, InvalidOperation, Overflow
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.decimals import PRECISION
from meterline.domain.timestamps import US_PER_DAY, format_us
from meterline.metering import Aggregation, merge
from meterline.metering.aggregation import CountState, SumState
from meterline.metering.bitemporal import (
    UNIT_GRAINS,
    Grain,
    RowKind,
    fold_rows,
    has_day_rollup,
    month_of,
    month_units,
    next_month,
)
from meterline.store.usage_index import (
    BucketKey,
    Delta,
    _meters_with_seq,
    _state_text,
    append,
    read_many,
    read_units,
)

BATCH = 500  # customers folded per statement


@dataclass(frozen=True)
class RollupPass:
    """One month of a pass: customers rolled up, unit rows written, index rows folded."""

    month: int
    seq: int
    customers: int
    rows: int
    folded: int


@dataclass
class MonthRollup:
    """A month's rollup as known at ``seq``, computed and not yet written."""

    month: int
    seq: int
    rows: dict[BucketKey, Delta] = field(default_factory=dict)
    customers: list[str] = field(default_factory=list)
    folded: int = 0


def day_meters(conn: Connection, seq: int) -> dict[str, Aggregation]:
    """Meters known at ``seq`` that keep day rollups (the only ones rolled up)."""
    return {
        m.code: m.aggregation
        for s, m in _meters_with_seq(conn)
        if s <= seq and has_day_rollup(m.window_us)
    }


def indexed_customers(conn: Connection) -> list[str]:
    """Every customer with index rows, by seeks along the key (a loose index scan:
    one probe per customer, not a walk over every row)."""
    out: list[str] = []
    probe = text(
        "SELECT customer_id FROM usage_index WHERE customer_id > :c ORDER BY customer_id LIMIT 1"
    )
    got = conn.execute(
        text("SELECT customer_id FROM usage_index ORDER BY customer_id LIMIT 1")
    ).first()
    while got is not None:
        out.append(str(got[0]))
        got = conn.execute(probe, {"c": out[-1]}).first()
    return out


def last_pass(conn: Connection) -> int:
    """The seq of the latest rollup pass (0: none)."""
    got = conn.execute(text("SELECT MAX(seq) FROM usage_rollups")).scalar()
    return 0 if got is None else int(got)


def _months(lo: int, hi: int) -> list[int]:
    out, m = [], month_of(lo)
    while m <= hi:
        out.append(m)
        m = next_month(m)
    return out


def touched(conn: Connection, since: int) -> dict[int, set[str]]:
    """Month -> customers whose day rollups facts after ``since`` may have changed:
    events accepted or retracted since (every customer and month of the index on a
    first pass, or when a meter was applied since: its ``set`` rows lie anywhere)."""
    meter_since = conn.execute(
        text("SELECT 1 FROM meters WHERE seq > :s LIMIT 1"), {"s": since}
    ).first()
    if since == 0 or meter_since is not None:
        span = conn.execute(text("SELECT MIN(event_time), MAX(event_time) FROM events")).one()
        if span[0] is None:
            return {}
        everyone = set(indexed_customers(conn))
        return {m: set(everyone) for m in _months(int(span[0]), int(span[1]))}
    rows = conn.execute(
        text(
            "SELECT customer_id, event_time FROM events WHERE seq > :s "
            "UNION ALL SELECT e.customer_id, e.event_time FROM retractions r "
            "JOIN events e ON e.seq = r.event_seq WHERE r.seq > :s"
        ),
        {"s": since},
    )
    out: dict[int, set[str]] = {}
    last_day, last_month = None, 0
    for c, t in rows:
        day = int(t) - int(t) % US_PER_DAY
        if day != last_day:  # most events of a batch share a few days
            last_day, last_month = day, month_of(day)
        out.setdefault(last_month, set()).add(str(c))
    return out


def _priors(conn: Connection, month: int, customers: Sequence[str], seq: int) -> dict[str, int]:
    """Customer -> its latest pass of the month <= ``seq``."""
    out: dict[str, int] = {}
    for i in range(0, len(customers), BATCH):
        batch = list(customers[i : i + BATCH])
        params: dict[str, Any] = {f"c{j}": c for j, c in enumerate(batch)}
        rows = conn.execute(
            text(
                "SELECT customer_id, MAX(seq) FROM usage_rollups WHERE customer_id IN ("
                + ", ".join(f":c{j}" for j in range(len(batch)))
                + ") AND grain = 'm' AND bucket_start = :m AND seq <= :k GROUP BY customer_id"
            ),
            params | {"m": month, "k": seq},
        )
        out.update({str(c): int(s) for c, s in rows})
    return out


def compute(conn: Connection, seq: int, months: Sequence[int] | None = None) -> list[MonthRollup]:
    """The passes as known at ``seq``: for the given months every customer, by
    default the (customer, month) pairs touched since the latest pass. A customer
    already rolled up at ``seq`` is skipped."""
    kinds = day_meters(conn, seq)
    if not kinds:
        return []
    if months is None:
        wanted = touched(conn, last_pass(conn))
    else:
        everyone = set(indexed_customers(conn))
        wanted = {m: set(everyone) for m in months}
    out = []
    for month in sorted(wanted):
        customers = sorted(wanted[month])
        priors = _priors(conn, month, customers, seq)
        todo = [c for c in customers if priors.get(c) != seq]
        got = MonthRollup(month, seq)
        for i in range(0, len(todo), BATCH):
            batch = todo[i : i + BATCH]
            rows, folded = fold_month(conn, batch, kinds, month, seq, priors)
            got.rows.update(rows)
            got.folded += folded
            got.customers += sorted({k[1] for k in rows})
        if got.customers:
            out.append(got)
    return out


def fold_month(
    conn: Connection,
    customers: Sequence[str],
    kinds: Mapping[str, Aggregation],
    month: int,
    seq: int,
    priors: Mapping[str, int],
) -> tuple[dict[BucketKey, Delta], int]:
    """The month's unit ``cpt`` rows at ``seq`` for some customers, and how many
    index rows were folded: forward from each customer's pass in ``priors`` (its
    units there and the day rows since), or, without one (or with a day ``set``
    row since), from the month's day rollups as known at ``seq``."""
    out: dict[BucketKey, Delta] = {}
    codes = sorted(kinds)
    units = [u[:3] for u in month_units(month)]
    folded = 0
    by_prior: dict[int, list[str]] = {}
    redo: list[str] = []
    for c in customers:
        p = priors.get(c)
        if p is None:
            redo.append(c)
        else:
            by_prior.setdefault(p, []).append(c)
    for prior, members in sorted(by_prior.items()):
        for c, r in read_units(conn, members, codes, units, prior, seq).items():
            if r.refold or r.straddles:
                redo.append(c)
                continue
            for key, rows in r.rows.items():
                f = fold_rows(kinds[key[0]], rows)
                folded += len(rows)
                out[key] = Delta(RowKind.CHECKPOINT, f.state, f.events, seq, seq)
    if not redo:
        return out, folded
    day_range = [(Grain.DAY, month, next_month(month))]
    eight, two = 8 * US_PER_DAY, 2 * US_PER_DAY
    sub = RowKind.SUB
    for r in read_many(conn, redo, codes, day_range, seq).values():
        # Count and sum days are added up as plain numbers (exact: ints, and Decimal
        # additions that trap on rounding, as `merge`); other states are merged.
        numbers: dict[BucketKey, list[Any]] = {}
        states: dict[BucketKey, tuple[Any, int]] = {}
        for (code, cust, _, dims, day), rows in r.rows.items():
            if len(rows) == 1 and rows[0].kind is not sub:
                state, events = rows[0].state, rows[0].events
            else:
                f = fold_rows(kinds[code], rows)
                state, events = f.state, f.events
            folded += len(rows)
            at = day - month
            keys = (
                (code, cust, _MONTH, dims, month),
                (code, cust, _EIGHT, dims, month + at - at % eight),
                (code, cust, _TWO, dims, month + at - at % two),
            )
            kind = type(state)
            if isinstance(state, CountState | SumState):
                value: Any = state.count if isinstance(state, CountState) else state.total
                for key in keys:
                    got = numbers.get(key)
                    if got is None:
                        numbers[key] = [kind, value, events]
                    else:
                        got[1] = got[1] + value if kind is CountState else _EXACT.add(got[1], value)
                        got[2] += events
                continue
            for key in keys:
                had = states.get(key)
                states[key] = (
                    (state, events) if had is None else (merge(had[0], state), had[1] + events)
                )
        for key, (kind, value, events) in numbers.items():
            out[key] = Delta(RowKind.CHECKPOINT, kind(value), events, seq, seq)
        for key, (state, events) in states.items():
            out[key] = Delta(RowKind.CHECKPOINT, state, events, seq, seq)
    return out, folded


_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation, Overflow])  # as `merge`
_MONTH, _EIGHT, _TWO = (str(g) for g in UNIT_GRAINS)


def record(conn: Connection, computed: Iterable[MonthRollup]) -> list[RollupPass]:
    """Append computed passes (in a write transaction): the unit rows and a pass row
    per customer and month. A customer a concurrent pass already rolled up at that
    seq is left as it is."""
    out = []
    for r in computed:
        done = {c for c, s in _priors(conn, r.month, r.customers, r.seq).items() if s == r.seq}
        rows = {k: d for k, d in r.rows.items() if k[1] not in done}
        customers = [c for c in r.customers if c not in done]
        if not customers:
            continue
        append(conn, rows)
        per: dict[str, int] = dict.fromkeys(customers, 0)
        for key in rows:
            per[key[1]] += 1
        conn.execute(
            text(
                "INSERT INTO usage_rollups (customer_id, grain, bucket_start, seq, rows) "
                "VALUES (:c, 'm', :m, :s, :n)"
            ),
            [{"c": c, "m": r.month, "s": r.seq, "n": n} for c, n in per.items()],
        )
        out.append(RollupPass(r.month, r.seq, len(customers), len(rows), r.folded))
    return out


def stored(
    conn: Connection, month: int, seq: int, customers: Sequence[str]
) -> dict[BucketKey, tuple[str, int]]:
    """The unit ``cpt`` rows some customers' pass of the month at ``seq`` wrote."""
    out: dict[BucketKey, tuple[str, int]] = {}
    for i in range(0, len(customers), BATCH):
        batch = list(customers[i : i + BATCH])
        params: dict[str, Any] = {f"c{j}": c for j, c in enumerate(batch)}
        rows = conn.execute(
            text(
                "SELECT meter_code, customer_id, grain, dimensions, bucket_start, state, events "
                "FROM usage_index WHERE customer_id IN ("
                + ", ".join(f":c{j}" for j in range(len(batch)))
                + ") AND grain IN ('m', '8', '2') AND bucket_start >= :m AND bucket_start < :e "
                "AND seq = :s AND kind = 'cpt'"
            ),
            params | {"m": month, "e": next_month(month), "s": seq},
        )
        for r in rows:
            key = (str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]))
            out[key] = (str(r[5]), int(r[6]))
    return out


def check(conn: Connection, since: int = 0) -> tuple[int, list[str]]:
    """Every pass at or after ``since`` folded again and compared with the unit rows
    it wrote: a customer's first pass of a month from its day rollups as known then,
    a later one forward from its pass before (so, by induction from the first, every
    pass equals the day rollups, which reconciliation checks against raw events).
    ``>=``: a pass takes no seq, so one made after a checkpoint at K is at K.
    Returns the unit rows compared and the problems found."""
    passes = conn.execute(
        text(
            "SELECT bucket_start, seq, customer_id FROM usage_rollups "
            "WHERE grain = 'm' AND seq >= :s ORDER BY bucket_start, seq, customer_id"
        ),
        {"s": since},
    ).all()
    groups: dict[tuple[int, int], list[str]] = {}
    for m, s, c in passes:
        groups.setdefault((int(m), int(s)), []).append(str(c))
    compared = 0
    problems: list[str] = []
    for (month, seq), customers in groups.items():
        kinds = day_meters(conn, seq)
        priors = _priors(conn, month, customers, seq - 1)
        fresh: dict[BucketKey, Delta] = {}
        for i in range(0, len(customers), BATCH):
            batch = customers[i : i + BATCH]
            fresh.update(fold_month(conn, batch, kinds, month, seq, priors)[0])
        have = stored(conn, month, seq, customers)
        label = f"rollup of {format_us(month)[:7]} at seq {seq}"
        for key in sorted(fresh.keys() | have.keys()):
            compared += 1
            d = fresh.get(key)
            want = None if d is None else (_state_text(d.state), d.events)
            if have.get(key) != want:
                problems.append(
                    f"{label}: {key[0]}/{key[1]} {key[3]} unit {key[2]} from "
                    f"{format_us(key[4])[:10]} is {have.get(key)}, day rollups give {want}"
                )
    return compared, problems
