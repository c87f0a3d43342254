"""`reconcile`: the books tie out, and any break is found (DESIGN §9).

Each check recomputes one kind of stored fact from the facts it derives from
and names every record that differs (lists are capped, counts are not):

    ingestion_counts     ingest_batches vs stored events and quarantine
    window_aggregates    the window index vs a recomputation from raw events
    documents_reproduce  every issued document recomputed at its cutoff
    document_arithmetic  lines -> subtotal -> tax -> total, and row vs body
    ledger_balanced      every journal entry: debits == credits, one currency
    ledger_postings      every entry == the posting rule applied to its fact
    ledger_receivable    receivable per customer == its open documents
    ledger_revenue       revenue per charge, tax, credit and cash vs documents
                         and credit grant facts (grants, voids, breakage)
    hash_chain           the document chain and gapless numbering
    void_corrections     no open credit/debit note corrects a void invoice

Unbilled usage is reported as warnings: the books can tie out while usage
waits. Work is streamed or grouped in SQL: events are never all in memory;
windows are recomputed one (meter, customer) series at a time, in day-sized
chunks for large series. The whole run reads one consistent snapshot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing import body as typed
from meterline.billing.credits import GrantKind
from meterline.billing.document import GENESIS, Issued, Kind, Status, body_hash, chain_hash
from meterline.domain.canonical import content_hash
from meterline.domain.decimals import exact_sum, fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event, decode_json
from meterline.domain.merkle import perfect_ranges
from meterline.domain.money import Currency, Rounding, round_money
from meterline.domain.timestamps import US_PER_DAY, format_us
from meterline.ledger.accounts import CASH, TAX_PAYABLE, account_class, account_type
from meterline.ledger.credit_postings import GRANT, credit_entry
from meterline.ledger.postings import Entry, issue_entry, revenue_accounts, status_entry
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
from meterline.metering.aggregation import CountState
from meterline.metering.bitemporal import (
    Grain,
    IndexRow,
    RowKind,
    day_of,
    fold_rows,
    has_day_rollup,
)
from meterline.store import (
    checkpoints,
    credit_facts,
    documents,
    driver,
    journal,
    merkle,
    sequence,
    usage_index,
    usage_rollups,
)
from meterline.store.customer_catalog import load_customer, load_customers, load_customers_by_id
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters
from meterline.store.window_index import WindowKey, WindowRow, fold, recompute

Progress = Callable[[str, int, int], None]

# How many records a check's details name before it only counts.
MAX_LISTED = 20
# A (meter, customer) series with more events is recomputed in day-sized chunks.
CHUNK_EVENTS = 200_000
DAY_US = 86_400_000_000

ZERO = Decimal(0)


@dataclass
class Check:
    name: str
    ok: bool
    details: str
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "details": self.details, "count": self.count}


@dataclass
class UnbilledWarning:
    name: str
    count: int
    details: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "count": self.count, "details": self.details}


@dataclass
class ReconcileReport:
    checks: list[Check] = field(default_factory=list)
    warnings: list[UnbilledWarning] = field(default_factory=list)
    cutoff_seq: int = 0
    # "full": everything from seq 0; "incremental": what came after the last
    # clean run's checkpoint (DESIGN §9). Same checks, same shape.
    mode: str = "full"
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
            "warnings": [w.to_json() for w in self.warnings],
            "cutoff_seq": self.cutoff_seq,
            "mode": self.mode,
            "checkpoint": self.checkpoint,
        }


def listing(items: list[str], cap: int = MAX_LISTED) -> str:
    """Name the first `cap` records and count the rest."""
    shown = "; ".join(items[:cap])
    return shown + (f"; ... and {len(items) - cap} more" if len(items) > cap else "")


def _result(name: str, problems: list[str], fine: str) -> Check:
    if not problems:
        return Check(name, True, fine, 0)
    return Check(name, False, f"{len(problems)} problem(s): {listing(problems)}", len(problems))


@contextlib.contextmanager
def _snapshot(store: Store) -> Iterator[Connection]:
    """One consistent view for the whole run (a repeatable-read snapshot on PostgreSQL;
    SQLite's WAL read transaction is one already)."""
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def reconcile(
    store: Store, progress: Progress | None = None, full: bool = False, record: bool = True
) -> ReconcileReport:
    """Run every check of DESIGN §9 against one snapshot of the store.

    Incremental by default: after a clean run's checkpoint at seq K0, each check
    looks only at what came after K0 (`Scope.since`), plus the consistency of the
    tree heads; `full` checks everything. A clean run records a new checkpoint.
    A corrupted row never stops the run: each check runs guarded and reports
    what it could not read as a failure naming the row or the record."""
    report = ReconcileReport()
    tick: Progress = progress or (lambda _stage, _done, _total: None)
    with _snapshot(store) as conn:
        report.cutoff_seq = int(
            conn.execute(text("SELECT seq FROM knowledge WHERE id = 1")).scalar_one()
        )
        scope = Scope(0, None)
        last: checkpoints.Checkpoint | None = None
        with contextlib.suppress(Exception), conn.begin_nested():
            last = checkpoints.last(conn)
        if not full and last is not None and last.seq <= report.cutoff_seq:
            scope = Scope(last.seq, last, Carry.from_state(last.state))
        carry = Carry()  # what this run's checkpoint carries to the next one
        report.mode = "incremental" if scope.checkpoint else "full"
        report.checkpoint = {
            "from_seq": scope.since,
            "to_seq": report.cutoff_seq,
            "previous": last.checkpoint_hash if last else None,
        }
        run = _Guard(conn, report.checks)
        tick("ingestion", 0, 1)
        run(["ingestion_counts"], lambda: [check_ingestion(conn, scope.since)])
        tick("ingestion", 1, 1)
        usage: list[Series] = []
        meters: list[Meter] = []

        def windows() -> list[Check]:
            meters.extend(load_meters(conn))
            usage.extend(_usage_summary(conn, scope.since))
            got = check_windows(conn, meters, usage, tick, scope.since)
            return [with_rollups(conn, got, scope.since)]

        run(["window_aggregates"], windows)
        docs = Documents()

        def load_docs() -> list[Check]:
            nonlocal docs
            docs = _load_documents(conn, tick, scope.since, scope.carry)
            carry.documents, carry.tip, carry.counters = docs.total, docs.tip, docs.counters
            return [
                _result("documents_reproduce", docs.reproduce, docs.reproduce_ok()),
                _result(
                    "document_arithmetic",
                    docs.arithmetic,
                    f"{docs.checked} of {docs.total} documents: lines, subtotal, tax, "
                    "credits and total agree",
                ),
            ]

        run(["documents_reproduce", "document_arithmetic"], load_docs)
        run(LEDGER_CHECKS, lambda: check_ledger(conn, docs, tick, scope, carry))
        run(
            ["hash_chain"],
            lambda: [
                _result(
                    "hash_chain",
                    docs.chain,
                    f"{docs.total} documents chained from genesis; numbers gapless per kind",
                )
            ],
        )
        run(["void_corrections"], lambda: [check_void_corrections(conn, docs)])
        tree = TreeCheck()
        run(["merkle_log"], lambda: [check_merkle(conn, scope, report.cutoff_seq, tree, tick)])
        carry.heads = tree.heads
        tick("warnings", 0, 1)
        try:
            with conn.begin_nested():
                report.warnings.extend(unbilled_usage(conn, meters, usage, docs, scope.since))
        except Exception as exc:  # warnings never fail the run, nor crash it
            report.warnings.append(
                UnbilledWarning("warnings_incomplete", 1, f"unbilled usage not computed: {exc}")
            )
        tick("warnings", 1, 1)
    if report.ok and record:
        _record_checkpoint(store, report, scope, tree, carry)
    return report


Totals = dict[tuple[str, str], Decimal]


@dataclass
class Carry:
    """What the whole-store checks know at a checkpoint, kept in its (hashed) state so
    the next incremental run reads only what was added since (DESIGN §9): the document
    chain's tip and per-kind counters, how many documents and tree heads were checked,
    and what the documents say the receivable and the other accounts must hold. An old
    document or fact altered in place is then found by `--full` and the sweep."""

    documents: int = 0
    tip: str = GENESIS
    counters: dict[str, int] = field(default_factory=dict)
    heads: int = 0
    receivable: Totals = field(default_factory=dict)
    owed: Totals = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        def rows(totals: Totals) -> list[list[str]]:
            return [[a, c, str(v)] for (a, c), v in sorted(totals.items())]

        return {
            "documents": self.documents,
            "tip": self.tip,
            "counters": dict(sorted(self.counters.items())),
            "heads": self.heads,
            "receivable": rows(self.receivable),
            "owed": rows(self.owed),
        }

    @staticmethod
    def from_state(state: dict[str, Any]) -> Carry | None:
        """The carried state, or None (a checkpoint from before it was kept, or one that
        cannot be read): then documents and the ledger are read whole, as `--full`."""
        got = state.get("carry")
        if not isinstance(got, dict):
            return None
        try:
            return Carry(
                int(got["documents"]),
                str(got["tip"]),
                {str(k): int(v) for k, v in got["counters"].items()},
                int(got["heads"]),
                {(str(a), str(c)): Decimal(str(v)) for a, c, v in got["receivable"]},
                {(str(a), str(c)): Decimal(str(v)) for a, c, v in got["owed"]},
            )
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
            return None


@dataclass(frozen=True)
class Scope:
    """What a run checks: facts, index rows and documents with seq > since. With a
    `carry` (incremental after a checkpoint that kept one) documents before `since` are
    not read: their chain tip, counts and ledger totals come from the checkpoint."""

    since: int
    checkpoint: checkpoints.Checkpoint | None
    carry: Carry | None = None


LEDGER_CHECKS = ["ledger_balanced", "ledger_postings", "ledger_receivable", "ledger_revenue"]


class _Guard:
    """Runs one check in a savepoint; whatever it raises becomes a failed check with the
    reason (a PostgreSQL error would otherwise abort the snapshot for every later check)."""

    def __init__(self, conn: Connection, out: list[Check]) -> None:
        self.conn = conn
        self.out = out

    def __call__(self, names: list[str], work: Callable[[], list[Check]]) -> None:
        try:
            with self.conn.begin_nested():
                self.out.extend(work())
        except Exception as exc:
            why = f"could not complete: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            self.out.extend(Check(name, False, why, 1) for name in names)


def _record_checkpoint(
    store: Store, report: ReconcileReport, scope: Scope, tree: TreeCheck, carry: Carry
) -> None:
    base = scope.checkpoint.fact_count if scope.checkpoint else 0
    with store.write() as conn:
        cp = checkpoints.record(
            conn,
            report.cutoff_seq,
            base + tree.facts,
            tree.root,
            report.mode,
            content_hash(report.to_json()),
            {"sweep_next": tree.sweep_next, "carry": carry.to_state()},
        )
    report.checkpoint["recorded"] = cp.checkpoint_hash


def check_void_corrections(conn: Connection, docs: Documents) -> Check:
    """No open credit or debit note corrects a void invoice: voiding an invoice
    voids its notes (SEMANTICS.md), else the receivable would keep a correction
    of something the customer no longer owes."""
    rows = conn.execute(
        text("SELECT number, corrects FROM documents WHERE corrects IS NOT NULL ORDER BY seq")
    ).all()
    problems = [
        f"{note} is {docs.status.get(str(note), Status.ISSUED)} but corrects void {invoice}"
        for note, invoice in rows
        if docs.status.get(str(invoice)) == Status.VOID
        and docs.status.get(str(note), Status.ISSUED) != Status.VOID
    ]
    return _result(
        "void_corrections", problems, f"{len(rows)} corrections: none left open on a void invoice"
    )


# 1. Ingestion ----------------------------------------------------------------


def check_ingestion(conn: Connection, since: int = 0) -> Check:
    """Batches, events and quarantine tie out; with `since`, only batches that stored
    events after it (a batch's seqs are contiguous) and those that stored none."""
    problems: list[str] = []
    rows = conn.execute(
        text(
            "SELECT b.id, b.accepted, b.rejected, b.duplicates, b.first_seq, b.last_seq, "
            "COALESCE(e.n, 0), e.lo, e.hi, COALESCE(q.n, 0) FROM ingest_batches b "
            "LEFT JOIN (SELECT batch_id, COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM events "
            "WHERE seq > :since GROUP BY batch_id) e ON e.batch_id = b.id "
            "LEFT JOIN (SELECT batch_id, COUNT(*) AS n FROM quarantine GROUP BY batch_id) q "
            "ON q.batch_id = b.id WHERE b.first_seq IS NULL OR b.first_seq > :since ORDER BY b.id"
        ),
        {"since": since},
    )
    batches = accepted = rejected = duplicates = 0
    for bid, acc, rej, dup, first, last, stored, lo, hi, quarantined in rows:
        batches += 1
        accepted, rejected, duplicates = accepted + acc, rejected + rej, duplicates + dup
        if int(acc) != int(stored):
            problems.append(f"batch {bid}: {acc} accepted but {stored} events stored")
        if int(rej) != int(quarantined):
            problems.append(f"batch {bid}: {rej} rejected but {quarantined} quarantined")
        if int(dup) < 0:
            problems.append(f"batch {bid}: negative duplicate count {dup}")
        if int(stored) and (first is None or int(lo) < int(first) or int(hi) > int(last)):
            problems.append(
                f"batch {bid}: stored seqs {lo}..{hi} outside the batch's {first}..{last}"
            )
    for table, scoped in (("events", " AND t.seq > :since"), ("quarantine", "")):
        for bid, n in conn.execute(
            text(
                f"SELECT t.batch_id, COUNT(*) FROM {table} t WHERE NOT EXISTS "
                f"(SELECT 1 FROM ingest_batches b WHERE b.id = t.batch_id){scoped} "
                "GROUP BY t.batch_id"
            ),
            {"since": since},
        ):
            problems.append(f"{n} {table} rows belong to no ingest batch (batch id {bid})")
    if conn.dialect.name == "postgresql":
        # There the idempotency keys live in their own table; each stored event has one.
        keys, events = conn.execute(
            text(
                "SELECT (SELECT COUNT(*) FROM event_keys WHERE seq > :since), "
                "(SELECT COUNT(*) FROM events WHERE seq > :since)"
            ),
            {"since": since},
        ).one()
        if int(keys) != int(events):
            missing = conn.execute(
                text(
                    "SELECT k.source, k.event_id, k.seq FROM event_keys k WHERE k.seq > :since "
                    "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = k.seq) "
                    "ORDER BY k.seq LIMIT :n"
                ),
                {"n": MAX_LISTED, "since": since},
            ).all()
            named = ", ".join(f"({s}, {e}) seq {q}" for s, e, q in missing)
            problems.append(
                f"{keys} idempotency keys but {events} stored events"
                + (f"; keys without an event: {named}" if named else "")
            )
    dangling = conn.execute(
        text(
            "SELECT r.source, r.event_id FROM retractions r WHERE r.seq > :since AND NOT EXISTS "
            "(SELECT 1 FROM events e WHERE e.seq = r.event_seq) ORDER BY r.seq"
        ),
        {"since": since},
    ).all()
    problems.extend(f"retraction of ({s}, {e}) points at no stored event" for s, e in dangling)
    return _result(
        "ingestion_counts",
        problems,
        f"{batches} batches: {accepted} accepted = events stored, {rejected} rejected = "
        f"quarantined, {duplicates} duplicates",
    )


# 2. Window aggregates --------------------------------------------------------


@dataclass(frozen=True)
class Series:
    customer: str
    event_type: str
    events: int  # live (not retracted)
    stored: int  # including retracted
    first: int
    last: int


def _usage_summary(conn: Connection, since: int = 0) -> list[Series]:
    """Events per (customer, event type): one grouped scan, retractions subtracted
    (with `since`, only events stored after it)."""
    retracted = {
        (str(c), str(t)): int(n)
        for c, t, n in conn.execute(
            text(
                "SELECT e.customer_id, e.event_type, COUNT(*) FROM retractions r "
                "JOIN events e ON e.seq = r.event_seq WHERE e.seq > :since "
                "GROUP BY e.customer_id, e.event_type"
            ),
            {"since": since},
        )
    }
    # After a checkpoint SQLite would still walk the whole (customer, type, time) index
    # for the grouping; the unary plus makes it read only the seq range instead.
    by = (
        "+customer_id, +event_type"
        if since and conn.dialect.name == "sqlite"
        else ("customer_id, event_type")
    )
    rows = conn.execute(
        text(
            "SELECT customer_id, event_type, COUNT(*), MIN(event_time), MAX(event_time) "
            f"FROM events WHERE seq > :since GROUP BY {by} ORDER BY {by}"
        ),
        {"since": since},
    )
    return [
        Series(str(c), str(t), int(n) - retracted.get((str(c), str(t)), 0), int(n), int(a), int(b))
        for c, t, n, a, b in rows
    ]


def _chunks(meter: Meter, s: Series) -> list[tuple[int | None, int | None]]:
    if s.stored <= CHUNK_EVENTS:
        return [(None, None)]
    size = meter.window_us * max(1, DAY_US // meter.window_us)
    lo = window_start(s.first, size)
    out: list[tuple[int | None, int | None]] = []
    while lo <= s.last:
        out.append((lo, lo + size))
        lo += size
    return out


def _stored_windows(
    conn: Connection, meter: Meter, customer: str, lo: int | None, hi: int | None
) -> dict[WindowKey, tuple[Any, int]]:
    """The usage index folded to the present, at window grain and at day grain
    (day keys carry the grain in their dimensions slot: see `_day_keys`): state, events."""
    ranges = (
        [(Grain.WINDOW, lo, hi)]
        if lo is not None and hi is not None
        else [(Grain.WINDOW, -(2**62), 2**62)]
    )
    if has_day_rollup(meter.window_us):
        ranges.append((Grain.DAY, ranges[0][1], ranges[0][2]))
    got = usage_index.read(conn, customer, [meter.code], ranges, None, whole=True)
    return _keyed(meter, got)


def _keyed(meter: Meter, got: usage_index.Read) -> dict[WindowKey, tuple[Any, int]]:
    out: dict[WindowKey, tuple[Any, int]] = {}
    for (code, cust, grain, dims, start), f in got.folded({meter.code: meter.aggregation}).items():
        key_dims = dims if grain == Grain.WINDOW else f"day:{dims}"
        out[(code, cust, key_dims, start)] = (f.state, f.events)
    return out


def _events_of(rows: list[IndexRow]) -> int:
    """A bucket's live event count from its rows, whatever its meter (unknown here)."""
    events = 0
    for r in sorted(rows, key=lambda r: (r.seq, r.kind.is_state)):
        if r.kind.is_state:
            events = r.events
        else:
            events += r.events if r.kind is RowKind.ADD else -r.events
    return events


def _with_days(meter: Meter, fresh: dict[WindowKey, WindowRow]) -> dict[WindowKey, WindowRow]:
    """Recomputed windows plus their UTC-day rollups (keys as in `_stored_windows`)."""
    if not has_day_rollup(meter.window_us):
        return fresh
    out = dict(fresh)
    for (code, cust, dims, start), row in fresh.items():
        key = (code, cust, f"day:{dims}", day_of(start))
        prior = out.get(key)
        out[key] = (
            row
            if prior is None
            else WindowRow(merge(prior.state, row.state), prior.event_count + row.event_count, 0)
        )
    return out


def _key_text(key: WindowKey) -> str:
    meter, customer, dims, start = key
    return f"window {meter}/{customer}/{dims}/{_instant_text(start)}"


def _compare_windows(
    fresh: dict[WindowKey, WindowRow],
    stored: dict[WindowKey, tuple[Any, int]],
    empty_state: str,
    problems: list[str],
) -> int:
    """Compare as canonical JSON; states equal as values have equal JSON (decimals
    print canonically), so only unequal ones are serialised (most of the cost)."""
    for key, row in fresh.items():
        got = stored.get(key)
        if got is None:
            problems.append(
                f"{_key_text(key)}: missing (recomputed {row.event_count} events "
                f"{to_json(row.state)})"
            )
        elif got[1] != row.event_count or (
            got[0] != row.state and to_json(got[0]) != to_json(row.state)
        ):
            problems.append(
                f"{_key_text(key)}: stored {got[1]} events {to_json(got[0])}, "
                f"recomputed {row.event_count} events {to_json(row.state)}"
            )
    for key, (state, count) in stored.items():
        if key not in fresh and (count != 0 or to_json(state) != empty_state):
            problems.append(
                f"{_key_text(key)}: stored {count} events {to_json(state)}, but none found"
            )
    return len(fresh)


def windows_touched(
    conn: Connection, meters: list[Meter], since: int
) -> dict[tuple[str, str], set[int]]:
    """The index rows facts after `since` can have changed, as (meter, customer) ->
    window starts: where events were stored or retracted since. This is the
    incremental scope of check 2; a new index layout adapts this one function."""
    by_type: dict[str, list[Meter]] = {}
    for m in meters:
        by_type.setdefault(m.event_type, []).append(m)
    out: dict[tuple[str, str], set[int]] = {}
    rows = driver.raw_rows(  # the driver's cursor: one row per new event
        conn,
        "SELECT customer_id, event_type, event_time FROM events WHERE seq > ? "
        "UNION ALL SELECT e.customer_id, e.event_type, e.event_time FROM retractions r "
        "JOIN events e ON e.seq = r.event_seq WHERE r.seq > ?",
        (since, since),
    )
    for customer, event_type, event_time in rows:
        for m in by_type.get(str(event_type), []):
            key = (m.code, str(customer))
            starts = out.get(key)
            if starts is None:
                starts = out[key] = set()
            starts.add(window_start(int(event_time), m.window_us))
    return out


def _ranges(starts: set[int], width: int) -> list[tuple[int, int]]:
    """Adjacent windows merged into [lo, hi) ranges: one recomputation each."""
    out: list[tuple[int, int]] = []
    for start in sorted(starts):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + width)
        else:
            out.append((start, start + width))
    return out


def _check_windows_since(
    conn: Connection, meters: list[Meter], since: int, tick: Progress
) -> Check:
    """Check 2 after a checkpoint: meters defined since are checked whole; for the
    others only the chunks `windows_touched` names are recomputed."""
    problems: list[str] = []
    new_meters = {
        str(code)
        for (code,) in conn.execute(text("SELECT code FROM meters WHERE seq > :k"), {"k": since})
    }
    whole = [m for m in meters if m.code in new_meters]
    checked = 0
    if whole:
        types = {m.event_type for m in whole}
        usage = [s for s in _usage_summary(conn) if s.event_type in types]
        full = check_windows(conn, whole, usage, tick)
        if not full.ok:
            problems.append(full.details)
    by_code = {m.code: m for m in meters}
    work = sorted(
        (k, starts)
        for k, starts in windows_touched(conn, meters, since).items()
        if k[0] not in new_meters
    )
    spans: list[tuple[Meter, str, list[tuple[int, int]]]] = []
    same_span: dict[tuple[str, int, int], list[tuple[str, int]]] = {}
    for (code, customer), starts in work:
        m = by_code[code]
        width = m.window_us
        if has_day_rollup(m.window_us):  # whole UTC days, so day rollups compare whole
            starts, width = {day_of(s) for s in starts}, US_PER_DAY
        spans.append((m, customer, _ranges(starts, width)))
        for lo, hi in spans[-1][2]:
            same_span.setdefault((code, lo, hi), []).append((customer, 1))
    equal: dict[tuple[str, str, int, int], int] = {}
    retracted = _retracted(conn) if same_span else set()
    for (code, lo, hi), customers in same_span.items():
        for batch in _fast_batches(customers):
            m = by_code[code]
            for customer, n in _bulk_windows(conn, m, batch, lo, hi, retracted).items():
                equal[(code, customer, lo, hi)] = n
    for i, (m, customer, ranges) in enumerate(spans):
        tick("windows", i, len(work))
        code = m.code
        for lo, hi in ranges:
            fast = equal.get((code, customer, lo, hi))
            if fast is not None:  # equal in bulk (see `_fast_windows`)
                checked += fast
                continue
            # No savepoint per chunk (they cost more than the chunk): a row Python
            # cannot read is caught here; an SQL error fails the check as a whole.
            try:
                fresh = _with_days(m, _recompute(conn, m, customer, lo, hi))
                stored = _stored_windows(conn, m, customer, lo, hi)
                empty = to_json(aggregate(m.aggregation, []))
                checked += _compare_windows(fresh, stored, empty, problems)
            except (MeterlineError, ValueError, TypeError, KeyError, ArithmeticError) as exc:
                problems.append(
                    f"{code}/{customer} from {_instant_text(lo)}: cannot recompute "
                    f"({type(exc).__name__}: {exc}); {_bad_event_rows(conn, m, customer, lo, hi)}"
                )
    tick("windows", len(work), len(work))
    return _result(
        "window_aggregates",
        problems,
        f"{checked} windows touched since seq {since} recomputed from raw events"
        + (f"; {len(whole)} new meter(s) checked whole" if whole else ""),
    )


def with_rollups(conn: Connection, windows: Check, since: int = 0) -> Check:
    """Check 2 extended to the month rollup passes after ``since``: each pass's rows
    folded again from the day rollups the windows check compared with raw events."""
    compared, problems = usage_rollups.check(conn, since)
    if not compared and not problems:
        return windows
    if not problems:
        return Check(
            windows.name,
            windows.ok,
            f"{windows.details}; {compared} month rollup rows folded again from day rollups",
            windows.count,
        )
    details = f"{len(problems)} month rollup problem(s): {listing(problems)}"
    if not windows.ok:
        details = f"{windows.details}; {details}"
    return Check(windows.name, False, details, windows.count + len(problems))


# Check 2 folds every raw row the tables hold, not only those "as known now": a row
# inserted behind the system's back above the knowledge counter is no fact the index
# knows, and must show as a difference (check 8 names it too).
EVERY_ROW = 2**62


def _recompute(
    conn: Connection, m: Meter, customer: str, lo: int | None, hi: int | None
) -> dict[WindowKey, WindowRow]:
    """The customer's windows of ``m`` recomputed from every raw row (`EVERY_ROW`).

    An ungrouped count reads nothing of an event but its window, so the database
    counts its rows per window (exact: integers, no property parsed) instead of
    every row crossing into Python; any other meter folds the rows in Python."""
    if m.aggregation is not Aggregation.COUNT or m.group_by:
        return recompute(conn, m, customer, lo, hi, EVERY_ROW)
    sqlite = conn.dialect.name == "sqlite"
    typed = ", SUM(CASE WHEN typeof(e.event_time) = 'integer' THEN 0 ELSE 1 END)" if sqlite else ""
    sql = (
        "SELECT e.event_time - (((e.event_time % :w) + :w) % :w) AS ws, COUNT(*), MAX(e.seq)"
        f"{typed} FROM events e WHERE e.customer_id = :c AND e.event_type = :t AND e.seq <= :k "
        "AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
        "AND r.event_id = e.event_id AND r.seq <= :k)"
    )
    params: dict[str, Any] = {"w": m.window_us, "c": customer, "t": m.event_type, "k": EVERY_ROW}
    if lo is not None:
        sql += " AND e.event_time >= :lo"
        params["lo"] = lo
    if hi is not None:
        sql += " AND e.event_time < :hi"
        params["hi"] = hi
    rows = conn.execute(text(sql + " GROUP BY ws"), params).all()
    if sqlite and any(int(r[3]) for r in rows):  # a time that is no integer: named the slow way
        return recompute(conn, m, customer, lo, hi, EVERY_ROW)
    dims = encode_dimensions(())
    return {
        (m.code, customer, dims, int(ws)): WindowRow(CountState(int(n)), int(n), int(last))
        for ws, n, last in (r[:3] for r in rows)
    }


# Check 2's fast path: count and integer-sum series compared in bulk --------------
#
# The reference is `_recompute` + `_stored_windows` + `_compare_windows` per
# series, which folds every event and every index row in Python. For count
# meters and sum meters whose values are JSON integers, the database aggregates
# exactly (SQLite's SUM over 64-bit integers is exact and raises on overflow;
# PostgreSQL's NUMERIC is exact): one grouped statement per batch of customers
# for the raw side, one plain read of the index rows, compared as (events,
# canonical state text). A series passes here only when every window and day
# rollup is equal; anything else (a value that is no JSON integer, a group value
# that is no string, unreadable JSON, an unusual or non-canonical index row, any
# difference, an SQL error) sends that series to the reference path, which names
# what is wrong exactly as before: the fast path can only confirm equality.

FAST_CUSTOMERS = 500  # customers per statement
FAST_EVENTS = 200_000  # events per statement (bounds memory)
_SUM_PREFIX = '{"kind":"sum","sum":"'
_COUNT_TEXT: dict[int, str] = {}
_PLAIN_KINDS = ("add", "set", "cpt")  # a single row of these kinds folds to itself


def _fast_eligible(m: Meter) -> bool:
    """Meters whose windows the database can aggregate exactly."""
    names = [*m.group_by, *([m.property] if m.property else [])]
    if any('"' in n or "\\" in n for n in names):
        return False
    if m.aggregation is Aggregation.COUNT:
        return True
    return m.aggregation is Aggregation.SUM and m.property is not None


def _fast_raw_sql(
    m: Meter, postgres: bool, customers: Sequence[str], lo: int | None, hi: int | None
) -> tuple[str, tuple[Any, ...]]:
    """Events of the customers (in [lo, hi) if given) per window and group values:
    count, integer sum, and how many rows the database cannot read exactly (``bad``:
    a time that is no integer, unreadable JSON, a value that is no integer). No
    retraction is looked up: series with a retracted event never come here
    (`_retracted`), so the count index covers an ungrouped count."""
    w = m.window_us
    sums = m.aggregation is Aggregation.SUM
    if postgres:
        ws = "e.event_time - mod(mod(e.event_time, ?) + ?, ?)"
        p = "e.properties::jsonb"
        group = f"jsonb_typeof({p} -> ?) AS g{{i}}t, {p} ->> ? AS g{{i}}v"
        # JSON integers of at most 18 digits (`?` would read as a placeholder).
        ok = f"(jsonb_typeof({p} -> ?) = 'number' AND ({p} ->> ?) ~ " + "'^-{0,1}[0-9]{1,18}$')"
        value = f"({p} ->> ?)::numeric"
        bad = "0"

        def key(name: str) -> str:
            return name

    else:
        ws = "e.event_time - (((e.event_time % ?) + ?) % ?)"
        p = "(CASE WHEN json_valid(e.properties) THEN e.properties END)"
        group = f"json_type({p}, ?) AS g{{i}}t, json_extract({p}, ?) AS g{{i}}v"
        ok = f"(json_type({p}, ?) = 'integer' AND typeof(json_extract({p}, ?)) = 'integer')"
        value = f"json_extract({p}, ?)"
        bad = "(CASE WHEN typeof(e.event_time) = 'integer' THEN 0 ELSE 1 END)"
        if sums or m.group_by:
            bad += f" + (CASE WHEN {p} IS NULL THEN 1 ELSE 0 END)"

        def key(name: str) -> str:
            return f'$."{name}"'

    params: list[Any] = [w, w, w]
    cols = ""
    for i, name in enumerate(m.group_by):
        cols += ", " + group.format(i=i)
        params += [key(name), key(name)]
    total = "0"
    if sums:
        assert m.property is not None
        v = key(m.property)
        total = f"SUM(CASE WHEN {ok} THEN {value} END)"
        bad += f" + (CASE WHEN {ok} THEN 0 ELSE 1 END)"
        params += [v, v, v, v, v]
    if not postgres:
        # A key given twice: SQLite reads the first, the decoder the last (as does
        # PostgreSQL's jsonb), so such a row is left to the reference path.
        for name in [*m.group_by, *([m.property] if sums and m.property else [])]:
            bad += f" + (CASE WHEN json_type(json_remove({p}, ?), ?) IS NULL THEN 0 ELSE 1 END)"
            params += [key(name), key(name)]
    groups = "".join(f", g{i}t, g{i}v" for i in range(len(m.group_by)))
    sql = (
        f"SELECT e.customer_id, {ws} AS ws{cols}, COUNT(*), {total}, SUM({bad}) "
        "FROM events e WHERE e.event_type = ? AND e.customer_id IN ("
        + ", ".join("?" for _ in customers)
        + ")"
        + (" AND e.event_time >= ? AND e.event_time < ?" if lo is not None else "")
        + f" GROUP BY e.customer_id, ws{groups}"
    )
    params += [m.event_type, *customers]
    if lo is not None:
        params += [lo, hi]
    return sql, tuple(params)


def _count_text(n: int) -> str:
    got = _COUNT_TEXT.get(n)
    if got is None:
        if len(_COUNT_TEXT) > 100_000:
            _COUNT_TEXT.clear()
        got = _COUNT_TEXT[n] = to_json(CountState(n))
    return got


def _sum_text(total: int | Decimal) -> str:
    return f'{_SUM_PREFIX}{total if type(total) is int else fmt(total)}"}}'


def _fast_fresh(
    conn: Connection,
    m: Meter,
    customers: Sequence[str],
    lo: int | None,
    hi: int | None,
    bad: set[str],
) -> dict[tuple[str, str, int], list[Any]]:
    """The recomputed windows (and day rollups) of the customers as [events, sum],
    keyed as `_stored_windows` keys them (without the meter code)."""
    postgres = conn.dialect.name == "postgresql"
    sql, params = _fast_raw_sql(m, postgres, customers, lo, hi)
    rows = driver.raw_rows(conn, sql, params)
    sums = m.aggregation is Aggregation.SUM
    ngroups = len(m.group_by)
    text_kind = "string" if postgres else "text"
    acc: dict[tuple[str, str, int], list[Any]] = {}
    rollup = has_day_rollup(m.window_us)
    plain = encode_dimensions(())
    for row in rows:
        customer = row[0]
        if row[-1] or type(customer) is not str:  # a row the database cannot read exactly
            bad.add(str(customer))
            continue
        if ngroups:
            dims_list: list[str | None] = []
            for i in range(ngroups):
                kind, value = row[2 + 2 * i], row[3 + 2 * i]
                if kind == text_kind and isinstance(value, str):
                    dims_list.append(value)
                elif kind is None or kind == "null":
                    dims_list.append(None)
                else:  # a number, boolean or object as group value: the reference path
                    bad.add(customer)
                    break
            else:
                dims = encode_dimensions(tuple(dims_list))
        else:
            dims = plain
        n, total, start = row[-3], row[-2], row[1]
        if type(start) is not int or (sums and not isinstance(total, int | Decimal)):
            bad.add(customer)
            continue
        key = (customer, dims, start)
        if key in acc:  # two raw groups in one window (a null and a missing group value)
            bad.add(customer)
        acc[key] = [n, total]
        if rollup:
            dkey = (customer, "day:" + dims, start - start % US_PER_DAY)
            d = acc.get(dkey)
            if d is None:
                acc[dkey] = [n, total]
            else:
                d[0] += n
                d[1] += total
    return acc


def _fast_stored(
    conn: Connection, m: Meter, customers: Sequence[str], lo: int, hi: int, bad: set[str]
) -> dict[tuple[str, str, int], tuple[int, str]]:
    """The index rows of the customers' buckets in [lo, hi), folded to the present,
    as (events, state text): a single row as it is stored, several ``add`` rows of
    canonical integer states summed, anything else folded with `fold_rows`."""
    grains = [Grain.WINDOW, *([Grain.DAY] if has_day_rollup(m.window_us) else [])]
    # One SELECT per grain, so each probes the primary key down to the bucket range
    # (customer, meter, grain, bucket_start); with the grains OR-ed in one WHERE,
    # SQLite probed only (customer, meter) and read every bucket the customers
    # ever had: ~4 of the 6 s of an incremental run at 10M events.
    one = (
        "SELECT customer_id, CASE WHEN grain = 'w' THEN dimensions ELSE 'day:' || dimensions "
        "END, bucket_start, kind, state, events, seq, first_seq FROM usage_index "
        "WHERE meter_code = ? AND customer_id IN ("
        + ", ".join("?" for _ in customers)
        + ") AND grain = ? AND bucket_start >= ? AND bucket_start < ?"
    )
    sql = " UNION ALL ".join(one for _ in grains)
    params: list[Any] = []
    for g in grains:
        params += [m.code, *customers, str(g), lo, hi]
    out: dict[Any, Any] = {}
    multi: dict[Any, list[tuple[Any, ...]]] = {}
    for row in driver.raw_rows(conn, sql, tuple(params)):
        key = row[:3]
        if key in out:
            multi[key] = [out.pop(key), row]
        elif key in multi:
            multi[key].append(row)
        else:
            out[key] = row
    sums = m.aggregation is Aggregation.SUM
    folded: dict[tuple[str, str, int], tuple[int, str]] = {}
    for key, row in out.items():
        if row[3] not in _PLAIN_KINDS or type(row[4]) is not str or type(row[5]) is not int:
            multi[key] = [row]
        else:
            folded[key] = (row[5], row[4])
    for key, rows in multi.items():
        got = _fold_plain(rows, sums)
        if got is None:
            try:
                f = fold_rows(
                    m.aggregation,
                    [
                        IndexRow(
                            int(r[6]),
                            int(r[7]),
                            RowKind(str(r[3])),
                            from_json(str(r[4])),
                            int(r[5]),
                        )
                        for r in rows
                    ],
                )
                got = (f.events, to_json(f.state))
            except Exception:  # unreadable: the reference path names it
                bad.add(str(key[0]))
                continue
        folded[key] = got
    return folded


def _fold_plain(rows: list[tuple[Any, ...]], sums: bool) -> tuple[int, str] | None:
    """A bucket of ``add`` rows only, each in canonical text with an integer state:
    (events, text) of their sum without parsing; None when any row is otherwise."""
    events, total = 0, 0
    for r in rows:
        kind, state, n = r[3], r[4], r[5]
        if kind != "add" or not isinstance(state, str) or not isinstance(n, int):
            return None
        if sums:
            digits = state[len(_SUM_PREFIX) : -2]
            if not (
                state.startswith(_SUM_PREFIX)
                and state.endswith('"}')
                and digits.lstrip("-").isdigit()
                and state == _sum_text(int(digits))
            ):
                return None
            total += int(digits)
        elif state != _count_text(n):
            return None
        events += n
    return events, (_sum_text(total) if sums else _count_text(events))


def _fast_windows(
    conn: Connection, m: Meter, customers: Sequence[str], lo: int | None, hi: int | None
) -> dict[str, int]:
    """Series of ``m`` (customers; in [lo, hi) if given, else whole) found equal to
    the index, each with the number of windows and day rollups checked; the others
    are left out."""
    if not customers:
        return {}
    bad: set[str] = set()
    try:
        with conn.begin_nested():
            fresh = _fast_fresh(conn, m, customers, lo, hi, bad)
            stored = _fast_stored(
                conn, m, customers, -(2**62) if lo is None else lo, 2**62 if hi is None else hi, bad
            )
    except Exception:  # an SQL error (overflow, malformed JSON on PostgreSQL): reference path
        return {}
    empty = to_json(aggregate(m.aggregation, []))
    checked: dict[str, int] = {}
    sums = m.aggregation is Aggregation.SUM
    for key, (n, total) in fresh.items():
        got = stored.pop(key, None)
        if got is None or got[0] != n or got[1] != (_sum_text(total) if sums else _count_text(n)):
            bad.add(key[0])
        checked[key[0]] = checked.get(key[0], 0) + 1
    for key, got in stored.items():
        if got != (0, empty):
            bad.add(key[0])
    return {c: checked.get(c, 0) for c in customers if c not in bad}


def _batch_windows(
    conn: Connection, m: Meter, customers: Sequence[str], lo: int | None, hi: int | None
) -> dict[str, int]:
    """`_fast_windows` for the meters the database cannot aggregate exactly (min,
    max, latest, unique_count, non-integer sums): the reference recomputation and
    comparison, but with one read of events and one of the index for the whole
    batch of customers instead of two statements per customer. Used the same way:
    a series with any difference, or a batch that raises, goes the reference path."""
    if not customers:
        return {}
    sql = (
        "SELECT e.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, "
        "e.properties, e.content_hash FROM events e WHERE e.event_type = ? AND e.customer_id IN ("
        + ", ".join("?" for _ in customers)
        + ")"
        + (" AND e.event_time >= ? AND e.event_time < ?" if lo is not None else "")
        + " AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
        "AND r.event_id = e.event_id)"
    )
    params: list[Any] = [m.event_type, *customers, *([lo, hi] if lo is not None else [])]
    grains = [(Grain.WINDOW, -(2**62) if lo is None else lo, 2**62 if hi is None else hi)]
    if has_day_rollup(m.window_us):
        grains.append((Grain.DAY, grains[0][1], grains[0][2]))
    try:
        with conn.begin_nested():
            rows = driver.raw_rows(conn, sql, tuple(params))
            fresh_all = fold(
                {m.event_type: [m]},
                ((int(r[0]), Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])) for r in rows),
            )
            reads = usage_index.read_many(conn, customers, [m.code], grains, EVERY_ROW, whole=True)
            by_customer: dict[str, dict[WindowKey, WindowRow]] = {c: {} for c in customers}
            for key, row in _with_days(m, fresh_all).items():
                by_customer[key[1]][key] = row
            empty = to_json(aggregate(m.aggregation, []))
            out: dict[str, int] = {}
            for c in customers:
                problems: list[str] = []
                n = _compare_windows(by_customer[c], _keyed(m, reads[c]), empty, problems)
                if not problems:
                    out[c] = n
            return out
    except Exception:  # a row Python cannot read, an SQL error: the reference path names it
        return {}


