"""Rollup passes of the usage index: computing, recording and re-checking them.

A pass at seq S folds, for each (customer, UTC month) that facts since the last
pass touched, the day rows of the units that changed, as known at S, into ``cpt``
rows (``bitemporal.month_units``: the month, 8-day and 2-day blocks) and records
(customer, unit, S) in ``usage_rollups``. Reads pick each customer's latest pass
<= K per unit (``usage_index._read`` with ``rollups``). A pass is derived data: it
takes no seq and changes no fold, so it is computed in a read transaction and
written in a short write transaction; its cost follows what changed: a
unit's later pass folds forward from its previous one (that pass's row plus the
day rows since), never from the whole month again.
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
    month_of,
    month_units,
    next_month,
    rollup_grain,
    unit_of,
)
from meterline.store.usage_index import (
    BucketKey,
    Delta,
    _meters_with_seq,
    _state_text,
    append,
    read_many,
    read_units,
    unit_passes,
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


@dataclass(frozen=True)
class Rolled:
    """The meters rolled up as known at a seq: their aggregations, and which of them
    have 1-day windows (their units fold the windows, the others their day rollups)."""

    kinds: dict[str, Aggregation]
    daily: frozenset[str]

    def grains(self) -> list[tuple[Grain, list[str]]]:
        """(the rows units fold, the meters whose rows they are), non-empty only."""
        sub = sorted(c for c in self.kinds if c not in self.daily)
        out = [(Grain.DAY, sub), (Grain.WINDOW, sorted(self.daily))]
        return [(g, codes) for g, codes in out if codes]


def day_meters(conn: Connection, seq: int) -> Rolled:
    """Meters known at ``seq`` that rollup units cover: those with day rollups
    (windows shorter than a day) and those with 1-day windows."""
    kinds: dict[str, Aggregation] = {}
    daily: set[str] = set()
    for s, m in _meters_with_seq(conn):
        if s > seq:
            continue
        grain = rollup_grain(m.window_us)
        if grain is not None:
            kinds[m.code] = m.aggregation
            if grain == Grain.WINDOW:
                daily.add(m.code)
    return Rolled(kinds, frozenset(daily))


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


Unit = tuple[Grain, int, int]  # (grain, lo, hi)
EVERYTHING: frozenset[int] = frozenset()  # sentinel: every day may have changed


def changed_days(
    conn: Connection, month: int, since: Mapping[str, int], upto: int
) -> dict[str, frozenset[int] | set[int]]:
    """Customer -> the days of the month whose index rows facts in (its own ``since``,
    ``upto``] may have changed: the days of its events accepted or retracted then
    (`EVERYTHING` when a meter was applied then: its ``set`` rows lie anywhere).
    Read through the facts' seq index, so it costs what changed, not the month."""
    if not since:
        return {}
    low = min(since.values())
    if conn.execute(
        text("SELECT 1 FROM meters WHERE seq > :s AND seq <= :u LIMIT 1"), {"s": low, "u": upto}
    ).first():
        return dict.fromkeys(since, EVERYTHING)
    end = next_month(month)
    rows = conn.execute(
        text(
            "SELECT customer_id, event_time, seq FROM events WHERE seq > :s AND seq <= :u "
            "UNION ALL SELECT e.customer_id, e.event_time, r.seq FROM retractions r "
            "JOIN events e ON e.seq = r.event_seq WHERE r.seq > :s AND r.seq <= :u"
        ),
        {"s": low, "u": upto},
    )
    out: dict[str, frozenset[int] | set[int]] = {}
    for c, t, q in rows:
        cust, t = str(c), int(t)
        s = since.get(cust)
        if s is None or int(q) <= s or not month <= t < end:
            continue
        days = out.setdefault(cust, set())
        if isinstance(days, set):
            days.add(t - t % US_PER_DAY)
    return out


