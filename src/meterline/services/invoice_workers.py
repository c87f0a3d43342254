"""An invoice run whose bodies are computed by worker processes (issue 17: the
month-end run on every core, on SQLite as on PostgreSQL).

The serial run computes a chunk's bodies inside its write transaction, holding
the knowledge-sequence lock, so one process does everything. Here each chunk is
computed by a worker process in a read transaction as known at its snapshot's
last seq K (`prepare`: plans, one index read per request, measurement, rating,
the tree head at K), while the main process appends the chunks already computed
(`append_prepared`). A body's cutoff is K, not the seq just before its document:
the argument of services/invoice_run.py (DESIGN §2): the body is what the store
as known at K gives, so `verify` reproduces it at K, and it is issued only if
every fact of (K, k] (k: the last seq when it is appended) is an event or a
document of another customer. A customer with facts of its own in between, or a
chunk with any other fact in between (a catalog change, a retraction, a status
change), is issued by the serial path instead: slower, never wrong.

Workers are spawned (no database connection crosses a fork) and hold their own
connection; at most two chunks per worker are in flight, so memory stays
bounded. Customers the serial chunk issues on their own (credit grants,
progressive billing) are issued on their own here too. Index checkpoints are
not written (a read transaction cannot); rollup passes make them unneeded.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing import body as typed
from meterline.billing.customers import Customer
from meterline.billing.document import FORMAT, Issued, Kind, body_hash
from meterline.billing.finance import finance_details
from meterline.billing.invoice import assemble
from meterline.billing.periods import Period
from meterline.domain import canonical
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.gcpause import gc_paused
from meterline.services import invoicing, workers
from meterline.store import credit_facts, documents, merkle, sequence
from meterline.store.customer_catalog import load_customers_by_id
from meterline.store.database import Store
from meterline.store.seller_catalog import load_seller

# Below this many customers one process is done before workers would have started.
PARALLEL_MIN = 2_000


@dataclass(frozen=True)
class Ready:
    """A customer's body as known at the chunk's snapshot, as its canonical bytes (what
    is stored and hashed; the caller decodes them: pickling the struct tree cost the
    worker 0.24 ms per body, decoding costs the caller less than unpickling did),
    its content hash and its period."""

    data: bytes
    digest: str
    period: Period


Outcome = Ready | tuple[str, str] | str | None
"""Ready; (error code, message) where the body was refused; the number of an
invoice already issued; None: issue this customer on its own (serial path)."""


def prepare(
    conn: Connection, chunk: list[str], label: str, now_us: int, force: bool
) -> tuple[int, dict[str, Outcome]]:
    """The chunk's bodies as known at this read transaction's last seq K: what
    `invoicing._chunk` computes, with every cutoff at K."""
    k = sequence.current(conn)
    inputs = invoicing.chunk_inputs(conn, chunk, label, k, now_us)
    out: dict[str, Outcome] = {
        cid: got if isinstance(got, str) else (str(got.code), got.message)
        for cid, got in inputs.outcomes.items()
    }
    nodes = merkle.Nodes(conn)
    for cid, plan in inputs.plans.items():
        if inputs.deferred(cid):
            out[cid] = None
            continue
        try:
            billing = invoicing.measure_plan(conn, plan, k, prefetched=inputs.reads[cid])
            invoicing._refuse_open(billing, inputs.watermark, cid, label, force)
            grants = credit_facts.states_from([], billing.customer, inputs.spent[cid])
            body = assemble(billing.customer, billing.period, billing.subscriptions, k, grants)
            body = invoicing.finish_body(conn, body, k, FORMAT, nodes)
        except MeterlineError as exc:
            out[cid] = (str(exc.code), exc.message)
            continue
        digest = body_hash(body)
        out[cid] = Ready(typed.encode_bytes(body), digest, billing.period)  # bytes cached
    return k, out


def touched_since(conn: Connection, k0: int, k: int) -> set[str] | None:
    """Customers with events or documents in (k0, k], or None when a fact of any
    other kind lies in between (then no body computed at k0 may be issued)."""
    if k == k0:
        return set()
    params = {"lo": k0, "hi": k}
    rows = conn.execute(
        text(
            "SELECT customer_id, COUNT(*) FROM events WHERE seq > :lo AND seq <= :hi "
            "GROUP BY customer_id UNION ALL SELECT customer_id, COUNT(*) FROM documents "
            "WHERE seq > :lo AND seq <= :hi GROUP BY customer_id"
        ),
        params,
    ).all()
    if sum(int(n) for _, n in rows) != k - k0:
        return None
    return {str(c) for c, _ in rows}


def append_prepared(
    conn: Connection,
    chunk: list[str],
    label: str,
    k0: int,
    prepared: dict[str, Outcome],
    now_us: int,
    force: bool,
) -> dict[str, Issued | str | Exception | invoicing._Deferred] | None:
    """Append the chunk's bodies computed at ``k0`` (one write transaction), or None
    when a fact other than events and documents was learnt since (the caller
    issues the chunk serially). A customer with events or documents of its own
    since is left to the serial path (`DEFERRED`)."""
    appender = documents.Appender(conn, Kind.INVOICE)
    k = appender.seq
    touched = touched_since(conn, k0, k)
    if touched is None:
        return None
    out: dict[str, Issued | str | Exception | invoicing._Deferred] = {}
    out.update(documents.invoices_for(conn, chunk, label))
    with merkle.grow_in_memory(conn, k) as grower:
        for cid in chunk:
            if cid in out:
                continue
            got = prepared.get(cid)
            if got is None or cid in touched:
                out[cid] = invoicing.DEFERRED
            elif isinstance(got, str):
                out[cid] = got
            elif isinstance(got, tuple):
                out[cid] = MeterlineError(ErrorCode(got[0]), got[1])
            elif canonical.digest(got.data) != got.digest:  # never expected: recompute here
                out[cid] = invoicing.DEFERRED
            else:
                body = typed.decode(got.data)  # encode(decode(b)) == b (billing/body.py)
                typed.remember(body, got.data)  # stored as the worker encoded it
                doc, row = appender.add(body, got.digest, got.period, now_us, force)
                grower.append(merkle.DOCUMENTS, row)
                out[cid] = doc
        appender.flush()
        grower.check()
    return _with_finance(conn, out, k)


def _with_finance(
    conn: Connection, out: dict[str, Issued | str | Exception | invoicing._Deferred], k: int
) -> dict[str, Issued | str | Exception | invoicing._Deferred]:
    """Finance details of the chunk's documents, with the customers and the seller read
    once (as the serial chunk does), instead of twice per document afterwards."""
    issued = [cid for cid, got in out.items() if isinstance(got, Issued)]
    if not issued:
        return out
    seller = load_seller(conn, k)
    customers = load_customers_by_id(conn, issued, k)
    for cid in issued:
        doc = out[cid]
        assert isinstance(doc, Issued)
        known = customers.get(cid)
        out[cid] = dataclasses.replace(
            doc,
            finance=finance_details(
                doc.body, doc.issued_at, seller, known if isinstance(known, Customer) else None
            ),
        )
    return out


def _task(chunk: list[str], label: str, now_us: int, force: bool) -> tuple[int, dict[str, Outcome]]:
    with gc_paused(), workers.store().read() as conn:
        return prepare(conn, chunk, label, now_us, force)


def issue_chunks(
    store: Store,
    chunks: Iterable[list[str]],
    label: str,
    now_us: int,
    force: bool,
    jobs: int,
    result: invoicing.IssueResult,
) -> None:
    """Issue the chunks in order, their bodies computed by ``jobs`` workers."""
    pool = workers.pool(store.url, jobs)
    try:
        todo = deque(chunks)
        flight: deque[tuple[list[str], Future[tuple[int, dict[str, Outcome]]]]] = deque()
        while todo or flight:
            while todo and len(flight) < 2 * jobs:
                chunk = todo.popleft()
                flight.append((chunk, pool.submit(_task, chunk, label, now_us, force)))
            chunk, future = flight.popleft()
            try:
                k0, prepared = future.result()
            except Exception:  # a worker's error: the serial path reports what is wrong
                invoicing._issue_chunk(store, chunk, label, now_us, force, result)
                continue
            _settle(store, chunk, k0, prepared, label, now_us, force, result)
    finally:
        pool.shutdown(cancel_futures=True)


def _settle(
    store: Store,
    chunk: list[str],
    k0: int,
    prepared: dict[str, Outcome],
    label: str,
    now_us: int,
    force: bool,
    result: invoicing.IssueResult,
) -> None:
    with gc_paused():
        try:
            with store.write() as conn:
                outcomes = append_prepared(conn, chunk, label, k0, prepared, now_us, force)
        except Exception as exc:
            if isinstance(exc, MeterlineError) and exc.code == ErrorCode.STORE_UNAVAILABLE:
                raise
            outcomes = None
        if outcomes is None:
            invoicing._issue_chunk(store, chunk, label, now_us, force, result)
            return
        for cid in chunk:
            got: Any = outcomes[cid]
            if isinstance(got, invoicing._Deferred):
                invoicing._issue_serial(store, cid, label, now_us, force, result)
            elif isinstance(got, Issued):
                result.issued.append(got)
            elif isinstance(got, str):
                result.already.append((cid, got))
            else:
                invoicing._failure(result, cid, label, got)
