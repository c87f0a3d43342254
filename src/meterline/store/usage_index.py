"""The bitemporal usage index in the store: append-only rows, written set-based
in the transaction of the fact that causes them, folded as known at any K.

See ``metering/bitemporal.py`` for the row kinds and the fold. Table
``usage_index``: one row per (customer, meter, grain, bucket, dimension group)
and cause; nothing is ever updated or deleted. Writes are one ``executemany``
per fact (an ingest batch, a retraction, a meter); reads are one query per
customer and span, proportional to the rows of the buckets asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.decimals import fmt
from meterline.domain.errors import MeterlineError
from meterline.domain.events import Event, decode_json, properties_of
from meterline.domain.timestamps import US_PER_DAY
from meterline.metering import (
    Aggregation,
    Meter,
    aggregate,
    dimensions,
    encode_dimensions,
    from_json,
    merge,
    to_json,
    value_of,
    window_start,
)
from meterline.metering.aggregation import CountState, MaxState, MinState, SumState
from meterline.metering.bitemporal import (
    SUBTRACTABLE,
    UNIT_GRAIN_TEXTS,
    Folded,
    Grain,
    IndexRow,
    RowKind,
    cover,
    day_of,
    fold_rows,
    has_day_rollup,
    month_of,
    next_month,
)
from meterline.store.facts import facts

BucketKey = tuple[str, str, str, str, int]
"""meter code, customer, grain, dimensions, bucket start."""
Rollups = bool | Grain
"""Whether a read may use rollup units, and over which rows: True or ``Grain.DAY``
for the day rollups of sub-day meters, ``Grain.WINDOW`` for 1-day windows."""


@dataclass
class _Acc:
    meter: Meter
    entries: list[tuple[int, str, Any]]
    first_seq: int
    seq: int


@dataclass(frozen=True)
class Delta:
    """A row to append: what changed in one bucket, and the seq range that caused it."""

    kind: RowKind
    state: Any
    events: int
    first_seq: int
    seq: int


def _readings(meters: Sequence[Meter], props: Mapping[str, Any]) -> list[tuple[Meter, str, Any]]:
    out = []
    for m in meters:
        try:
            value = value_of(m, props)
            dims = encode_dimensions(dimensions(m, props))
        except MeterlineError:
            continue  # stored but unreadable by this meter; reconciliation lists it
        out.append((m, dims, value))
    return out


def _needs_properties(meters: Sequence[Meter]) -> bool:
    return any(m.aggregation != Aggregation.COUNT or m.group_by for m in meters)


def fold_events(
    by_type: Mapping[str, Sequence[Meter]], events: Iterable[tuple[int, Event]]
) -> dict[BucketKey, Delta]:
    """``add`` deltas of a set of events, per window and per day rollup.

    Computed in Python from the events' parsed values (the properties
    validation decoded, carried on the event; decoded from the stored text only
    for an event read back); one row per bucket touched, tagged with the least
    and greatest seq of its events. Hot path: a count meter without groups
    reads nothing and keeps only a counter per bucket.
    """
    accs: dict[tuple[str, str, str, int], _Acc] = {}
    counts: dict[tuple[str, str, int], list[int]] = {}  # count, first seq, last seq
    by_code = {m.code: m for ms in by_type.values() for m in ms}
    # Per event type, looked up once per event: the plain counts' (code, window),
    # the other meters, and whether those read properties.
    plans: dict[str, tuple[list[tuple[str, int]], list[Meter], bool]] = {}
    for event_type, ms in by_type.items():
        if ms:
            plain = [m for m in ms if m.aggregation is Aggregation.COUNT and not m.group_by]
            rest = [m for m in ms if m not in plain]
            plans[event_type] = (
                [(m.code, m.window_us) for m in plain],
                rest,
                _needs_properties(ms),
            )
    for seq, ev in events:
        p = plans.get(ev.event_type)
        if p is None:
            continue
        counters, rest, needs = p
        t = ev.event_time
        customer = ev.customer_id
        for code, window_us in counters:
            ckey = (code, customer, t - t % window_us)
            c = counts.get(ckey)
            if c is None:
                counts[ckey] = [1, seq, seq]
            else:
                c[0] += 1
                if seq < c[1]:
                    c[1] = seq
                if seq > c[2]:
                    c[2] = seq
        if not rest:
            continue
        props = properties_of(ev) if needs else {}
        for m, dims, value in _readings(rest, props):
            key = (m.code, customer, dims, t - t % m.window_us)
            acc = accs.get(key)
            if acc is None:
                accs[key] = acc = _Acc(m, [], seq, seq)
            acc.entries.append((t, ev.event_id, value))
            if seq < acc.first_seq:
                acc.first_seq = seq
            if seq > acc.seq:
                acc.seq = seq
    out: dict[BucketKey, Delta] = {}

    def put(meter: Meter, customer: str, dims: str, start: int, delta: Delta) -> None:
        out[(meter.code, customer, Grain.WINDOW, dims, start)] = delta
        if has_day_rollup(meter.window_us):
            dkey = (meter.code, customer, Grain.DAY, dims, day_of(start))
            prior = out.get(dkey)
            if prior is None:
                out[dkey] = delta
            else:
                out[dkey] = Delta(
                    RowKind.ADD,
                    merge(prior.state, delta.state),
                    prior.events + delta.events,
                    min(prior.first_seq, delta.first_seq),
                    max(prior.seq, delta.seq),
                )

    days: dict[tuple[str, str, int], list[int]] = {}
    with_days = {code for code, m in by_code.items() if has_day_rollup(m.window_us)}
    add, window, day = RowKind.ADD, Grain.WINDOW, Grain.DAY
    for (code, customer, start), (n, first, last) in counts.items():
        out[(code, customer, window, _UNGROUPED, start)] = Delta(add, _count(n), n, first, last)
        if code in with_days:
            dkey = (code, customer, start - start % US_PER_DAY)  # day_of(start)
            d = days.get(dkey)
            if d is None:
                days[dkey] = [n, first, last]
            else:
                d[0] += n
                if first < d[1]:
                    d[1] = first
                if last > d[2]:
                    d[2] = last
    for (code, customer, start), (n, first, last) in days.items():
        out[(code, customer, day, _UNGROUPED, start)] = Delta(add, _count(n), n, first, last)
    for (_, customer, dims, start), acc in accs.items():
        n = len(acc.entries)
        kind = acc.meter.aggregation
        state = CountState(n) if kind is Aggregation.COUNT else aggregate(kind, acc.entries)
        put(acc.meter, customer, dims, start, Delta(RowKind.ADD, state, n, acc.first_seq, acc.seq))
    return out


_UNGROUPED = encode_dimensions(())
# Count states are immutable values; the small ones are shared, not rebuilt per bucket.
_SMALL_COUNTS = tuple(CountState(n) for n in range(256))


def _count(n: int) -> CountState:
    return _SMALL_COUNTS[n] if n < 256 else CountState(n)


_COLUMNS = (
    "customer_id, meter_code, grain, bucket_start, dimensions, seq, first_seq, kind, state, events"
)
_COPY_TYPES = ["text", "text", "text", "int8", "text", "int8", "int8", "text", "text", "int8"]


def _state_text(state: Any) -> str:
    """``to_json`` of a state, without its generic walk for the hot kinds: count
    texts cached by count (small counts repeat across buckets; keyed by the int,
    whose hash is free, not by the state), sums spelled directly (a canonical
    decimal needs no escaping; a test keeps both equal to ``to_json``)."""
    kind = type(state)
    if kind is CountState:
        n = state.count
        got = _COUNT_TEXTS.get(n)
        if got is None:
            if len(_COUNT_TEXTS) >= _STATES_SIZE:
                _COUNT_TEXTS.clear()
            got = _COUNT_TEXTS[n] = to_json(state)
        return got
    if kind is SumState:
        return f'{{"kind":"sum","sum":"{fmt(state.total)}"}}'
    return to_json(state)


def _sorted_keys(deltas: Mapping[BucketKey, Delta]) -> list[BucketKey]:
    """The keys in tuple order (rows are written in it), by stable passes on one
    field each, last field first: each pass compares plain strs or ints, which
    the sort does in C, where one sort of whole tuples falls back to generic
    comparisons on every tie of the leading meter code (~5x slower)."""
    keys = list(deltas)
    for field in (4, 3, 2, 1, 0):
        keys.sort(key=itemgetter(field))
    return keys


def append(conn: Connection, deltas: Mapping[BucketKey, Delta]) -> None:
    """Append rows: one statement for the whole set, as tuples through the DBAPI
    cursor (sqlite3 ``executemany``, psycopg binary ``COPY``): no per-row
    parameter dicts on the hot path."""
    if not deltas:
        return
    text_of = _state_text
    rows = []
    for key in _sorted_keys(deltas):
        d = deltas[key]
        code, customer, grain, dims, start = key
        rows.append(
            (
                customer,
                code,
                str(grain),
                start,
                dims,
                d.seq,
                d.first_seq,
                str(d.kind),
                text_of(d.state),
                d.events,
            )
        )
    raw = conn.connection.driver_connection
    if isinstance(raw, psycopg.Connection):
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY usage_index ({_COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(_COPY_TYPES)
            for row in rows:
                cp.write_row(row)
        return
    cur = raw.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(
            f"INSERT INTO usage_index ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
    finally:
        cur.close()


def as_states(deltas: Mapping[BucketKey, Delta], kind: RowKind, seq: int) -> dict[BucketKey, Delta]:
    """The same buckets re-tagged as ``kind`` rows of one fact (a meter, a retraction)."""
    return {k: Delta(kind, d.state, d.events, seq, seq) for k, d in deltas.items()}


def raw_events(
    conn: Connection,
    event_type: str,
    known_at: int,
    customer: str | None = None,
    lo: int | None = None,
    hi: int | None = None,
) -> list[tuple[int, Event]]:
    """(seq, event) of one type as known at K, retractions applied."""
    return list(
        facts(conn).events(known_at, customer=customer, event_types=[event_type], lo=lo, hi=hi)
    )


def build_meter(conn: Connection, meter: Meter, seq: int) -> int:
    """A meter applied after its events: ``set`` rows over what is stored, at its seq."""
    events = raw_events(conn, meter.event_type, seq)
    deltas = fold_events({meter.event_type: [meter]}, events)
    append(conn, as_states(deltas, RowKind.SET, seq))
    return sum(1 for k in deltas if k[2] == Grain.WINDOW)


def on_retraction(
    conn: Connection, meters: Sequence[Meter], event: Event, retraction_seq: int
) -> None:
    """Rows for a retraction at ``retraction_seq`` (already recorded in this transaction).

    Count and sum: ``sub`` rows of the event's own contribution. Min, max,
    latest, unique_count: the affected window and day re-folded from raw events
    as known at the retraction, written as ``set`` rows.
    """
    props = decode_json(event.properties)
    out: dict[BucketKey, Delta] = {}
    for m, dims, value in _readings(meters, props):
        start = window_start(event.event_time, m.window_us)
        keys = [(m.code, event.customer_id, Grain.WINDOW, dims, start)]
        if has_day_rollup(m.window_us):
            keys.append((m.code, event.customer_id, Grain.DAY, dims, day_of(start)))
        if m.aggregation in SUBTRACTABLE:
            state = aggregate(m.aggregation, [(event.event_time, event.event_id, value)])
            for key in keys:
                out[key] = Delta(RowKind.SUB, state, 1, retraction_seq, retraction_seq)
            continue
        lo = day_of(start) if has_day_rollup(m.window_us) else start
        fresh = fold_events(
            {m.event_type: [m]},
            raw_events(
                conn, m.event_type, retraction_seq, event.customer_id, lo, lo + 86_400_000_000
            ),
        )
        for key in keys:
            got = fresh.get(key)
            state = got.state if got is not None else aggregate(m.aggregation, [])
            out[key] = Delta(
                RowKind.SET, state, got.events if got else 0, retraction_seq, retraction_seq
            )
    append(conn, out)


@dataclass
class Read:
    """Index rows of some buckets as known at K, and whether any row straddles K.

    Rollup units (grains ``m``, ``8``, ``2``, from a read with ``rollups``) hold
    the unit's ``cpt`` row of its pass and the unit's day rows after it;
    ``floor`` is the latest pass read. ``refold``: the units cannot answer (a
    day ``set`` row after a pass, or a cut back to before one): read again
    without them."""

    rows: dict[BucketKey, list[IndexRow]]
    straddles: bool
    floor: int = 0
    refold: bool = False

    def folded(self, kinds: Mapping[str, Aggregation]) -> dict[BucketKey, Folded]:
        return {k: fold_rows(kinds[k[0]], rows) for k, rows in self.rows.items()}

    def as_of(self, k: int) -> Read:
        """The read as known at an earlier K, from a ``whole`` read (every row since
        the first): rows with seq <= K; a row learnt in a batch that K cuts straddles.
        Folds the same as reading at K (a bucket folds from its last state row)."""
        if k < self.floor or self.refold:
            return Read({}, self.straddles, refold=True)
        rows: dict[BucketKey, list[IndexRow]] = {}
        straddles = self.straddles
        for key, rs in self.rows.items():
            kept = [r for r in rs if r.seq <= k]
            if len(kept) < len(rs) and any(r.first_seq <= k < r.seq for r in rs):
                straddles = True
            if kept:
                rows[key] = kept
        return Read(rows, straddles, self.floor)


_SELECTED = (
    "SELECT meter_code, customer_id, grain, dimensions, bucket_start, seq, first_seq, kind, "
    "state, events"
)
_FROM_STATE = (
    " AND u.seq >= COALESCE((SELECT MAX(s.seq) FROM usage_index s "
    "WHERE s.customer_id = u.customer_id AND s.meter_code = u.meter_code "
    "AND s.grain = u.grain AND s.bucket_start = u.bucket_start "
    "AND s.dimensions = u.dimensions AND s.kind IN ('set', 'cpt'){k}), 0)"
)


def _latest_only(cur: Any, sql: str, known_at: int | None, k: str, params: Any) -> str:
    """The condition that keeps each bucket's rows from its latest state row <= K on.

    Most buckets never get a state row (no late meter, retraction or checkpoint), and
    the correlated subquery doubles SQLite's time for the read: when none of the
    buckets asked for has one (one indexed probe), every row qualifies (seq >= 0)."""
    probe = sql.replace(_SELECTED, "SELECT 1", 1) + " AND kind IN ('set', 'cpt')"
    if known_at is not None:
        probe += f" AND seq <= {k}"
    cur.execute(probe + " LIMIT 1", params)
    if cur.fetchone() is None:
        return " AND u.seq >= 0"
    return _FROM_STATE.format(k="" if known_at is None else f" AND s.seq <= {k}")


def read(
    conn: Connection,
    customer: str | None,
    meter_codes: Sequence[str],
    ranges: Sequence[tuple[Grain, int, int]],
    known_at: int | None,
    *,
    whole: bool = False,
    rollups: Rollups = False,
) -> Read:
    """Rows of the customer's buckets of ``grain`` in [lo, hi) per range, seq <= K.

    With ``known_at`` None: everything stored (the present). Only the rows from
    each bucket's latest state row <= K on, unless ``whole`` (every row: window
    versions, the deep check of reconciliation). ``rollups``: the whole days of
    a day range that rollup units with a pass <= K cover come as those units (see
    `Read`).
    """
    if not meter_codes or not ranges:
        return Read({}, False)
    customers = None if customer is None else [customer]
    got = _read(conn, customers, meter_codes, ranges, known_at, whole, rollups)
    if customer is None:
        out: dict[BucketKey, list[IndexRow]] = {}
        for r in got.values():
            out.update(r.rows)
        return Read(
            out,
            any(r.straddles for r in got.values()),
            max((r.floor for r in got.values()), default=0),
            any(r.refold for r in got.values()),
        )
    return got.get(customer, Read({}, False))


def read_many(
    conn: Connection,
    customers: Sequence[str],
    meter_codes: Sequence[str],
    ranges: Sequence[tuple[Grain, int, int]],
    known_at: int,
    *,
    whole: bool = False,
    rollups: Rollups = False,
) -> dict[str, Read]:
    """`read` for many customers with the same buckets, in one statement (an
    invoice run reads a chunk of customers at once instead of one by one).
    Every customer asked for has an entry (empty when it has no rows)."""
    out = {c: Read({}, False) for c in customers}
    if not customers or not meter_codes or not ranges:
        return out
    out.update(_read(conn, sorted(set(customers)), meter_codes, ranges, known_at, whole, rollups))
    return out


def _read(
    conn: Connection,
    customers: Sequence[str] | None,
    meter_codes: Sequence[str],
    ranges: Sequence[tuple[Grain, int, int]],
    known_at: int | None,
    whole: bool,
    rollups: Rollups = False,
) -> dict[str, Read]:
    """One statement through the driver's own cursor (an invoice run reads a few
    hundred thousand index rows; SQLAlchemy's per-row layer would cost a third);
    with ``rollups``, the whole days a customer's rollup units answer are read from
    them instead (see `Read`): one statement per group of customers left with the
    same day ranges, and two per unit."""
    pg = conn.dialect.name == "postgresql"
    groups: dict[tuple[tuple[Grain, int, int], ...], list[str]] = {}
    units: dict[tuple[Grain, int, int], dict[str, int]] = {}
    collected = _Collected(known_at)
    days = Grain.DAY if rollups is True else rollups
    if days and known_at is not None and customers:
        passes = unit_passes(conn, customers, known_at, *_day_span(ranges, days))
        for c in customers:
            rest, mine = _split_units(ranges, passes.get(c, {}), days)
            groups.setdefault(tuple(rest), []).append(c)
            for grain, lo, hi, seq in mine:
                units.setdefault((grain, lo, hi), {})[c] = seq
                if seq > collected.floors.get(c, 0):
                    collected.floors[c] = seq
    else:
        groups[tuple(ranges)] = list(customers) if customers is not None else []
    raw = conn.connection.driver_connection
    cur = raw.cursor()  # type: ignore[union-attr]
    try:
        for rest_key, members in groups.items():
            rest = list(rest_key)
            if not rest:
                continue
            sql, params = _select(
                pg, None if customers is None else members, meter_codes, rest, known_at
            )
            if not whole:
                sql += _latest_only(cur, sql, known_at, _p(pg, "k"), params)
            cur.execute(sql, params)
            collected.add(cur.fetchall())
        for (grain, lo, hi), floors in units.items():
            for sql, params in _unit_selects(
                pg,
                sorted(floors),
                meter_codes,
                (grain, lo, hi),
                min(floors.values()),
                known_at,
                days or Grain.DAY,
            ):
                cur.execute(sql, params)
                collected.add(cur.fetchall(), floors)
    finally:
        cur.close()
    return collected.reads()


def _day_span(ranges: Sequence[tuple[Grain, int, int]], grain: Grain) -> tuple[int, int]:
    days = [(lo, hi) for g, lo, hi in ranges if str(g) == grain]
    if not days:
        return 0, 0
    return min(lo for lo, _ in days), max(hi for _, hi in days)


def unit_passes(
    conn: Connection, customers: Sequence[str], known_at: int, lo: int, hi: int
) -> dict[str, dict[tuple[str, int], int]]:
    """Customer -> (unit grain, unit start) -> seq of the latest rollup pass <= K that
    wrote that unit, for units starting in [lo, hi) (a month's units start in it)."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    if lo >= hi:
        return out
    lo = month_of(lo)
    pg = conn.dialect.name == "postgresql"
    for i in range(0, len(customers), 500):
        batch = list(customers[i : i + 500])
        params: dict[str, Any] = {f"c{j}": c for j, c in enumerate(batch)}
        params |= {"k": known_at, "lo": lo, "hi": hi}
        sql = (
            "SELECT customer_id, grain, bucket_start, MAX(seq) FROM usage_rollups "
            "WHERE customer_id IN ("
            + ", ".join(_p(pg, f"c{j}") for j in range(len(batch)))
            + ") AND grain IN ('m', '8', '2')"  # the key's second column: range probes
            + f" AND bucket_start >= {_p(pg, 'lo')} AND bucket_start < {_p(pg, 'hi')} "
            f"AND seq <= {_p(pg, 'k')} GROUP BY customer_id, grain, bucket_start"
        )
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(sql, params)
            for c, g, start, seq in cur.fetchall():
                out.setdefault(str(c), {})[(str(g), int(start))] = int(seq)
        finally:
            cur.close()
    return out


def _p(pg: bool, name: str) -> str:
    return f"%({name})s" if pg else f":{name}"


def _select(
    pg: bool,
    customers: Sequence[str] | None,
    meter_codes: Sequence[str],
    ranges: Sequence[tuple[Grain, int, int]],
    known_at: int | None,
) -> tuple[str, dict[str, Any]]:
    """One SELECT of the ranges' rows. The meter and customer conditions are repeated
    inside each range's OR term: SQLite then probes the primary key down to each
    bucket range (MULTI-INDEX OR); with them outside the OR it probed only
    (customer, meter) and read every bucket the customer ever had."""
    params: dict[str, Any] = {}
    codes = sorted(set(meter_codes))
    params.update({f"m{i}": c for i, c in enumerate(codes)})
    outer = "meter_code IN (" + ", ".join(_p(pg, f"m{i}") for i in range(len(codes))) + ")"
    if customers is not None:
        params.update({f"c{i}": c for i, c in enumerate(customers)})
        outer += (
            " AND customer_id IN ("
            + ", ".join(_p(pg, f"c{i}") for i in range(len(customers)))
            + ")"
        )
    where = []
    for i, (grain, lo, hi) in enumerate(ranges):
        where.append(
            f"({outer} AND grain = {_p(pg, f'g{i}')} AND bucket_start >= {_p(pg, f'lo{i}')} "
            f"AND bucket_start < {_p(pg, f'hi{i}')})"
        )
        params |= {f"g{i}": str(grain), f"lo{i}": lo, f"hi{i}": hi}
    sql = _SELECTED + " FROM usage_index u WHERE (" + " OR ".join(where) + ")"
    if known_at is not None:
        sql += f" AND first_seq <= {_p(pg, 'k')}"
        params["k"] = known_at
    return sql, params


def _unit_selects(
    pg: bool,
    customers: Sequence[str] | None,
    meter_codes: Sequence[str],
    unit: tuple[Grain, int, int],
    seq: int,
    known_at: int | None,
    days: Grain = Grain.DAY,
    only: Sequence[int] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """A rollup unit's ``cpt`` rows from the pass at ``seq`` on and its day rows
    (``days``: day rollups, or the windows of 1-day meters) after it (their ``cpt``
    rows left out: they only cache what the other rows hold), both keyed as the
    unit's bucket; `_Collected.add` keeps, per customer, the ``cpt`` row of its own
    pass and the day rows after it. Two statements, each one range of the key."""
    grain, lo, hi = unit
    out = []
    for g, a, b, cond in (
        (grain, lo, lo + 1, f"seq >= {int(seq)} AND kind = 'cpt'"),
        (days, lo, hi, f"seq > {int(seq)} AND kind <> 'cpt'"),
    ):
        if g == days and only is not None:  # the given days only (each a key prefix)
            if not only:
                continue
            sql, params = _select(
                pg, customers, meter_codes, [(g, d, d + 1) for d in only], known_at
            )
        else:
            sql, params = _select(pg, customers, meter_codes, [(g, a, b)], known_at)
        sql = sql.replace(
            _SELECTED,
            f"SELECT meter_code, customer_id, '{grain}', dimensions, "
            f"{int(lo)}, seq, first_seq, kind, state, events",
            1,
        )
        out.append((sql + " AND " + cond, params))
    return out


def _split_units(
    ranges: Sequence[tuple[Grain, int, int]],
    passes: Mapping[tuple[str, int], int],
    days: Grain = Grain.DAY,
) -> tuple[list[tuple[Grain, int, int]], list[tuple[Grain, int, int, int]]]:
    """A customer's day ranges without the days its rolled-up units cover (largest
    units first, `bitemporal.cover`), and those units (grain, lo, hi, pass seq)."""
    if not passes:
        return list(ranges), []
    rest: list[tuple[Grain, int, int]] = []
    units: list[tuple[Grain, int, int, int]] = []

    def usable(grain: Grain, start: int) -> bool:
        return (str(grain), start) in passes

    for grain, lo, hi in ranges:
        if str(grain) != days:
            rest.append((grain, lo, hi))
            continue
        m = month_of(lo)
        while m < hi:
            end = next_month(m)
            a, b = max(lo, m), min(hi, end)
            parts = cover(a, b, m, usable)
            for g, x, y in parts:
                if g is not None:
                    units.append((g, x, y, passes[(str(g), x)]))
                elif rest and rest[-1][0] == grain and rest[-1][2] == x:
                    rest[-1] = (grain, rest[-1][1], y)
                else:
                    rest.append((grain, x, y))
            m = end
    return rest, units


class _Collected:
    """Fetched index rows parsed into per-customer, per-bucket lists."""

    def __init__(self, known_at: int | None) -> None:
        self.top = known_at
        self.rows: dict[str, dict[BucketKey, list[IndexRow]]] = {}
        self.straddling: set[str] = set()
        self.refold: set[str] = set()
        self.floors: dict[str, int] = {}  # customer -> greatest rollup pass read

    def add(self, fetched: Sequence[Any], floors: Mapping[str, int] | None = None) -> None:
        """Parse fetched rows; with ``floors`` (rows of a rollup unit, per customer the
        pass its unit is read from) keep a ``cpt`` row only at the customer's floor
        and the other rows only after it."""
        if floors is not None:
            cpt = RowKind.CHECKPOINT.value
            fetched = [
                r
                for r in fetched
                if (
                    int(r[5]) == floors[str(r[1])] if r[7] == cpt else int(r[5]) > floors[str(r[1])]
                )
            ]
        rows = self.rows
        straddling = self.straddling
        states = _STATES
        kinds = _KINDS
        top = self.top
        set_kind = RowKind.SET
        units = UNIT_GRAIN_TEXTS
        # Rows come customer by customer and bucket by bucket (the primary key's order),
        # so the last customer's map and the last bucket's list are kept at hand.
        last_c: str | None = None
        by_key: dict[BucketKey, list[IndexRow]] = {}
        last_key: BucketKey | None = None
        last_list: list[IndexRow] = []
        for code, cust, grain, dims, start, seq, first, kind, state, n in fetched:
            c = str(cust)
            seq = int(seq)
            if top is not None and seq > top:
                straddling.add(c)
                continue
            parsed = states.get(state)
            if parsed is None:
                if len(states) >= _STATES_SIZE:
                    states.clear()
                parsed = states[state] = _parse_state(state)
            row = IndexRow(seq, int(first), kinds[kind], parsed, int(n))
            if row.kind is set_kind and grain in units:
                self.refold.add(c)  # a day's whole state after the pass: not a delta
            key = (str(code), c, str(grain), str(dims), int(start))
            if key == last_key:
                last_list.append(row)
                continue
            if c != last_c:
                got = rows.get(c)
                if got is None:
                    got = rows[c] = {}
                by_key, last_c = got, c
            found = by_key.get(key)
            if found is None:
                found = by_key[key] = [row]
            else:
                found.append(row)
            last_key, last_list = key, found

    def reads(self) -> dict[str, Read]:
        rows, floors = self.rows, self.floors
        return {
            c: Read(rows.get(c, {}), c in self.straddling, floors.get(c, 0), c in self.refold)
            for c in rows.keys() | self.straddling | self.refold | floors.keys()
        }


def read_units(
    conn: Connection,
    wanted: Mapping[tuple[Grain, int, int], Mapping[str, int]],
    codes: Sequence[str],
    known_at: int,
    days: Grain = Grain.DAY,
    only: Mapping[tuple[Grain, int, int], Sequence[int]] | None = None,
) -> dict[str, Read]:
    """Rollup units (grain, lo, hi) of some customers, each from the pass given per
    customer, as known at K (a later pass folds forward from them). ``only``: per
    unit, the days whose rows after the pass are read (those facts changed; the
    others have none), instead of every day of the unit."""
    pg = conn.dialect.name == "postgresql"
    collected = _Collected(known_at)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for unit, floors in wanted.items():
            low = min(floors.values())
            picked = None if only is None else only.get(unit, ())
            for sql, params in _unit_selects(
                pg, sorted(floors), codes, unit, low, known_at, days, picked
            ):
                cur.execute(sql, params)
                collected.add(cur.fetchall(), floors)
    finally:
        cur.close()
    return collected.reads()


# The texts `to_json` writes for a sum, max or min of a canonical decimal (no "-0":
# `to_json` never writes it); anything else goes through `from_json` and its checks.
_DECIMAL_STATE = re.compile(
    r'\{"kind":"(sum|max|min)","\1":"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?)"\}'
)
_DECIMAL_KINDS = {"sum": SumState, "max": MaxState, "min": MinState}


def _parse_state(text: Any) -> Any:
    """`from_json` of a state text, with the hot canonical decimal kinds parsed from
    the matched text (the same state: `from_json` accepts exactly these texts)."""
    if type(text) is str:
        m = _DECIMAL_STATE.fullmatch(text)
        if m is not None and m.group(2) != "-0":
            return _DECIMAL_KINDS[m.group(1)](Decimal(m.group(2)))
    return from_json(text)


# Parsed state texts (states are immutable values; texts repeat across buckets).
_STATES: dict[str, Any] = {}
_STATES_SIZE = 100_000
_COUNT_TEXTS: dict[int, str] = {}  # count -> its state text, for writes
_KINDS = {k.value: k for k in RowKind}


def _meters_with_seq(conn: Connection) -> list[tuple[int, Meter]]:
    from meterline.metering import parse_meters

    rows = conn.execute(text("SELECT seq, definition FROM meters ORDER BY seq")).all()
    meters = parse_meters([decode_json(r[1]) for r in rows])
    return [(int(r[0]), m) for r, m in zip(rows, meters, strict=True)]


def rebuild(conn: Connection) -> None:
    """Write the index of an existing store as live ingestion would have.

    Per meter: ``set`` rows at the meter's seq over the events stored before
    it; one ``add`` row per bucket and ingest batch for the events after it;
    then every later retraction of its events, in seq order.
    """
    for meter_seq, m in _meters_with_seq(conn):
        build_meter(conn, m, meter_seq)
        rows = conn.execute(
            text(
                "SELECT seq, source, event_id, customer_id, event_type, event_time, properties, "
                "content_hash, batch_id FROM events WHERE event_type = :t AND seq > :q "
                "ORDER BY batch_id, seq"
            ),
            {"t": m.event_type, "q": meter_seq},
        )
        batch: list[tuple[int, Event]] = []
        current: int | None = None
        for r in rows:
            if current is not None and int(r[8]) != current:
                append(conn, fold_events({m.event_type: [m]}, batch))
                batch = []
            current = int(r[8])
            batch.append((int(r[0]), Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])))
        append(conn, fold_events({m.event_type: [m]}, batch))
        retracted = conn.execute(
            text(
                "SELECT r.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, "
                "e.properties, e.content_hash FROM retractions r JOIN events e ON e.seq = r.event_seq "
                "WHERE e.event_type = :t AND r.seq > :q ORDER BY r.seq"
            ),
            {"t": m.event_type, "q": meter_seq},
        ).all()
        for r in retracted:
            ev = Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])
            on_retraction(conn, [m], ev, int(r[0]))