def _retracted(conn: Connection) -> set[tuple[str, str]]:
    """(customer, event type) of every event a retraction row names, matched by key
    as the recomputation matches them: these series go the reference path."""
    return {
        (str(c), str(t))
        for c, t in conn.execute(
            text(
                # CROSS JOIN: SQLite keeps retractions as the outer loop (it would
                # otherwise walk every event to probe a nearly empty table).
                "SELECT DISTINCT e.customer_id, e.event_type FROM retractions r "
                "CROSS JOIN events e WHERE e.source = r.source AND e.event_id = r.event_id"
            )
        )
    }


def _bulk_windows(
    conn: Connection,
    m: Meter,
    customers: Sequence[str],
    lo: int | None,
    hi: int | None,
    retracted: set[tuple[str, str]],
) -> dict[str, int]:
    """Series found equal in bulk: by the database where it can (`_fast_windows`),
    the rest (a decimal, a retraction, ...) folded in batches (`_batch_windows`)."""
    got: dict[str, int] = {}
    if _fast_eligible(m):
        plain = [c for c in customers if (c, m.event_type) not in retracted]
        got = _fast_windows(conn, m, plain, lo, hi)
    rest = [c for c in customers if c not in got]
    if rest:
        got.update(_batch_windows(conn, m, rest, lo, hi))
    return got


