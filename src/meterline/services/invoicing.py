"""Invoices: preview (a draft as known now) and issue (DESIGN §7).

Usage is read from the bitemporal usage index (`services/measuring.py`);
documents of format 1 (issued before it) are recomputed by the legacy
raw-event path, `measure_legacy`, so they keep verifying.

Issuing one customer-period is one transaction holding the knowledge-sequence
lock: the cutoff K is the last seq, the body is computed from the store as
known at K, and number, chain link and document seq are taken in the same
transaction. Recomputing the body at K later reproduces it byte for byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from msgspec import structs
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from meterline.billing import body as typed
from meterline.billing.credits import consume
from meterline.billing.customers import Customer, Subscription, parse_customer
from meterline.billing.document import (
    FORMAT,
    Issued,
    Kind,
    Status,
    body_hash,
    draft_dict,
)
from meterline.billing.finance import finance_details
from meterline.billing.invoice import SubscriptionUsage, assemble
from meterline.billing.periods import Period, label_year, period_for_label
from meterline.billing.usage import GroupUsage, Measurement, Row
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event, decode_json
from meterline.domain.merkle import perfect_ranges
from meterline.domain.timestamps import format_us
from meterline.gcpause import gc_paused
from meterline.metering import Meter, window_start
from meterline.metering.bitemporal import rollup_grain
from meterline.pricing.charges import Flat
from meterline.pricing.pricebook import PriceBook, Segment, split_segments
from meterline.services import measuring
from meterline.store import credit_facts, documents, merkle, sequence, usage_index
from meterline.store.customer_catalog import load_customer, load_customers, load_customers_by_id
from meterline.store.database import Store, is_transient
from meterline.store.facts import facts
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book
from meterline.store.seller_catalog import load_seller
from meterline.store.usage_index import Read
from meterline.store.window_index import current_watermark


def fetch_events(
    conn: Connection, customer: str, event_types: list[str], lo: int, hi: int, known_at: int
) -> Iterator[Event]:
    """The customer's events in [lo, hi) as known at K (retractions applied), in time order."""
    for _, ev in facts(conn).events(
        known_at, customer=customer, event_types=event_types, lo=lo, hi=hi, ordered=True
    ):
        yield ev


def usage_rows(
    conn: Connection,
    customer: str,
    event_types: list[str],
    lo: int,
    hi: int,
    known_at: int,
    after: int | None = None,
) -> list[Row]:
    """The rows `Measurement` reads (see `Facts.measure_rows`)."""
    return facts(conn).measure_rows(customer, event_types, lo, hi, known_at, after)


# --- measured usage, kept for large spans ------------------------------------
#
# Usage as known at K never changes (facts are only appended), and usage as
# known at K2 > K is the usage at K plus the events learnt in (K, K2] — unless an
# event was retracted in between, which this cache answers by measuring again.
# So a large customer's measurement is kept per process and caught up from the
# log instead of re-read: re-rating after a late event reads the late events,
# not the whole period. The key holds everything the measurement depends on
# (customer, span, meter definitions, price segment starts); the store is the
# engine. An entry is kept only once the transaction that measured it commits:
# a rolled-back transaction may have counted seq values that will be reused.

_MEASURED_MIN_EVENTS = 50_000  # smaller spans are cheap to read again
_MEASURED_ENTRIES = 4
_measured: weakref.WeakKeyDictionary[Engine, OrderedDict[tuple[Any, ...], tuple[int, Measurement]]]
_measured = weakref.WeakKeyDictionary()
_measured_lock = threading.Lock()


def _retracted_since(conn: Connection, customer: str, k1: int, k2: int) -> bool:
    return facts(conn).retracted_between(customer, k1, k2) > 0


def _keep(conn: Connection, key: tuple[Any, ...], known_at: int, m: Measurement) -> None:
    engine = conn.engine

    def keep(_: Connection) -> None:
        with _measured_lock:
            entries = _measured.setdefault(engine, OrderedDict())
            current = entries.get(key)
            if current is None or current[0] <= known_at:
                entries[key] = (known_at, m)
                entries.move_to_end(key)
            while len(entries) > _MEASURED_ENTRIES:
                entries.popitem(last=False)

    event.listen(conn, "commit", keep, once=True)