def compute(conn: Connection, seq: int, months: Sequence[int] | None = None) -> list[MonthRollup]:
    """The passes as known at ``seq``: for the given months every customer, by
    default the (customer, month) pairs facts touched since the latest pass. For
    each, only the units whose days changed since their own pass are folded again
    (every unit on a customer's first pass of a month)."""
    meters = day_meters(conn, seq)
    if not meters.kinds:
        return []
    if months is None:
        wanted = touched(conn, last_pass(conn))
    else:
        everyone = set(indexed_customers(conn))
        wanted = {m: set(everyone) for m in months}
    out = []
    for month in sorted(wanted):
        customers = sorted(wanted[month])
        got = MonthRollup(month, seq)
        passes = unit_passes(conn, customers, seq, month, next_month(month))
        units, days = _changed_units(conn, customers, month, seq, passes)
        todo = sorted(units)
        for i in range(0, len(todo), BATCH):
            batch = {c: units[c] for c in todo[i : i + BATCH]}
            rows, folded = fold_units(conn, batch, meters, month, seq, passes, days)
            got.rows.update(rows)
            got.folded += folded
            got.customers += sorted(batch)
        if got.customers:
            out.append(got)
    return out


def _changed_units(
    conn: Connection,
    customers: Sequence[str],
    month: int,
    seq: int,
    passes: Mapping[str, Mapping[tuple[str, int], int]],
) -> tuple[dict[str, set[Unit]], dict[str, frozenset[int] | set[int]]]:
    """Customer -> the month's units to fold at ``seq`` (all of them on its first pass
    of the month, else those holding a day changed since its month unit's pass, the
    latest pass that changed anything in the month), and the changed days. A
    customer already rolled up at ``seq``, or unchanged, has none."""
    everything = set(month_units(month))
    out: dict[str, set[Unit]] = {}
    since: dict[str, int] = {}
    for c in customers:
        s = passes.get(c, {}).get((_MONTH, month))
        if s is None:
            out[c] = set(everything)
        elif s < seq:
            since[c] = s
    days = changed_days(conn, month, since, seq)
    for c, changed in days.items():
        if changed is EVERYTHING:
            out[c] = set(everything)
        else:
            out[c] = {unit_of(g, day, month) for day in changed for g in UNIT_GRAINS}
    return out, days


def fold_units(
    conn: Connection,
    wanted: Mapping[str, set[Unit]],
    meters: Rolled,
    month: int,
    seq: int,
    passes: Mapping[str, Mapping[tuple[str, int], int]],
    days: Mapping[str, frozenset[int] | set[int]] | None = None,
) -> tuple[dict[BucketKey, Delta], int]:
    """The ``cpt`` rows at ``seq`` of some customers' units, and how many index rows
    were folded: a unit with an earlier pass (in ``passes``, < ``seq``) forward from
    it (its ``cpt`` row there and the day rows since); one without, or with a day
    ``set`` row since, from its day rollups as known at ``seq``. ``days``: the days
    each customer's facts changed since its units' passes (`changed_days`); only
    those days' rows are read forward (without it, every day of each unit)."""
    out: dict[BucketKey, Delta] = {}
    kinds = meters.kinds
    folded = 0
    forward: dict[Unit, dict[str, int]] = {}
    from_days: dict[str, set[Unit]] = {}
    for c, units in wanted.items():
        mine = passes.get(c, {})
        for u in units:
            prior = mine.get((str(u[0]), u[1]))
            if prior is not None and prior < seq:
                forward.setdefault(u, {})[c] = prior
            else:
                from_days.setdefault(c, set()).add(u)
    if forward:
        only = None
        if days is not None and all(
            days.get(c) is not EVERYTHING for f in forward.values() for c in f
        ):
            only = {
                u: sorted({d for c in f for d in days.get(c, ()) if u[1] <= d < u[2]})
                for u, f in forward.items()
            }
        reads = [
            read_units(conn, forward, codes, seq, g, only).items() for g, codes in meters.grains()
        ]
        again = {
            c
            for got in reads
            for c, r in got
            if r.refold or r.straddles  # a day's whole state since: fold from the days
        }
        for c in again:
            from_days.setdefault(c, set()).update(u for u, f in forward.items() if c in f)
        for got in reads:
            for c, r in got:
                if c in again:
                    continue
                for key, rows in r.rows.items():
                    f = fold_rows(kinds[key[0]], rows)
                    folded += len(rows)
                    out[key] = Delta(RowKind.CHECKPOINT, f.state, f.events, seq, seq)
    if from_days:
        rolled, n = _from_days(conn, from_days, meters, month, seq)
        out.update(rolled)
        folded += n
    return out, folded