def _fast_batches(items: Sequence[tuple[str, int]]) -> Iterator[list[str]]:
    """Customers in batches of at most FAST_CUSTOMERS and about FAST_EVENTS events."""
    batch: list[str] = []
    events = 0
    for customer, n in items:
        if batch and (len(batch) >= FAST_CUSTOMERS or events + n > FAST_EVENTS):
            yield batch
            batch, events = [], 0
        batch.append(customer)
        events += n
    if batch:
        yield batch


def _events(n: int) -> str:
    return f"{n:,} event" if n == 1 else f"{n:,} events"


def _instant_text(us: int) -> str:
    try:
        return format_us(us)
    except (ValueError, OverflowError):
        return f"{us} us"


def _bad_event_rows(
    conn: Connection, m: Meter, customer: str, lo: int | None, hi: int | None
) -> str:
    """Name the event rows a window recomputation cannot read."""
    sql = (
        "SELECT seq, source, event_id, event_time, properties FROM events "
        "WHERE event_type = :t AND customer_id = :c"
    )
    params: dict[str, Any] = {"t": m.event_type, "c": customer}
    if lo is not None and hi is not None:
        sql += " AND event_time >= :lo AND event_time < :hi"
        params |= {"lo": lo, "hi": hi}
    bad: list[str] = []
    for seq, source, event_id, event_time, properties in conn.execute(text(sql), params):
        try:
            props = decode_json(str(properties).encode())
            if not isinstance(props, dict):
                raise ValueError("properties is not a JSON object")
            value_of(m, props)
            dimensions(m, props)
            int(event_time)
        except Exception as exc:
            bad.append(f"events seq {seq} ({source}, {event_id}): {type(exc).__name__}: {exc}")
    return "unreadable rows: " + listing(bad, 5) if bad else "no unreadable row found"