def measure_legacy(
    conn: Connection,
    customer: str,
    meters: list[Meter],
    span: tuple[int, int],
    boundaries: list[int],
    known_at: int,
) -> dict[tuple[str, str], GroupUsage]:
    """Format-1 usage (LEGACY: documents issued before the usage index, which
    carry an events digest per line): every raw event of the span as known at
    K, per segment. Kept so those documents keep verifying bit for bit."""
    lo, hi = span
    types = sorted({m.event_type for m in meters})
    key = (customer, tuple(meters), lo, hi, tuple(boundaries))
    with _measured_lock:
        entries = _measured.get(conn.engine)
        found = entries.pop(key, None) if entries is not None else None
    if found is not None:
        k1, m = found
        if k1 <= known_at and not _retracted_since(conn, customer, k1, known_at):
            if k1 < known_at:
                m.add(usage_rows(conn, customer, types, lo, hi, known_at, after=k1))
            _keep(conn, key, known_at, m)
            return m.groups()
        if k1 > known_at:  # an older K (verification): leave the entry as it was
            _keep(conn, key, k1, m)
    m = Measurement(meters, boundaries)
    m.add(usage_rows(conn, customer, types, lo, hi, known_at))
    if m.events >= _MEASURED_MIN_EVENTS:
        _keep(conn, key, known_at, m)
    return m.groups()


# Parsed catalog facts, keyed by what was read from the store: stored meters and
# price versions never change once recorded, so equal rows parse to equal
# objects, whichever store or K they came from. Bounded; cleared when full.
_CACHE_SIZE = 256
_meter_cache: dict[tuple[str, ...], list[Meter]] = {}
_book_cache: dict[tuple[Any, ...], PriceBook] = {}


def _meters_at(conn: Connection, known_at: int) -> list[Meter]:
    key = tuple(facts(conn).meter_definitions(known_at))
    found = _meter_cache.get(key)
    if found is None:
        found = load_meters(conn, known_at)
        if len(_meter_cache) >= _CACHE_SIZE:
            _meter_cache.clear()
        _meter_cache[key] = found
    return found


def _book_at(conn: Connection, code: str, known_at: int) -> PriceBook:
    port = facts(conn)
    book = port.price_book_header(code)
    if book is None:
        return load_price_book(conn, code, known_at)  # raises the usual error
    key = (code, book[0], book[1], tuple(port.price_version_hashes(code, known_at)))
    found = _book_cache.get(key)
    if found is None:
        found = load_price_book(conn, code, known_at)
        if len(_book_cache) >= _CACHE_SIZE:
            _book_cache.clear()
        _book_cache[key] = found
    return found


@dataclass(frozen=True)
class Billing:
    """Everything an invoice is computed from, as known at K."""

    customer: Customer
    period: Period
    subscriptions: list[SubscriptionUsage]
    meters: dict[str, Meter]


@dataclass(frozen=True)
class SubscriptionPlan:
    """One subscription's span, price segments and meters: what to measure."""

    subscription: Subscription
    book: PriceBook
    span: tuple[int, int]
    segments: tuple[Segment, ...]
    meters: list[Meter]

    @property
    def boundaries(self) -> list[int]:
        return [s.start for s in self.segments]


@dataclass(frozen=True)
class Plan:
    """Everything an invoice is computed from as known at K, but the usage."""

    customer: Customer
    period: Period
    subscriptions: list[SubscriptionPlan]
    meters: dict[str, Meter]


@dataclass
class Catalog:
    """Meters and price books as known at K, read once for many customers (an
    invoice run's chunk: no catalog fact can appear while it holds the lock)."""

    meters: dict[str, Meter]
    books: dict[str, PriceBook] = field(default_factory=dict)


def plan_billing(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    customer: Customer | None = None,
    catalog: Catalog | None = None,
) -> Plan:
    """The customer, period, subscriptions and their segments as known at K."""
    if customer is None:
        customer = load_customer(conn, customer_id, known_at)
    period = period_for_label(label, customer.cycles())
    subs = customer.subscriptions_in(period.start, period.end)
    if not subs:
        raise MeterlineError(
            ErrorCode.NO_SUBSCRIPTION, f"customer {customer_id} has no subscription in {label}"
        )
    meters = catalog.meters if catalog else {m.code: m for m in _meters_at(conn, known_at)}
    out = []
    for sub, (lo, hi) in subs:
        book = catalog.books.get(sub.price_book) if catalog else None
        if book is None:
            book = _book_at(conn, sub.price_book, known_at)
            if catalog is not None:
                catalog.books[sub.price_book] = book
        trial_end = sub.trial_end(customer.timezone)  # a boundary: the trial is billed apart
        segments = split_segments(book.segments(lo, hi, known_at), trial_end)
        used = sorted(
            {c.meter for s in segments for c in s.version.charges if not isinstance(c, Flat)}
        )
        missing = [code for code in used if code not in meters]
        if missing:
            raise MeterlineError(
                ErrorCode.UNKNOWN_METER, f"price book {book.code} uses unknown meter(s) {missing}"
            )
        out.append(
            SubscriptionPlan(sub, book, (lo, hi), tuple(segments), [meters[c] for c in used])
        )
    return Plan(customer, period, out, meters)