def _from_days(
    conn: Connection,
    wanted: Mapping[str, set[Unit]],
    meters: Rolled,
    month: int,
    seq: int,
) -> tuple[dict[BucketKey, Delta], int]:
    """Units folded from the month's day rollups as known at ``seq`` (those folded
    from at least `MIN_FOLD` rows). Count and sum days are added up as plain numbers
    (exact: ints, and Decimal additions that trap on rounding, as `merge`); other
    states are merged."""
    out: dict[BucketKey, Delta] = {}
    folded = 0
    sub = RowKind.SUB
    kinds = meters.kinds
    spans: dict[tuple[int, int], list[str]] = {}  # only the days the wanted units hold
    for c, units in wanted.items():
        if units:
            span = (min(u[1] for u in units), max(u[2] for u in units))
            spans.setdefault(span, []).append(c)
    reads = [
        (c, r)
        for (lo, hi), members in spans.items()
        for g, codes in meters.grains()
        for c, r in read_many(conn, sorted(members), codes, [(g, lo, hi)], seq).items()
    ]
    day_units: dict[int, tuple[tuple[str, int], ...]] = {}
    sources: dict[tuple[str, str, int], int] = {}  # (customer, grain, start) -> rows
    for c, r in reads:
        keep = {(str(u[0]), u[1]) for u in wanted.get(c, ())}
        numbers: dict[BucketKey, list[Any]] = {}
        states: dict[BucketKey, tuple[Any, int]] = {}
        for (code, cust, _, dims, day), rows in r.rows.items():
            if len(rows) == 1 and rows[0].kind is not sub:
                state, events = rows[0].state, rows[0].events
            else:
                f = fold_rows(kinds[code], rows)
                state, events = f.state, f.events
            folded += len(rows)
            du = day_units.get(day)
            if du is None:
                du = day_units[day] = tuple(
                    (str(g), unit_of(g, day, month)[1]) for g in UNIT_GRAINS
                )
            keys = [(code, cust, g, dims, lo) for g, lo in du if (g, lo) in keep]
            for g, lo in du:
                sources[(cust, g, lo)] = sources.get((cust, g, lo), 0) + len(rows)
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
    # A unit folded from fewer rows than this saves no read: not written (its reads
    # use the days). All of a unit's meters and groups or none: a read of a unit
    # takes its pass for every meter.
    thin = {u for u, n in sources.items() if n < MIN_FOLD}
    return {k: d for k, d in out.items() if (k[1], k[2], k[4]) not in thin}, folded


# Index rows a unit must fold on its first pass to be written.
MIN_FOLD = 4
_MONTH = str(Grain.MONTH)
_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation, Overflow])  # as `merge`


def record(conn: Connection, computed: Iterable[MonthRollup]) -> list[RollupPass]:
    """Append computed passes (in a write transaction): the unit rows, and a pass row
    per customer and unit written. Units a concurrent pass already wrote at that seq
    are left as they are."""
    out = []
    for r in computed:
        if not r.rows:
            continue
        end = next_month(r.month)
        done = {
            (c, g, start)
            for c, units in unit_passes(conn, r.customers, r.seq, r.month, end).items()
            for (g, start), s in units.items()
            if s == r.seq
        }
        rows = {k: d for k, d in r.rows.items() if (k[1], k[2], k[4]) not in done}
        per: dict[tuple[str, str, int], int] = {}
        for key in rows:
            unit = (key[1], key[2], key[4])
            per[unit] = per.get(unit, 0) + 1
        if not per:
            continue
        append(conn, rows)
        conn.execute(
            text(
                "INSERT INTO usage_rollups (customer_id, grain, bucket_start, seq, rows) "
                "VALUES (:c, :g, :m, :s, :n)"
            ),
            [{"c": c, "g": g, "m": m, "s": r.seq, "n": n} for (c, g, m), n in per.items()],
        )
        customers = len({c for c, _, _ in per})
        out.append(RollupPass(r.month, r.seq, customers, len(rows), r.folded))
    return out