def check_windows(
    conn: Connection,
    meters: list[Meter],
    usage: list[Series],
    tick: Progress,
    since: int = 0,
) -> Check:
    if since:
        return _check_windows_since(conn, meters, since, tick)
    problems: list[str] = []
    by_type: dict[str, list[Series]] = {}
    for s in usage:
        by_type.setdefault(s.event_type, []).append(s)
    work = [(m, s) for m in meters for s in by_type.get(m.event_type, [])]
    checked = 0
    seen: set[tuple[str, str]] = set()
    equal: dict[tuple[str, str], int] = {}
    retracted = _retracted(conn)
    for m in meters:
        small = [(s.customer, s.stored) for s in by_type.get(m.event_type, [])]
        for batch in _fast_batches([c for c in small if c[1] <= CHUNK_EVENTS]):
            for customer, n in _bulk_windows(conn, m, batch, None, None, retracted).items():
                equal[(m.code, customer)] = n
    for i, (m, s) in enumerate(work):
        tick("windows", i, len(work))
        seen.add((m.code, s.customer))
        fast = equal.get((m.code, s.customer))
        if fast is not None:  # equal in bulk (see `_fast_windows`)
            checked += fast
            continue
        empty = to_json(aggregate(m.aggregation, []))
        chunks = _chunks(m, s)
        for lo, hi in chunks:
            try:
                fresh = _with_days(m, _recompute(conn, m, s.customer, lo, hi))
                stored = _stored_windows(conn, m, s.customer, lo, hi)
                checked += _compare_windows(fresh, stored, empty, problems)
            except (MeterlineError, ValueError, TypeError, KeyError, ArithmeticError) as exc:
                # a corrupted row: name it, go on
                problems.append(
                    f"{m.code}/{s.customer}: cannot recompute ({type(exc).__name__}: {exc}); "
                    + _bad_event_rows(conn, m, s.customer, lo, hi)
                )
        if chunks[0][0] is not None:
            every = _stored_windows(conn, m, s.customer, None, None)
            lo_all, hi_all = chunks[0][0], chunks[-1][1]
            assert lo_all is not None and hi_all is not None
            outside = sum(
                1
                for (_, _, _, start), (_, n) in every.items()
                if n and not lo_all <= start < hi_all
            )
            if outside:
                problems.append(
                    f"{outside} windows of {m.code}/{s.customer} lie outside the customer's events"
                )
    tick("windows", len(work), len(work))
    by_code = {m.code: m for m in meters}
    for code, customer in conn.execute(
        text(
            "SELECT DISTINCT meter_code, customer_id FROM usage_index "
            "ORDER BY meter_code, customer_id"
        )
    ):
        if (str(code), str(customer)) in seen:
            continue
        meter = by_code.get(str(code))
        if meter is None:
            why = "an unknown meter"
            rows = usage_index.read(
                conn, str(customer), [str(code)], [(Grain.WINDOW, -(2**62), 2**62)], None
            ).rows
            counted = [_events_of(rs) for rs in rows.values()]
            n, events = len(counted), sum(counted)
        else:
            why = "no stored events"
            stored = _stored_windows(conn, meter, str(customer), None, None)
            counted = [c for (_, _, d, _), (_, c) in stored.items() if not d.startswith("day:")]
            n, events = len(counted), sum(counted)
        if events:
            problems.append(
                f"{n} windows of {code}/{customer} count {events} events but have {why}"
            )
    return _result(
        "window_aggregates",
        problems,
        f"{checked} windows of {len(work)} meter/customer series recomputed from raw events",
    )