def measure_plan(
    conn: Connection,
    plan: Plan,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
    prefetched: Sequence[Mapping[int, Read]] | None = None,
) -> Billing:
    """The plan's usage as known at K (``prefetched``: index reads per subscription
    and window size, see `measuring.index_requests`)."""
    out = []
    for i, sp in enumerate(plan.subscriptions):
        if fmt >= 2:
            usage = measuring.measure(
                conn,
                plan.customer.id,
                sp.meters,
                sp.span,
                sp.boundaries,
                known_at,
                raw=raw,
                checkpoint=checkpoint,
                prefetched=None if prefetched is None else prefetched[i],
            )
        else:
            usage = measure_legacy(
                conn, plan.customer.id, sp.meters, sp.span, sp.boundaries, known_at
            )
        out.append(SubscriptionUsage(sp.subscription, sp.book, sp.span, sp.segments, usage))
    return Billing(plan.customer, plan.period, out, plan.meters)


def gather(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> Billing:
    """What the invoice is computed from, as known at K. ``raw`` measures format-2
    usage from raw events instead of the index (the reference the index is tested
    against; same result)."""
    plan = plan_billing(conn, customer_id, label, known_at)
    return measure_plan(conn, plan, known_at, fmt, raw, checkpoint)


def compute_typed(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> typed.Body:
    """The invoice body as known at K, in document format `fmt` (see `format_of`)."""
    b = gather(conn, customer_id, label, known_at, fmt, raw, checkpoint)
    grants = credit_facts.states(conn, b.customer, known_at)
    return finish_body(
        conn, assemble(b.customer, b.period, b.subscriptions, known_at, grants), known_at, fmt
    )


def compute_body(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> dict[str, Any]:
    """`compute_typed` as plain JSON data (the edge: hashing, previews, comparisons)."""
    return typed.encode(compute_typed(conn, customer_id, label, known_at, fmt, raw, checkpoint))


def finish_body(
    conn: Connection,
    body: typed.Body,
    k: int,
    fmt: int,
    nodes: merkle.Nodes | None = None,
) -> typed.Body:
    """Mark a computed body with its format; from format 2 on, record the log's tree head
    at the cutoff, so the document commits to every fact before it (DESIGN §2).
    ``nodes``: a node reader shared by many bodies (its cache)."""
    if fmt < 2:
        return body  # format 1 bodies carry no format field, as issued
    head = merkle.head(conn, k, nodes)
    tree_head = typed.TreeHead(size=head.size, root=head.root.hex())
    return structs.replace(body, format=fmt, tree_head=tree_head)


# Invoices recomputed together by `compute_bodies` (verify): one index read per
# group of alike customers, one read of the tree nodes per level.
RECOMPUTE_CHUNK = 500


def compute_bodies(
    conn: Connection, wanted: Sequence[tuple[str, str, int, int]]
) -> list[typed.Body | MeterlineError | None]:
    """`compute_body` of many invoices, each (customer, period label, cutoff K, format)
    at its own K, sharing reads: the index rows of alike customers are read once,
    as known at the greatest K, and cut back to each K (`Read.as_of`); the tree
    nodes of every cutoff's head are read once per level.

    Each entry is the body, the MeterlineError `compute_body` raises, or None
    where it raised anything else (the caller recomputes that one on its own, to
    report exactly what `compute_body` says). A database error propagates."""
    out: list[typed.Body | MeterlineError | None] = [None] * len(wanted)
    nodes = merkle.Nodes(conn)
    ids = sorted({i for _, _, k, f in wanted if f >= 2 for i in perfect_ranges(0, k)})
    if ids:
        with contextlib.suppress(merkle.MissingNodes):
            nodes(ids)  # cached; a missing node fails the one body that needs it
    port = facts(conn)
    cutoffs = [k for _, _, k, _ in wanted]
    # One catalog for the batch when none of its facts falls between the cutoffs; each
    # customer's definition read once, used where it was already known at the cutoff.
    shared = None
    if wanted and not port.catalog_changed(min(cutoffs), max(cutoffs)):
        shared = Catalog({m.code: m for m in _meters_at(conn, max(cutoffs))})
    versions = port.customer_versions(sorted({c for c, _, _, _ in wanted}), max(cutoffs, default=0))
    plans: dict[int, Plan] = {}
    for i, (cid, label, k, _) in enumerate(wanted):
        try:
            customer = None
            found = versions.get(cid)
            if found is not None and found[0] <= k:
                customer = parse_customer(decode_json(found[1]), f"customer {cid}")
            plans[i] = plan_billing(conn, cid, label, k, customer, shared)
        except MeterlineError as exc:
            out[i] = exc
        except (ValueError, TypeError, KeyError, ArithmeticError):
            out[i] = None
    groups: dict[measuring.IndexRequest, list[tuple[int, int, int]]] = {}
    for i, plan in plans.items():
        if wanted[i][3] < 2:
            continue
        for j, sp in enumerate(plan.subscriptions):
            for size, req in measuring.index_requests(sp.meters, sp.span, sp.boundaries).items():
                groups.setdefault(req, []).append((i, j, size))
    reads: dict[int, list[dict[int, Read]]] = {
        i: [{} for _ in p.subscriptions] for i, p in plans.items()
    }
    for (codes, ranges), members in groups.items():
        top = max(wanted[i][2] for i, _, _ in members)
        customers = sorted({wanted[i][0] for i, _, _ in members})
        days = rollup_grain(members[0][2]) or False
        got = port.index_many(customers, codes, ranges, top, whole=True, rollups=days)
        for i, j, size in members:
            reads[i][j][size] = got[wanted[i][0]].as_of(wanted[i][2])
    # Credits: customers without any credit fact have only their catalog grants, and
    # what their documents spent as known at each cutoff is read for all at once.
    planned = list(plans)
    granted = set(credit_facts.customers_with_grants(conn, sorted({wanted[i][0] for i in planned})))
    spent = dict(
        zip(
            planned,
            documents.credits_spent_at(conn, [(wanted[i][0], wanted[i][2]) for i in planned]),
            strict=True,
        )
    )
    for i, plan in plans.items():
        cid, _, k, fmt = wanted[i]
        try:
            billing = measure_plan(conn, plan, k, fmt, prefetched=reads[i] if fmt >= 2 else None)
            used = spent[i]
            if cid in granted or billing.customer.id != cid:
                grants = credit_facts.states(conn, billing.customer, k)
            elif isinstance(used, MeterlineError):
                raise used
            else:
                grants = credit_facts.states_from([], billing.customer, used)
            body = assemble(billing.customer, billing.period, billing.subscriptions, k, grants)
            out[i] = finish_body(conn, body, k, fmt, nodes)
        except MeterlineError as exc:
            out[i] = exc
        except (ValueError, TypeError, KeyError, ArithmeticError, merkle.MissingNodes):
            out[i] = None
    return out


def closes_at(b: Billing) -> int:
    """When the period is closed: every window it covers is final (DESIGN §7)."""
    closing = b.period.end
    last = b.period.end - 1
    for su in b.subscriptions:
        for charge in {c for s in su.segments for c in s.version.charges}:
            if isinstance(charge, Flat):
                continue
            m = b.meters[charge.meter]
            closing = max(
                closing, window_start(last, m.window_us) + m.window_us + m.allowed_lateness_us
            )
    return closing


def preview(store: Store, customer_id: str, label: str) -> dict[str, Any]:
    from meterline.services.finance import details
    from meterline.services.progressive import preview_body

    with store.read() as conn:
        k = sequence.current(conn)
        body = preview_body(conn, customer_id, label, k)  # a final after interims
        draft = draft_dict(typed.encode(body))
        draft["finance"] = details(conn, body, None)
        return draft


@dataclass
class IssueResult:
    issued: list[Issued] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    # Customers that could not be invoiced for another reason (a bad price,
    # an amount out of range, ...): (customer_id, code, message). The run goes
    # on for the others; callers report these and exit non-zero.
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def customers_for(store: Store, label: str) -> list[str]:
    """Customers with a subscription overlapping the period (in their timezone)."""
    label_year(label)  # a malformed label is an error, not "no customers"
    with store.read() as conn:
        out = []
        for c in load_customers(conn):
            try:
                p = period_for_label(label, c.cycles())
            except MeterlineError:
                continue  # no period of that label in this customer's billing cycles
            if c.subscriptions_in(p.start, p.end):
                out.append(c.id)
        return out


def issue(
    store: Store,
    label: str,
    now_us: int,
    customer: str | None = None,
    force: bool = False,
    jobs: int = 1,
) -> IssueResult:
    """Issue the period's invoices (one customer's, or every billable customer's).

    A run over all customers works in chunks of `CHUNK` customers, one transaction
    each (`_issue_chunk`); a chunk that cannot be issued as a whole is issued again
    customer by customer, so one customer's failure never stops the run. With
    ``jobs`` > 1 and many customers, worker processes compute the chunks' bodies
    from snapshots while this process appends them (services/invoice_workers.py)."""
    from meterline.services import invoice_workers

    result = IssueResult()
    if customer is not None:
        _issue_serial(store, customer, label, now_us, force, result, single=True)
    else:
        targets = customers_for(store, label)
        chunks = [targets[i : i + CHUNK] for i in range(0, len(targets), CHUNK)]
        if jobs > 1 and len(targets) >= invoice_workers.PARALLEL_MIN:
            invoice_workers.issue_chunks(store, chunks, label, now_us, force, jobs, result)
        else:
            for chunk in chunks:
                with gc_paused():
                    _issue_chunk(store, chunk, label, now_us, force, result)
    if result.issued:
        from meterline.services.finance import with_finance

        with store.read() as conn:
            result.issued = [
                d if d.finance is not None else with_finance(conn, d) for d in result.issued
            ]
    return result


def _failure(
    result: IssueResult, cid: str, label: str, exc: Exception, single: bool = False
) -> None:
    """Record why one customer was not invoiced, or raise what must stop the run."""
    if isinstance(exc, MeterlineError):
        if single or exc.code == ErrorCode.STORE_UNAVAILABLE:
            raise exc
        if exc.code == ErrorCode.PERIOD_NOT_CLOSED:
            result.refused.append((cid, exc.message))
        else:
            result.failed.append((cid, str(exc.code), exc.message))
        return
    if is_transient(exc):
        raise exc
    message = f"{cid} cannot be invoiced for {label}: {type(exc).__name__}: {exc}"[:500]
    if single:
        raise MeterlineError(ErrorCode.INVOICE_FAILED, message) from exc
    result.failed.append((cid, str(ErrorCode.INVOICE_FAILED), message))


def _issue_serial(
    store: Store,
    cid: str,
    label: str,
    now_us: int,
    force: bool,
    result: IssueResult,
    single: bool = False,
) -> None:
    try:
        issued = _issue_one(store, cid, label, now_us, force)
    except Exception as exc:
        _failure(result, cid, label, exc, single)
        return
    if isinstance(issued, str):
        result.already.append((cid, issued))
    else:
        result.issued.append(issued)


# Customers per transaction of a run over all customers: big enough that the
# per-statement costs (index read, document rows, journal, tree) are shared,
# small enough that a chunk re-issued customer by customer costs little.
CHUNK = 200


class _Deferred:
    """A chunk's customer issued on its own after the chunk."""


DEFERRED = _Deferred()


def _progressive(customer: Customer) -> bool:
    return any(s.threshold is not None for s in customer.subscriptions)


class _ChunkFailed(Exception):
    """A chunk that must be issued again customer by customer."""


def _issue_chunk(
    store: Store, chunk: list[str], label: str, now_us: int, force: bool, result: IssueResult
) -> None:
    """Issue a chunk of customers in one transaction, with the same documents as
    issuing them one by one in this order (`_issue_one`): each invoice's cutoff is
    the last seq before it, its usage as known there, its tree head at that size.
    The facts learnt in the chunk are its own documents (other customers'), so the
    store as known at the chunk's first seq and at each cutoff is the same for
    every invoice of the chunk (the argument of services/invoice_run.py): catalog,
    index and credits are read once for the chunk."""
    try:
        with store.write() as conn:
            outcomes = _chunk(conn, chunk, label, now_us, force)
    except Exception as exc:
        if isinstance(exc, MeterlineError) and exc.code == ErrorCode.STORE_UNAVAILABLE:
            raise
        if is_transient(exc):
            raise
        for cid in chunk:  # each customer on its own: its own error, the run goes on
            _issue_serial(store, cid, label, now_us, force, result)
        return
    for cid in chunk:
        got = outcomes[cid]
        if isinstance(got, _Deferred):
            _issue_serial(store, cid, label, now_us, force, result)
        elif isinstance(got, Issued):
            result.issued.append(got)
        elif isinstance(got, str):
            result.already.append((cid, got))
        else:
            _failure(result, cid, label, got)


@dataclass
class ChunkInputs:
    """What every invoice of a chunk is computed from, read once as known at K:
    the invoices already issued, the customers and their plans (or why not), the
    index reads, the watermark, the credits spent and who has credit grants."""

    outcomes: dict[str, str | MeterlineError]
    customers: Mapping[str, Customer | Exception]
    plans: dict[str, Plan]
    reads: dict[str, list[dict[int, Read]]]
    watermark: int | None
    spent: dict[str, dict[str, Decimal]]
    granted: set[str]

    def deferred(self, cid: str) -> bool:
        """Issued on its own after the chunk: its issue writes more than a document
        (credit breakage facts) or reads its own earlier documents (interims)."""
        found = self.customers[cid]
        return cid in self.granted or (isinstance(found, Customer) and _progressive(found))


def chunk_inputs(
    conn: Connection, chunk: list[str], label: str, k: int, now_us: int
) -> ChunkInputs:
    outcomes: dict[str, str | MeterlineError] = {}
    outcomes.update(documents.invoices_for(conn, chunk, label))
    todo = [c for c in chunk if c not in outcomes]
    catalog = Catalog({m.code: m for m in _meters_at(conn, k)})
    customers = load_customers_by_id(conn, todo, k)
    plans: dict[str, Plan] = {}
    for cid in todo:
        try:
            found = customers[cid]
            if isinstance(found, Exception):
                raise found
            plans[cid] = plan_billing(conn, cid, label, k, found, catalog)
        except MeterlineError as exc:
            outcomes[cid] = exc
    return ChunkInputs(
        outcomes,
        customers,
        plans,
        _read_index(conn, plans, k),
        current_watermark(conn, now_us),
        documents.credits_spent_many(conn, list(plans), k),
        set(credit_facts.customers_with_grants(conn, list(plans))),
    )


def _chunk(
    conn: Connection, chunk: list[str], label: str, now_us: int, force: bool
) -> dict[str, Issued | str | Exception | _Deferred]:
    out: dict[str, Issued | str | Exception | _Deferred] = {}
    appender = documents.Appender(conn, Kind.INVOICE)
    k0 = appender.seq
    inputs = chunk_inputs(conn, chunk, label, k0, now_us)
    out.update(inputs.outcomes)
    customers, plans, reads = inputs.customers, inputs.plans, inputs.reads
    checkpoints: dict[usage_index.BucketKey, usage_index.Delta] = {}
    with merkle.grow_in_memory(conn, k0) as grower:
        for cid, plan in plans.items():
            if inputs.deferred(cid):
                out[cid] = DEFERRED
                continue
            k = appender.seq
            try:
                prefetched = reads[cid]
                billing = measure_plan(conn, plan, k, prefetched=prefetched)
                _refuse_open(billing, inputs.watermark, cid, label, force)
                grants = credit_facts.states_from([], billing.customer, inputs.spent[cid])
                body = assemble(billing.customer, billing.period, billing.subscriptions, k, grants)
                body = finish_body(conn, body, k, FORMAT)  # the tree head from `grower`
                digest = body_hash(body)
            except MeterlineError as exc:
                out[cid] = exc
                continue
            for sp, got in zip(plan.subscriptions, prefetched, strict=True):
                kinds = {m.code: m.aggregation for m in sp.meters}
                for read in got.values():
                    checkpoints.update(usage_index.checkpoint_rows(read, kinds, k))
            doc, row = appender.add(body, digest, billing.period, now_us, force)
            grower.append(merkle.DOCUMENTS, row)
            out[cid] = doc
        usage_index.append(conn, checkpoints)
        appender.flush()
        grower.check()
    seller = load_seller(conn, k0)
    for cid, outcome in out.items():
        if isinstance(outcome, Issued):
            known = customers.get(cid)
            out[cid] = dataclasses.replace(
                outcome,
                finance=finance_details(
                    outcome.body,
                    outcome.issued_at,
                    seller,
                    known if isinstance(known, Customer) else None,
                ),
            )
    return out


def _read_index(
    conn: Connection, plans: Mapping[str, Plan], k: int
) -> dict[str, list[dict[int, Read]]]:
    """The index reads of every plan's measurement, one statement per distinct request
    (customers billed alike share one: same meters, same buckets)."""
    reads: dict[str, list[dict[int, Read]]] = {
        cid: [{} for _ in p.subscriptions] for cid, p in plans.items()
    }
    wanted: dict[measuring.IndexRequest, list[tuple[str, int, int]]] = {}
    for cid, p in plans.items():
        for i, sp in enumerate(p.subscriptions):
            for size, req in measuring.index_requests(sp.meters, sp.span, sp.boundaries).items():
                wanted.setdefault(req, []).append((cid, i, size))
    port = facts(conn)
    for (codes, ranges), members in wanted.items():
        days = rollup_grain(members[0][2]) or False
        got = port.index_many(
            sorted({cid for cid, _, _ in members}), codes, ranges, k, rollups=days
        )
        for cid, i, size in members:
            reads[cid][i][size] = got[cid]
    return reads


def _refuse_open(
    billing: Billing, watermark: int | None, customer_id: str, label: str, force: bool
) -> None:
    """PERIOD_NOT_CLOSED unless the watermark has passed the period's close."""
    closing = closes_at(billing)
    if not force and (watermark is None or watermark < closing):
        seen = "no events yet" if watermark is None else format_us(watermark)
        raise MeterlineError(
            ErrorCode.PERIOD_NOT_CLOSED,
            f"{label} for {customer_id} is not closed: the watermark is {seen}; the period "
            f"closes when it reaches {format_us(closing)} (the end of its last window plus "
            "the allowed lateness)",
            watermark=None if watermark is None else format_us(watermark),
            closes_at=format_us(closing),
        )


def _issue_one(
    store: Store, customer_id: str, label: str, now_us: int, force: bool
) -> Issued | str:
    with store.write() as conn:
        k = sequence.lock(conn)
        existing = documents.invoice_for(conn, customer_id, label)
        if existing is not None:
            return existing
        body, period = invoice_body(conn, customer_id, label, k, now_us, force, checkpoint=True)
        issued = documents.append(conn, Kind.INVOICE, body, body_hash(body), period, now_us, force)
        settle_credits(conn, customer_id, period, now_us)
        return issued


def settle_credits(conn: Connection, customer_id: str, period: Period, now_us: int) -> None:
    """After an invoice is appended, in its transaction: the period's credit
    rollover and expiry breakage (services/credits.py)."""
    from meterline.services.credits import settle_period

    settle_period(conn, customer_id, period, now_us)


def invoice_body(
    conn: Connection,
    customer_id: str,
    label: str,
    k: int,
    now_us: int,
    force: bool,
    checkpoint: bool = False,
) -> tuple[typed.Body, Period]:
    """The body of the invoice to issue at cutoff k (refused while the period is open).
    Shared with the split invoice run (services/invoice_run.py). `checkpoint` only in a
    write transaction holding the knowledge lock at k (usage index checkpoints)."""
    billing = gather(conn, customer_id, label, k, checkpoint=checkpoint)
    _refuse_open(billing, current_watermark(conn, now_us), customer_id, label, force)
    grants = credit_facts.states(conn, billing.customer, k)
    body = finish_body(
        conn,
        assemble(billing.customer, billing.period, billing.subscriptions, k, grants),
        k,
        FORMAT,
    )
    from meterline.services.progressive import finalize

    def credit(due: Decimal) -> list[tuple[str, Decimal]]:
        return consume(grants, due, billing.period.start, billing.period.end)

    return finalize(conn, body, credit), billing.period


def show(store: Store, number: str) -> Issued:
    """One issued document, with its finance details (seller, dates, terms)."""
    from meterline.services.finance import with_finance

    with store.read() as conn:
        return with_finance(conn, documents.get(conn, number))


def list_all(store: Store, customer: str | None = None) -> list[Issued]:
    with store.read() as conn:
        return documents.list_documents(conn, customer)


def set_status(store: Store, number: str, status: Status, reason: str, now_us: int) -> Status:
    with store.write() as conn:
        return documents.set_status(conn, number, status, reason, now_us)