def current_windows(conn: Connection) -> list[dict[str, Any]]:
    """The index folded to the present at window grain, in the old ``windows`` shape
    (for a downgrade)."""
    kinds = {m.code: m for _, m in _meters_with_seq(conn)}
    got = read(conn, None, sorted(kinds), [(Grain.WINDOW, -(2**62), 2**62)], None, whole=True)
    out = []
    for (code, customer, _, dims, start), rows in sorted(got.rows.items()):
        m = kinds[code]
        f = fold_rows(m.aggregation, rows)
        out.append(
            {
                "m": code,
                "c": customer,
                "d": dims,
                "s": start,
                "e": start + m.window_us,
                "st": to_json(f.state),
                "n": f.events,
                "v": f.version,
                "q": max(r.seq for r in rows),
            }
        )
    return out


def folded_windows(
    conn: Connection, known_at: int | None = None
) -> dict[tuple[str, str, str, int], tuple[str, int]]:
    """Every window of the index as known at K (None: now): key -> (state JSON, events)."""
    kinds = {m.code: m.aggregation for _, m in _meters_with_seq(conn)}
    got = read(conn, None, sorted(kinds), [(Grain.WINDOW, -(2**62), 2**62)], known_at)
    return {
        (code, customer, dims, start): (to_json(f.state), f.events)
        for (code, customer, _, dims, start), f in got.folded(kinds).items()
    }