# 3, 4, 6. Documents: reproduction, arithmetic, chain ---------------------------


@dataclass(frozen=True)
class DocSummary:
    """What the ledger checks need of a document (bodies are not all kept)."""

    seq: int
    number: str
    kind: Kind
    customer_id: str
    currency: str
    total: Decimal
    tax: Decimal
    credits_applied: Decimal
    revenue: dict[str, Decimal]
    issue: Entry | None


@dataclass
class Documents:
    summaries: list[DocSummary] = field(default_factory=list)
    status: dict[str, Status] = field(default_factory=dict)
    status_facts: list[tuple[int, str, str, int]] = field(default_factory=list)
    reproduce: list[str] = field(default_factory=list)
    arithmetic: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    rerate_candidates: list[str] = field(default_factory=list)
    heads: list[tuple[str, Any, Any]] = field(default_factory=list)
    checked: int = 0  # documents recomputed (all, or those issued after the checkpoint)
    carried: int = 0  # documents before the checkpoint, not read (their count carried)
    tip: str = GENESIS  # the last document's hash
    counters: dict[str, int] = field(default_factory=dict)  # documents per number prefix

    @property
    def total(self) -> int:
        return self.carried + len(self.summaries)

    def reproduce_ok(self) -> str:
        return f"{self.checked} documents reproduce their content hash at their cutoff"


def _load_documents(
    conn: Connection, tick: Progress, since: int = 0, carry: Carry | None = None
) -> Documents:
    """Documents after `since` are recomputed and their arithmetic checked; every
    document is read for the chain, numbering and ledger, or with a `carry` only those
    after `since` (the chain resumes from the carried tip and counters). A document
    that cannot be read is named and the run goes on."""
    out = Documents()
    read_from = since if carry is not None else 0
    for seq, number, status, at in conn.execute(
        text("SELECT seq, number, status, at FROM document_status ORDER BY seq")
    ):
        try:
            out.status[str(number)] = Status(str(status))
            out.status_facts.append((int(seq), str(number), str(status), int(at)))
        except (ValueError, TypeError) as exc:
            out.chain.append(f"document_status seq {seq} ({number}): unreadable: {exc}")
    rows = conn.execute(
        text(
            "SELECT seq, number, kind, customer_id, currency, total, corrects, cutoff_seq "
            "FROM documents WHERE seq > :s ORDER BY seq"
        ),
        {"s": read_from},
    ).all()
    previous = carry.tip if carry is not None else GENESIS
    counters: dict[str, int] = dict(carry.counters) if carry is not None else {}
    out.carried = carry.documents if carry is not None else 0
    from meterline.services.invoicing import RECOMPUTE_CHUNK
    from meterline.services.verification import recompute_many

    # Every document read with one statement; those in scope recomputed in batches
    # (`recompute_many`: shared reads; what it cannot do is recomputed one by one).
    read = {number: got for _, number, _, got in documents.read_all(conn, read_from)}
    ready: dict[str, Any] = {}
    for i, (seq, number, kind, customer, currency, total, corrects, cutoff) in enumerate(rows):
        tick("documents", i, len(rows))
        if i % RECOMPUTE_CHUNK == 0:
            ready = recompute_many(
                conn,
                [
                    d
                    for r in rows[i : i + RECOMPUTE_CHUNK]
                    if int(r[0]) > since and isinstance(d := read.get(str(r[1])), Issued)
                ],
            )
        preread = read.get(str(number))
        in_scope = int(seq) > since
        # A savepoint only where the check runs SQL (a recomputation, a row read
        # again): out of scope with the row at hand it is pure Python, and
        # thousands of savepoints would cost more than the check.
        guard = conn.begin_nested() if in_scope or preread is None else contextlib.nullcontext()
        try:
            with guard:
                previous = _check_document(
                    conn,
                    out,
                    int(seq),
                    str(number),
                    kind,
                    customer,
                    currency,
                    total,
                    corrects,
                    cutoff,
                    previous,
                    counters,
                    in_scope,
                    preread,
                    ready.get(str(number)),
                )
        except Exception as exc:  # an unreadable row: name it, keep the chain going
            out.reproduce.append(
                f"{number} (documents seq {seq}): unreadable: {type(exc).__name__}: {exc}"
            )
            row = conn.execute(
                text("SELECT document_hash FROM documents WHERE seq = :q"), {"q": seq}
            ).first()
            previous = str(row[0]) if row else previous
            prefix = str(number).partition("-")[0]
            counters[prefix] = counters.get(prefix, 0) + 1
    tick("documents", len(rows), len(rows))
    out.tip, out.counters = previous, counters
    for kind, last in conn.execute(text("SELECT kind, last FROM document_numbers")):
        issued = counters.get(Kind(str(kind)).prefix, 0)
        if int(last) != issued:
            out.chain.append(f"{kind} counter is at {last} but {issued} documents exist")
    return out


def _check_document(
    conn: Connection,
    out: Documents,
    seq: int,
    number: str,
    kind: Any,
    customer: Any,
    currency: Any,
    total: Any,
    corrects: Any,
    cutoff: Any,
    previous: str,
    counters: dict[str, int],
    in_scope: bool,
    preread: Issued | Exception | None = None,
    recomputed: Any = None,
) -> str:
    """Checks 3, 4 and 6 for one document; returns its hash (the next one's previous).
    Recomputation and arithmetic only for documents in scope. ``preread``: the document
    as `documents.read_all` read it; ``recomputed``: its body from `recompute_many`."""
    from meterline.services.verification import recompute as recompute_body

    if isinstance(preread, Exception):
        raise preread
    doc = preread if preread is not None else documents.get(conn, number)
    body = doc.body
    out.heads.append((number, body.cutoff_seq, body.tree_head or None))
    if in_scope:
        out.checked += 1
        # 3. reproduction (services/verification.py's recomputation).
        if body_hash(body) != doc.content_hash:
            out.reproduce.append(f"{number}: stored body does not match its content hash")
        else:
            try:
                if isinstance(recomputed, MeterlineError):
                    raise recomputed
                again = body_hash(
                    recomputed if isinstance(recomputed, typed.Body) else recompute_body(conn, doc)
                )
                if again != doc.content_hash:
                    out.reproduce.append(
                        f"{number}: recomputed at cutoff seq {body.cutoff_seq} the content "
                        f"hash is {again[:12]}..., not {doc.content_hash[:12]}..."
                    )
            except MeterlineError as exc:
                out.reproduce.append(f"{number}: cannot recompute: {exc}")
        # 4. arithmetic, and the indexed columns against the body.
        columns = {
            "kind": (kind, body.kind),
            "customer_id": (customer, body.customer_id),
            "currency": (currency, body.currency),
            "total": (total, body.text(body.total)),
            "corrects": (corrects, body.corrects),
            "cutoff_seq": (cutoff, body.cutoff_seq),
        }
        for name, (value, says) in columns.items():
            if says != value:
                out.arithmetic.append(
                    f"{number}: column {name} is {value!r} but the document says {says!r}"
                )
        out.arithmetic.extend(arithmetic(str(number), body))
    # 6. chain and numbering.
    envelope = doc.envelope()
    if doc.previous_hash != previous:
        out.chain.append(f"{number}: previous_hash does not link to the document before it")
    if chain_hash(envelope) != doc.document_hash:
        out.chain.append(f"{number}: document_hash does not match its envelope")
    prefix, _, n = str(number).partition("-")
    counters[prefix] = counters.get(prefix, 0) + 1
    if not n.isdigit() or int(n) != counters[prefix]:
        out.chain.append(f"{number}: expected {prefix}-{counters[prefix]:06d} (gap or reorder)")
    out.summaries.append(_summary(seq, doc, out.arithmetic))
    if doc.kind == Kind.INVOICE and out.status.get(doc.number) != Status.VOID:
        out.rerate_candidates.append(doc.number)
    return doc.document_hash