def stored(
    conn: Connection, seq: int, month: int, units: Mapping[str, set[Unit]]
) -> dict[BucketKey, tuple[str, int]]:
    """The ``cpt`` rows a pass at ``seq`` wrote for some customers' units of a month."""
    out: dict[BucketKey, tuple[str, int]] = {}
    customers = sorted(units)
    for i in range(0, len(customers), BATCH):
        batch = customers[i : i + BATCH]
        params: dict[str, Any] = {f"c{j}": c for j, c in enumerate(batch)}
        rows = conn.execute(
            text(
                "SELECT meter_code, customer_id, grain, dimensions, bucket_start, state, events "
                "FROM usage_index WHERE customer_id IN ("
                + ", ".join(f":c{j}" for j in range(len(batch)))
                + ") AND grain IN ('m', '8', '2') AND bucket_start >= :lo AND bucket_start < :hi "
                "AND seq = :s AND kind = 'cpt'"
            ),
            params | {"lo": month, "hi": next_month(month), "s": seq},
        )
        for r in rows:
            c, g, lo = str(r[1]), str(r[2]), int(r[4])
            if any(str(u[0]) == g and u[1] == lo for u in units[c]):
                out[(str(r[0]), c, g, str(r[3]), lo)] = (str(r[5]), int(r[6]))
    return out


def check(conn: Connection, since: int = 0) -> tuple[int, list[str]]:
    """Every unit a pass at or after ``since`` wrote, folded again and compared with
    its rows: from the unit's pass before (its ``cpt`` row and the day rows since),
    or from the day rollups as known then for a unit's first pass (so, by induction,
    every unit equals its day rollups, which reconciliation checks against raw
    events). ``>=``: a pass takes no seq, so one made after a checkpoint at K is at
    K. Returns the unit rows compared and the problems found."""
    written = conn.execute(
        text(
            "SELECT seq, customer_id, grain, bucket_start FROM usage_rollups "
            "WHERE seq >= :s ORDER BY seq, customer_id, grain, bucket_start"
        ),
        {"s": since},
    ).all()
    groups: dict[tuple[int, int], dict[str, set[Unit]]] = {}
    for seq_v, c, g, lo_v in written:
        seq, lo = int(seq_v), int(lo_v)
        month = month_of(lo)
        unit = unit_of(Grain(str(g)), lo, month)
        groups.setdefault((seq, month), {}).setdefault(str(c), set()).add(unit)
    compared = 0
    problems: list[str] = []
    for (seq, month), units in groups.items():
        meters = day_meters(conn, seq)
        passes = unit_passes(conn, sorted(units), seq - 1, month, next_month(month))
        before = {c: p[(_MONTH, month)] for c, p in passes.items() if (_MONTH, month) in p}
        days = changed_days(conn, month, before, seq)
        fresh, _ = fold_units(conn, units, meters, month, seq, passes, days)
        have = stored(conn, seq, month, units)
        for key in sorted(fresh.keys() | have.keys()):
            compared += 1
            d = fresh.get(key)
            want = None if d is None else (_state_text(d.state), d.events)
            if have.get(key) != want:
                problems.append(
                    f"rollup at seq {seq}: {key[0]}/{key[1]} {key[3]} unit {key[2]} from "
                    f"{format_us(key[4])[:10]} is {have.get(key)}, day rollups give {want}"
                )
    return compared, problems