# A read that folds more rows than this since a bucket's last state appends a
# checkpoint, so the next read of that bucket starts there.
CHECKPOINT_AFTER = 8


def checkpoint(conn: Connection, got: Read, kinds: Mapping[str, Aggregation], seq: int) -> int:
    """Append ``cpt`` rows at ``seq`` (the current seq, in a write transaction
    holding the knowledge lock) for the buckets of ``got`` folded from many rows."""
    out = checkpoint_rows(got, kinds, seq)
    append(conn, out)
    return len(out)


def checkpoint_rows(
    got: Read, kinds: Mapping[str, Aggregation], seq: int
) -> dict[BucketKey, Delta]:
    """The ``cpt`` rows `checkpoint` would append at ``seq`` for ``got`` (an invoice
    run collects a chunk's and appends them with one statement)."""
    out: dict[BucketKey, Delta] = {}
    for key, rows in got.rows.items():
        if key[2] in UNIT_GRAIN_TEXTS:
            continue  # rollup units are written by rollup passes only
        if len(rows) <= CHECKPOINT_AFTER or any(r.seq == seq and r.kind.is_state for r in rows):
            continue
        f = fold_rows(kinds[key[0]], rows)
        out[key] = Delta(RowKind.CHECKPOINT, f.state, f.events, seq, seq)
    return out