def _summary(seq: int, doc: Issued, problems: list[str]) -> DocSummary:
    body = doc.body
    entry: Entry | None = None
    revenue: dict[str, Decimal] = {}
    try:
        revenue = revenue_accounts(body)  # revenue:<charge> and discounts:<code>
        entry = issue_entry(doc.number, body)
    except (ValueError, KeyError, ArithmeticError) as exc:
        problems.append(f"{doc.number}: no balanced posting can be made: {exc}")
    return DocSummary(
        seq,
        doc.number,
        doc.kind,
        body.customer_id,
        body.currency,
        body.total,
        body.tax,
        body.credits_applied,
        revenue,
        entry,
    )


def _dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else ZERO
    except ArithmeticError:
        return ZERO


def arithmetic(number: str, body: typed.Body) -> list[str]:
    """Lines -> subtotal -> tax -> total, each on the currency's minor unit."""
    out: list[str] = []
    try:
        currency = Currency(body.currency)
    except MeterlineError as exc:
        return [f"{number}: malformed amounts ({exc})"]
    money = {
        "subtotal": body.subtotal,
        "tax": body.tax,
        "credits_applied": body.credits_applied,
        "total": body.total,
    }
    lines = [line.amount for line in body.lines]
    credits = [c.amount for c in body.credits]
    for name, value in [*money.items(), *((f"line {i}", a) for i, a in enumerate(lines, 1))]:
        if value != value.quantize(currency.quantum):
            out.append(f"{number}: {name} {value} is not on the {currency.code} minor unit")
    if exact_sum(lines) != money["subtotal"]:
        out.append(f"{number}: lines sum to {exact_sum(lines)} but subtotal is {money['subtotal']}")
    if exact_sum(credits) != money["credits_applied"]:
        out.append(
            f"{number}: credits sum to {exact_sum(credits)} but credits_applied is "
            f"{money['credits_applied']}"
        )
    expected_total = money["subtotal"] + money["tax"] - money["credits_applied"]
    if expected_total != money["total"]:
        out.append(
            f"{number}: subtotal + tax - credits = {expected_total} but total is {money['total']}"
        )
    kind = body.kind
    if kind == Kind.INVOICE and body.role is typed.UNSET:  # interim/final: tax is a delta
        rate = body.tax_rate
        allowed = {round_money(money["subtotal"] * rate, currency, r) for r in Rounding}
        if money["tax"] not in allowed:
            out.append(
                f"{number}: tax is {money['tax']} but {money['subtotal']} x {rate} rounds to "
                f"{min(allowed)}"
            )
        if (
            money["credits_applied"] < 0
            or money["credits_applied"] > money["subtotal"] + money["tax"]
        ):
            out.append(f"{number}: credits_applied {money['credits_applied']} exceeds what is due")
    elif kind == Kind.INVOICE:  # progressive (interim, final): tax is a delta as in §8
        if money["credits_applied"] < 0 or (
            money["credits_applied"] > max(money["subtotal"] + money["tax"], ZERO)
        ):
            out.append(f"{number}: credits_applied {money['credits_applied']} exceeds what is due")
    elif kind == Kind.DEBIT_NOTE and money["total"] <= 0:
        out.append(f"{number}: a debit note with total {money['total']}")
    elif kind == Kind.CREDIT_NOTE and money["total"] > 0:
        out.append(f"{number}: a credit note with total {money['total']}")
    return out


# 5. Ledger --------------------------------------------------------------------


def _line_set(entry: Entry) -> list[tuple[str, Decimal, Decimal]]:
    return sorted((ln.account, ln.debit, ln.credit) for ln in entry.lines)


def _entry_text(e: Entry) -> str:
    return ", ".join(
        f"{'Dr' if ln.debit else 'Cr'} {ln.account} {ln.debit or ln.credit}" for ln in e.lines
    )


def check_ledger(
    conn: Connection,
    docs: Documents,
    tick: Progress,
    scope: Scope | None = None,
    carry: Carry | None = None,
) -> list[Check]:
    """Checks 5. With a carried state (`scope.carry`) only entries and facts after the
    checkpoint are read; what the documents say each account must hold is the carried
    totals plus what the new documents, status changes and credit facts move."""
    tick("ledger", 0, 4)
    held = scope.carry if scope is not None else None
    since = scope.since if held is not None and scope is not None else 0
    after = {"s": since}
    # Balanced: in SQL, over integer minor units.
    unbalanced = [
        f"entry {seq} ({doc}): debits {d} != credits {c} (minor units)"
        for seq, doc, d, c in conn.execute(
            text(
                "SELECT e.seq, e.document, COALESCE(SUM(l.debit_minor), 0), "
                "COALESCE(SUM(l.credit_minor), 0) FROM journal_entries e "
                "LEFT JOIN journal_lines l ON l.entry_seq = e.seq WHERE e.seq > :s "
                "GROUP BY e.seq, e.document "
                "HAVING COALESCE(SUM(l.debit_minor), 0) <> COALESCE(SUM(l.credit_minor), 0) "
                "ORDER BY e.seq"
            ),
            after,
        )
    ]
    unbalanced += [
        f"entry {seq} line {n}: {problem}"
        for seq, n, problem in conn.execute(
            text(
                "SELECT l.entry_seq, l.line_no, CASE WHEN e.seq IS NULL THEN 'belongs to no entry' "
                "WHEN l.currency <> e.currency THEN 'in ' || l.currency || ', entry in ' || e.currency "
                "ELSE 'must be one positive debit or one positive credit' END "
                "FROM journal_lines l LEFT JOIN journal_entries e ON e.seq = l.entry_seq "
                "WHERE l.entry_seq > :s AND (e.seq IS NULL OR l.currency <> e.currency "
                "OR l.debit_minor < 0 OR l.credit_minor < 0 "
                "OR (l.debit_minor > 0) = (l.credit_minor > 0)) "
                "ORDER BY l.entry_seq, l.line_no"
            ),
            after,
        )
    ]
    accounts = [
        str(r[0])
        for r in conn.execute(
            text("SELECT DISTINCT account FROM journal_lines WHERE entry_seq > :s"), after
        )
    ]
    for account in sorted(accounts):
        try:
            account_type(account)
        except ValueError:
            unbalanced.append(f"account {account!r} is not in the chart of accounts")
    entries_n = int(conn.execute(text("SELECT COUNT(*) FROM journal_entries")).scalar_one())
    checks = [
        _result(
            "ledger_balanced",
            unbalanced,
            f"{entries_n} journal entries, each balanced in its own currency",
        )
    ]
    tick("ledger", 1, 4)
    # Postings: each fact's entry is exactly its posting rule's.
    expected: dict[int, Entry | None] = {d.seq: d.issue for d in docs.summaries}
    by_number = {d.number: d for d in docs.summaries}
    bodies: dict[str, typed.Body] = {}
    posting_problems: list[str] = []
    older: dict[str, DocSummary] = {}  # documents before the checkpoint whose status moved
    for seq, number, status, _ in docs.status_facts:
        if seq <= since:
            continue
        if number not in by_number and number not in older:
            if held is None:
                continue
            try:  # a document before the checkpoint: read it alone
                doc = documents.get(conn, number)
            except Exception as exc:
                posting_problems.append(f"{number} (status at seq {seq}): unreadable ({exc})")
                continue
            bodies[number] = doc.body
            older[number] = _summary(_doc_seq(conn, number), doc, posting_problems)
        if number not in bodies:
            bodies[number] = documents.get(conn, number).body
        try:
            expected[seq] = status_entry(number, status, bodies[number])
        except (ValueError, KeyError, ArithmeticError):
            expected[seq] = None
    credit_expected = {
        q: e for q, e in _credit_entries(conn, posting_problems).items() if q > since
    }
    expected.update(credit_expected)
    stored_seqs: set[int] = set()
    if held is None:
        stored_entries: Iterator[journal.StoredEntry] = journal.entries(conn)
    else:
        new = int(
            conn.execute(
                text("SELECT COUNT(*) FROM journal_entries WHERE seq > :s"), after
            ).scalar_one()
        )
        stored_entries = journal.entries(conn, limit=new) if new else iter(())
    for stored in stored_entries:
        stored_seqs.add(stored.seq)
        want = expected.get(stored.seq)
        got = stored.entry
        if stored.seq not in expected:
            posting_problems.append(f"entry {stored.seq} ({got.document}) has no business fact")
        elif want is None:
            posting_problems.append(
                f"entry {stored.seq} ({got.document}) posted for a fact that moves no money"
            )
        elif (got.kind, got.document, got.customer_id, got.currency) != (
            want.kind,
            want.document,
            want.customer_id,
            want.currency,
        ) or _line_set(got) != _line_set(want):
            posting_problems.append(
                f"entry {stored.seq} ({got.kind} {got.document}): posted [{_entry_text(got)}], "
                f"the rule gives [{_entry_text(want)}]"
            )
    for seq, want in sorted(expected.items()):
        if want is not None and seq not in stored_seqs:
            posting_problems.append(f"{want.document}: {want.kind} at seq {seq} was never posted")
    checks.append(
        _result(
            "ledger_postings",
            posting_problems,
            f"{len(stored_seqs) if held is None else entries_n} entries match the posting "
            "rules of their documents and payments",
        )
    )
    tick("ledger", 2, 4)
    balances = _balances(conn)
    # Receivable per customer == its open documents (issued, not paid, not void).
    open_docs: Totals = dict(held.receivable) if held is not None else {}
    owed: Totals = dict(held.owed) if held is not None else {}
    for d in docs.summaries:
        if docs.status.get(d.number, Status.ISSUED) == Status.ISSUED:
            key = (f"receivable:{d.customer_id}", d.currency)
            open_docs[key] = open_docs.get(key, ZERO) + d.total
    then = _statuses_at(docs, since) if older else {}
    for number, d in older.items():  # status moved since the checkpoint: move its share
        _expect(d, then.get(number, Status.ISSUED), open_docs, owed, -1)
        _expect(d, docs.status.get(number, Status.ISSUED), open_docs, owed, 1)
    receivable = {k: v for k, v in balances.items() if account_class(k[0]) == "receivable"}
    checks.append(
        _compare_balances(
            "ledger_receivable",
            receivable,
            open_docs,
            "open documents",
            f"receivable of {len(receivable)} customer account(s) equals their open documents",
        )
    )
    tick("ledger", 3, 4)
    # Revenue per charge, tax, credit used and cash against the documents.

    def add(account: str, currency: str, amount: Decimal) -> None:
        owed[(account, currency)] = owed.get((account, currency), ZERO) + amount

    for d in docs.summaries:
        status = docs.status.get(d.number, Status.ISSUED)
        if status == Status.VOID:
            continue
        for account, amount in d.revenue.items():
            add(account, d.currency, -amount)
        add(TAX_PAYABLE, d.currency, -d.tax)
        add(f"customer_credit:{d.customer_id}", d.currency, d.credits_applied)
        if status == Status.PAID:
            add(CASH, d.currency, d.total)
    for credit in credit_expected.values():  # grants, voids and breakage
        if credit is not None:
            for ln in credit.lines:
                add(ln.account, credit.currency, ln.signed)
    others = {k: v for k, v in balances.items() if account_class(k[0]) != "receivable"}
    checks.append(
        _compare_balances(
            "ledger_revenue",
            others,
            owed,
            "documents (non-void lines, tax, credits; paid totals)",
            "revenue per charge equals issued lines net of corrections; tax payable, credit "
            "used and cash equal the documents",
        )
    )
    if carry is not None:
        carry.receivable, carry.owed = open_docs, owed
    tick("ledger", 4, 4)
    return checks


def _doc_seq(conn: Connection, number: str) -> int:
    return int(
        conn.execute(
            text("SELECT seq FROM documents WHERE number = :n"), {"n": number}
        ).scalar_one()
    )


def _statuses_at(docs: Documents, seq: int) -> dict[str, Status]:
    """Each document's status as known at `seq` (issued until a status fact says else)."""
    out: dict[str, Status] = {}
    for q, n, st, _ in docs.status_facts:  # in seq order
        if q > seq:
            break
        out[n] = Status(st)
    return out


def _expect(d: DocSummary, status: Status, receivable: Totals, owed: Totals, sign: int) -> None:
    """Add (sign 1) or take back (-1) what one document in `status` says the receivable
    and the other accounts hold: the same sums as the full run's, one document at a time."""

    def add(totals: Totals, account: str, amount: Decimal) -> None:
        key = (account, d.currency)
        totals[key] = totals.get(key, ZERO) + sign * amount

    if status == Status.ISSUED:
        add(receivable, f"receivable:{d.customer_id}", d.total)
    if status == Status.VOID:
        return
    for account, amount in d.revenue.items():
        add(owed, account, -amount)
    add(owed, TAX_PAYABLE, -d.tax)
    add(owed, f"customer_credit:{d.customer_id}", d.credits_applied)
    if status == Status.PAID:
        add(owed, CASH, d.total)


def _credit_entries(conn: Connection, problems: list[str]) -> dict[int, Entry | None]:
    """The entry each credit fact's row gives (DESIGN §13), and what is wrong with the
    rows themselves: a definition that does not match its content hash or amount
    (a tampered grant), or a grant that has released more than it held."""
    out: dict[int, Entry | None] = {}
    for f in credit_facts.facts(conn):
        label = f"credit fact {f.seq} ({f.action} {f.grant_id})"
        try:
            if content_hash(f.definition) != f.content_hash:
                problems.append(f"{label}: its definition does not match its content hash")
            if f.action == GRANT and Decimal(f.definition["amount"]) != f.amount:
                problems.append(
                    f"{label}: amount {f.amount} but its definition grants {f.definition['amount']}"
                )
            out[f.seq] = credit_entry(
                f.action,
                f.grant_id,
                f.customer_id,
                str(f.definition["currency"]),
                f.amount,
                GrantKind(f.definition["kind"]),
            )
        except (ValueError, KeyError, ArithmeticError) as exc:
            problems.append(f"{label}: unreadable ({exc})")
            out[f.seq] = None
    for customer_id in credit_facts.customers_with_grants(conn):
        k = int(conn.execute(text("SELECT seq FROM knowledge WHERE id = 1")).scalar_one())
        try:
            states = credit_facts.states(conn, load_customer(conn, customer_id, k), k)
        except (MeterlineError, ValueError, KeyError, ArithmeticError) as exc:
            problems.append(f"credit grants of {customer_id}: unreadable ({exc})")
            continue
        for st in states:
            if st.remaining < 0:
                problems.append(
                    f"credit grant {st.grant.id} of {customer_id}: {st.grant.amount} granted "
                    f"but {st.used} used, {st.expired} expired and {st.voided} voided"
                )
    return out


def _balances(conn: Connection) -> dict[tuple[str, str], Decimal]:
    """Signed balance (debit positive) per account and currency, summed in SQL."""
    out = {}
    for account, currency, debit, credit in journal.balances(conn):
        cur = Currency(currency)
        out[(account, currency)] = Decimal(debit - credit).scaleb(-cur.minor_digits)
    return out


def _compare_balances(
    name: str,
    ledger: dict[tuple[str, str], Decimal],
    documents_: dict[tuple[str, str], Decimal],
    what: str,
    fine: str,
) -> Check:
    problems = []
    for key in sorted(set(ledger) | set(documents_)):
        a, b = ledger.get(key, ZERO), documents_.get(key, ZERO)
        if a != b:
            problems.append(
                f"{key[0]} ({key[1]}): ledger balance {_signed(a)}, {what} {_signed(b)}"
            )
    return _result(name, problems, fine)


def _signed(amount: Decimal) -> str:
    return f"Dr {amount}" if amount >= 0 else f"Cr {-amount}"


# 7. Unbilled usage (warnings) ---------------------------------------------------


# The first instant every timezone can place in a calendar month (year 1, day 2).
CALENDAR_START = -62135510400000000


def unbilled_usage(
    conn: Connection, meters: list[Meter], usage: list[Series], docs: Documents, since: int = 0
) -> list[UnbilledWarning]:
    """Warnings (check 7); with `since`, about the events stored after it."""
    warnings: list[UnbilledWarning] = []
    if since:  # only the customers the new events name (an unknown one is left out)
        named = load_customers_by_id(
            conn, sorted({s.customer for s in usage}), sequence.current(conn)
        )
        for got in named.values():
            if isinstance(got, MeterlineError) and got.code != ErrorCode.UNKNOWN_CUSTOMER:
                raise got
        customers = {c.id: c for c in named.values() if not isinstance(c, MeterlineError)}
    else:
        customers = {c.id: c for c in load_customers(conn)}
    metered = {m.event_type for m in meters}

    unknown: dict[str, int] = {}
    unmetered: dict[str, int] = {}
    for s in usage:
        if s.events <= 0:
            continue
        if s.customer not in customers:
            unknown[s.customer] = unknown.get(s.customer, 0) + s.events
        if s.event_type not in metered:
            unmetered[s.event_type] = unmetered.get(s.event_type, 0) + s.events
    if unknown:
        warnings.append(
            UnbilledWarning(
                "unknown_customers",
                sum(unknown.values()),
                f"{sum(unknown.values())} events for {len(unknown)} unknown customer(s): "
                + listing([f"{c} ({_events(n)})" for c, n in sorted(unknown.items())]),
            )
        )
    if unmetered:
        warnings.append(
            UnbilledWarning(
                "unmetered_event_types",
                sum(unmetered.values()),
                f"{sum(unmetered.values())} events of {len(unmetered)} type(s) no meter reads: "
                + listing([f"{t} ({_events(n)})" for t, n in sorted(unmetered.items())]),
            )
        )

    uncovered: list[str] = []
    uncovered_events = 0
    spans: dict[str, tuple[int, int, list[str]]] = {}
    for s in usage:
        if s.customer in customers and s.event_type in metered and s.events > 0:
            lo, hi, types = spans.get(s.customer, (s.first, s.last + 1, []))
            spans[s.customer] = (min(lo, s.first), max(hi, s.last + 1), [*types, s.event_type])
    count_sql = text(
        "SELECT COUNT(*) FROM events e WHERE e.customer_id = :c AND e.event_type IN :types "
        "AND e.event_time >= :lo AND e.event_time < :hi AND NOT EXISTS (SELECT 1 FROM "
        "retractions r WHERE r.source = e.source AND r.event_id = e.event_id)"
    ).bindparams(bindparam("types", expanding=True))
    for cid, (lo, hi, types) in sorted(spans.items()):
        customer = customers[cid]
        if lo < CALENDAR_START:
            uncovered.append(
                f"{cid}: events before 0001-01-02T00:00:00Z ({_instant_text(lo)}) "
                "fall in no billing month"
            )
            lo = min(hi, CALENDAR_START)
        try:
            # The customer's own billing periods (its first subscription's cycle: week,
            # quarter, anniversary, ...): a gap belongs to no subscription, and one cycle
            # tiles time once, so every uncovered event is counted once.
            periods = customer.cycles()[0].periods_overlapping(lo, hi)
        except (OverflowError, ValueError):
            # An instant at the edge of the calendar (before year 1 in the customer's
            # timezone): no billing period holds it; say so rather than stop.
            uncovered.append(
                f"{cid}: events from {_instant_text(lo)} to {_instant_text(hi - 1)} fall "
                f"outside the calendar in {customer.timezone}"
            )
            periods = []
        for period in periods:
            gaps = _uncovered(
                period.start, period.end, customer.subscriptions_in(period.start, period.end)
            )
            n = 0
            for a, b in gaps:
                n += int(
                    conn.execute(
                        count_sql, {"c": cid, "types": sorted(types), "lo": a, "hi": b}
                    ).scalar_one()
                )
            if n:
                uncovered_events += n
                uncovered.append(f"{cid} {period.label} ({_events(n)})")
    if uncovered:
        warnings.append(
            UnbilledWarning(
                "no_subscription",
                uncovered_events,
                f"{uncovered_events} metered events in {len(uncovered)} customer-period(s) "
                "outside any subscription: " + listing(uncovered),
            )
        )

    unreadable = _unreadable(conn, meters, since)
    if unreadable:
        warnings.append(
            UnbilledWarning(
                "unreadable_events",
                len(unreadable),
                f"{len(unreadable)} event(s) stored before their meter existed that it cannot "
                "read (missing or non-numeric property), not billed: " + listing(unreadable),
            )
        )

    pending = _pending_rerates(conn, docs)
    if pending:
        warnings.append(
            UnbilledWarning(
                "pending_rerate",
                len(pending),
                f"{len(pending)} issued invoice(s) marked for re-rating and not yet re-rated: "
                + listing(pending),
            )
        )
    return warnings


def _unreadable(conn: Connection, meters: list[Meter], since: int = 0) -> list[str]:
    """Events a meter skips: ingestion quarantines such events once the meter exists
    (INVALID_PROPERTY), so only events stored before the meter can be unreadable."""
    recorded = {
        str(code): int(seq) for code, seq in conn.execute(text("SELECT code, seq FROM meters"))
    }
    sql = text(
        "SELECT e.source, e.event_id, e.properties FROM events e WHERE e.event_type = :t "
        "AND e.seq < :k AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
        "AND r.event_id = e.event_id) ORDER BY e.seq"
    )
    out: list[str] = []
    for m in meters:
        if m.property is None and not m.group_by:
            continue
        if recorded.get(m.code, 0) <= since:
            continue  # its events were looked at by the run that covered the meter
        rows = conn.execute(sql, {"t": m.event_type, "k": recorded.get(m.code, 0)})
        for source, event_id, properties in rows:
            try:
                props = decode_json(str(properties).encode())
                value_of(m, props)
                dimensions(m, props)
            except MeterlineError as exc:
                out.append(f"({source}, {event_id}) for {m.code}: {exc.message}")
            except Exception as exc:  # a corrupted row: the merkle_log check names it too
                out.append(f"({source}, {event_id}) for {m.code}: unreadable properties ({exc})")
    return out


def _uncovered(lo: int, hi: int, subs: list[Any]) -> list[tuple[int, int]]:
    """Parts of [lo, hi) no subscription covers."""
    out, at = [], lo
    for _, (a, b) in sorted(subs, key=lambda p: p[1]):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < hi:
        out.append((at, hi))
    return out


def _pending_rerates(conn: Connection, docs: Documents) -> list[str]:
    """Invoices with a re-rating mark after their last billing whose re-rating would
    issue a correction (a mark that changes nothing is not pending)."""
    from meterline.services.corrections import correction_body

    notes: dict[str, list[Issued]] = {}
    candidates = docs.rerate_candidates
    customer_of = {d.number: d.customer_id for d in docs.summaries}
    cutoff_of: dict[str, Any] = {number: cutoff for number, cutoff, _ in docs.heads}
    if docs.carried:
        # Documents before the checkpoint were not read: their columns (checked against
        # their bodies by the run that covered them) say enough; a note is read only
        # for an invoice that is re-rated here.
        note_numbers: dict[str, list[str]] = {}
        candidates = []
        for number, kind, customer, corrects, cutoff in conn.execute(
            text(
                "SELECT number, kind, customer_id, corrects, cutoff_seq FROM documents ORDER BY seq"
            )
        ):
            if docs.status.get(str(number)) == Status.VOID:
                continue
            if str(kind) == Kind.INVOICE:
                candidates.append(str(number))
                customer_of[str(number)], cutoff_of[str(number)] = str(customer), cutoff
            else:
                note_numbers.setdefault(str(corrects), []).append(str(number))
    else:
        for d in docs.summaries:
            if d.kind != Kind.INVOICE and docs.status.get(d.number) != Status.VOID:
                doc = documents.get(conn, d.number)
                notes.setdefault(str(doc.body.corrects), []).append(doc)
    k = int(conn.execute(text("SELECT seq FROM knowledge WHERE id = 1")).scalar_one())
    # An invoice needs a look only if its customer has a mark after the invoice's own
    # cutoff (the query below asks for marks after an even later one): most have none.
    latest_mark = {
        str(c): int(q)
        for c, q in conn.execute(
            text("SELECT customer_id, MAX(seq) FROM rerate_marks GROUP BY customer_id")
        )
    }
    out = []
    for number in candidates:
        latest = latest_mark.get(customer_of.get(number, ""))
        own_cutoff = cutoff_of.get(number)
        if latest is None or (isinstance(own_cutoff, int) and latest <= own_cutoff):
            continue
        try:
            invoice = documents.get(conn, number)
        except Exception:  # unreadable: named by the run that reads it (as `--full`)
            continue
        body = invoice.body
        if docs.carried:
            notes[number] = [documents.get(conn, n) for n in note_numbers.get(number, [])]
        billed = [invoice, *notes.get(invoice.number, [])]
        cutoff = max(d.body.cutoff_seq for d in billed)
        mark = conn.execute(
            text(
                "SELECT MAX(seq), COUNT(*) FROM rerate_marks WHERE customer_id = :c AND seq > :k "
                "AND from_us < :hi AND to_us > :lo"
            ),
            {
                "c": body.customer_id,
                "k": cutoff,
                "lo": documents.instant(body.period.start),
                "hi": documents.instant(body.period.end),
            },
        ).one()
        if not int(mark[1]):
            continue
        try:
            delta = correction_body(conn, invoice, notes.get(invoice.number, []), k)
        except MeterlineError as exc:
            out.append(f"{invoice.number} ({int(mark[1])} marks): cannot re-rate: {exc}")
            continue
        if delta is not None:
            out.append(
                f"{invoice.number} {body.customer_id} {body.period.label}: "
                f"{int(mark[1])} mark(s), a re-rating would issue {delta.kind} "
                f"{delta.text(delta.total)} {body.currency}"
            )
    return out


# 8. The Merkle log ------------------------------------------------------------

# Leaves before the checkpoint an incremental run re-verifies (a rotating slice).
SWEEP = 50_000


@dataclass
class TreeCheck:
    """What check 8 found, for the checkpoint a clean run records."""

    facts: int = 0  # facts found in the checked range
    root: str = ""
    sweep: tuple[int, int] | None = None  # seqs (lo, hi] re-verified before the checkpoint
    sweep_next: int = 0
    heads: int = 0  # document tree heads checked, carried ones included


def _prefetch_heads(nodes: merkle.Nodes, bodies: list[Any], k: int) -> None:
    """Read the stored nodes of every document's tree head at once (one statement per
    level) instead of per document; what cannot be read here is named per document
    by the loop that follows, exactly as without this."""
    sizes: set[int] = set()
    for body in bodies:
        with contextlib.suppress(Exception):
            size = int(body["tree_head"]["size"])
            if 0 < size <= k:
                sizes.add(size)
    ids = sorted({i for size in sizes for i in perfect_ranges(0, size)})
    with contextlib.suppress(merkle.MissingNodes):
        nodes(ids)


def check_merkle(conn: Connection, scope: Scope, k: int, tree: TreeCheck, tick: Progress) -> Check:
    """Leaves recomputed from the fact rows after `scope.since` (every fact's content
    hash, events included, metered or not) grow the tree from the stored frontier and
    must equal the stored nodes; every document's tree head (with a carried state:
    every one issued after the checkpoint) must be the root of today's tree at its size
    (a prefix: consistency); after a checkpoint, the checkpoint chain holds, the tree at
    the checkpoint still has its root and one slice of the facts before it is checked
    again (the sweep). A fact before the checkpoint altered, removed or inserted behind
    the system's back is found by that sweep in turn, and by `--full` at once."""
    problems: list[str] = []
    nodes = merkle.Nodes(conn)
    cp = scope.checkpoint
    if cp is not None:
        # The whole chain, or with a carried state the checkpoint it comes from (earlier
        # links were checked by the runs after them; `--full` does not resume from one).
        problems.extend(
            checkpoints.chain_problems(conn)
            if scope.carry is None
            else checkpoints.link_problems(conn, cp)
        )
        try:
            if merkle.head(conn, cp.seq, nodes).root.hex() != cp.root:
                problems.append(
                    f"the stored tree at the checkpoint's size {cp.seq} no longer has the "
                    "checkpoint's root: nodes were altered"
                )
        except merkle.MissingNodes as exc:
            problems.append(f"the tree at the checkpoint's size {cp.seq}: {exc}")
        if scope.carry is None:  # a checkpoint from before carried state: as then
            now = merkle.fact_count(conn, cp.seq)
            if now != cp.fact_count:
                problems.append(
                    f"{now} facts with seq <= {cp.seq}, but {cp.fact_count} at the "
                    "checkpoint: facts were deleted or inserted behind the system's back"
                )
            problems.extend(merkle.audit_small_kinds(conn, cp.seq).problems)
        # Facts before the checkpoint: one slice of the log per run in turn (a patrol
        # sweep over every kind of fact), so a fact altered in place is found within
        # ceil(K0 / SWEEP) incremental runs; `--full` finds it at once.
        lo = int(cp.state.get("sweep_next", 0))
        lo = lo if 0 <= lo < cp.seq else 0
        hi = min(cp.seq, lo + SWEEP)
        problems.extend(merkle.audit_range(conn, lo, hi, last=False).problems)
        tree.sweep = (lo, hi)
        tree.sweep_next = hi if hi < cp.seq else 0
    audit = merkle.audit_range(
        conn, scope.since, k, tick=lambda done: tick("merkle", done - scope.since, k - scope.since)
    )
    problems.extend(audit.problems)
    tree.facts = audit.facts
    beyond = merkle.fact_count_above(conn, k)
    if beyond:
        problems.append(f"{beyond} fact rows carry a seq above the knowledge counter {k}")
    heads = scope.carry.heads if scope.carry is not None else 0
    after = scope.since if scope.carry is not None else 0
    docs: list[tuple[Any, Any]] = []
    for number, body_text in driver.raw_rows(
        conn, "SELECT number, body FROM documents WHERE seq > ? ORDER BY seq", (after,)
    ):
        try:
            docs.append((number, decode_json(str(body_text).encode())))
        except Exception as exc:
            docs.append((number, exc))
    _prefetch_heads(nodes, [b for _, b in docs], k)
    for number, body in docs:
        if isinstance(body, Exception):
            problems.append(f"{number}: body is unreadable ({type(body).__name__})")
            continue
        try:
            head = body.get("tree_head") if isinstance(body, dict) else None
        except Exception as exc:
            problems.append(f"{number}: body is unreadable ({type(exc).__name__})")
            continue
        if head is None:
            continue  # issued before the Merkle log
        try:
            size, root = int(head["size"]), str(head["root"])
            if size != int(body.get("cutoff_seq")):
                problems.append(f"{number}: tree head size {size} is not its cutoff")
            elif size > k:
                problems.append(f"{number}: tree head size {size} is beyond the log ({k})")
            elif merkle.head(conn, size, nodes).root.hex() != root:
                problems.append(
                    f"{number}: its tree head at size {size} is not a prefix of today's tree "
                    "(a fact at or before its cutoff was changed, removed or inserted)"
                )
            heads += 1
        except merkle.MissingNodes as exc:
            problems.append(f"{number}: {exc}")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{number}: unreadable tree head ({exc})")
    tree.heads = heads
    try:
        tree.root = merkle.head(conn, k, nodes).root.hex()
    except merkle.MissingNodes as exc:
        problems.append(f"tree head at {k}: {exc}")
    scope_text = f"seq {scope.since + 1}..{k}" if scope.since else f"all {k} facts"
    if tree.sweep is not None:
        scope_text += (
            f" (and seq {tree.sweep[0] + 1}..{tree.sweep[1]}"
            + (" plus every non-event fact" if scope.carry is None else "")
            + " before the checkpoint)"
        )
    return _result(
        "merkle_log",
        problems,
        f"leaves of {scope_text} recomputed from the facts match the stored tree; "
        f"{heads} document tree heads are prefixes of today's tree (root {tree.root[:16]}...)",
    )
