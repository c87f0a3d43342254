"""`verify`: every issued document is re-derived from the store as known at
its cutoff and must reproduce its content hash bit for bit (DESIGN §2, §8).

Three checks per document: the stored body still hashes to its recorded
content hash (nobody edited it), recomputing it at the cutoff gives the same
hash (the log still supports it), and the hash chain links it to the previous
document (nothing was removed, reordered or altered).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import structs
from sqlalchemy import text

from meterline.billing import body as typed
from meterline.billing.document import GENESIS, Issued, Kind, body_hash, chain_hash
from meterline.domain.canonical import digest
from meterline.domain.errors import MeterlineError
from meterline.services import workers
from meterline.store import documents
from meterline.store.database import Store


@dataclass
class Report:
    checks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.checks)

    def check(self, name: str, ok: bool, details: str) -> None:
        self.checks.append({"name": name, "ok": ok, "details": details})

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": self.checks, "warnings": self.warnings}


def recompute(conn: Any, doc: Issued) -> typed.Body:
    """The body as the store knows it at the document's cutoff, recomputed the
    way its format prescribes (format 1: legacy raw events; 2: usage index)."""
    from meterline.services import corrections, invoicing, progressive

    body = doc.body
    if doc.kind == Kind.INVOICE and body.role is not typed.UNSET:  # progressive
        again = progressive.recompute(conn, doc)
    elif doc.kind == Kind.INVOICE:
        again = invoicing.compute_typed(
            conn, body.customer_id, body.period.label, body.cutoff_seq, body.doc_format
        )
    else:
        again = corrections.recompute_note(conn, doc)
    return _as_issued(again, doc)


def _as_issued(again: typed.Body, doc: Issued) -> typed.Body:
    if doc.body.tree_head is typed.UNSET:  # issued before the Merkle log: no tree head
        again = structs.replace(again, tree_head=typed.UNSET)
    return again


Recomputed = typed.Body | MeterlineError | None


def recompute_many(conn: Any, docs: list[Issued]) -> dict[str, Recomputed]:
    """`recompute` of the invoices among ``docs``, sharing reads
    (`invoicing.compute_bodies`), by number: the body, the MeterlineError, or None
    (recompute that one on its own). Credit and debit notes are left out. A
    database error leaves the whole batch out (the savepoint undoes it)."""
    from meterline.services import invoicing

    invoices: list[Issued] = []
    wanted: list[tuple[str, str, int, int]] = []
    for d in docs:
        if d.kind != Kind.INVOICE or d.body.role is not typed.UNSET:
            continue  # progressive: recomputed on its own
        b = d.body
        wanted.append((b.customer_id, b.period.label, b.cutoff_seq, b.doc_format))
        invoices.append(d)
    if not wanted:
        return {}
    try:
        with conn.begin_nested():
            got = invoicing.compute_bodies(conn, wanted)
    except Exception:
        return {}
    return {
        d.number: _as_issued(g, d) if isinstance(g, typed.Body) else g
        for d, g in zip(invoices, got, strict=True)
    }


def _readable(
    conn: Any,
    report: Report,
    number: str | None,
    unaltered: set[str] | None = None,
    lazy: bool = False,
) -> list[Issued | _Unreadable | _Envelope]:
    """The documents, read in chunks: a row that cannot be read (a body that is not
    JSON, a kind or instant out of range) fails a check that names it.

    ``unaltered`` collects the numbers whose stored bytes hash to their content hash:
    the bytes hashed at issue, so re-encoding the decoded body gives them again
    (encode(decode(b)) == b for every canonical body, billing/body.py). With
    ``lazy`` (workers recompute the invoices), such a document stays undecoded
    (`_Envelope`): bytes issued by this system always decode, and the caller
    decodes only what the workers leave to it."""
    out: list[Issued | _Unreadable | _Envelope] = []
    for stored in documents.read_rows(conn):
        intact = unaltered is not None and digest(stored.data) == stored.content_hash
        if intact and lazy:
            try:
                out.append(_Envelope(stored, stored.envelope()))
                assert unaltered is not None
                unaltered.add(stored.number)
                continue
            except Exception:  # a column that cannot be read: decoded below, named there
                pass
        try:
            got = stored.issued()
        except Exception as exc:
            if number is None or number == stored.number:
                report.check(
                    f"{stored.number} readable",
                    False,
                    f"documents seq {stored.seq} cannot be read ({type(exc).__name__}: {exc})",
                )
            out.append(_Unreadable(stored.number, stored.document_hash))
            continue
        out.append(got)
        if intact and unaltered is not None:
            unaltered.add(got.number)
    return out


@dataclass
class _Envelope:
    """A document whose stored bytes hash to its content hash, not decoded: its
    envelope (what the chain hash covers) and its row, decoded on demand."""

    stored: documents.Stored
    fields: dict[str, Any]

    @property
    def number(self) -> str:
        return self.stored.number

    @property
    def document_hash(self) -> str:
        return self.stored.document_hash

    @property
    def previous_hash(self) -> str:
        return str(self.fields["previous_hash"])


class _Refused(Exception):
    """What a worker's `compute_body` refused with (its message, as one process words it)."""


@dataclass
class _Unreadable:
    number: str
    document_hash: str


# Below this many invoices one process is done before workers would have started.
PARALLEL_MIN = 2_000

Remote = tuple[str, str, int]
"""A worker's answer for one invoice: ("hash", content hash of the recomputed body,
the cutoff it used), ("error", what `compute_body` refused with, cutoff), or
("again", "", 0) to recompute here."""


class _PeriodKey(msgspec.Struct):
    label: str


class _Key(msgspec.Struct):
    """What a worker needs of a stored invoice body; the rest is skipped, not decoded."""

    customer_id: str
    period: _PeriodKey
    cutoff_seq: int
    format: int | msgspec.UnsetType = msgspec.UNSET
    role: str | msgspec.UnsetType = msgspec.UNSET
    tree_head: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_keys = msgspec.json.Decoder(_Key)


def _wanted(stored: documents.Stored) -> tuple[str, str, str, int, int, bool] | None:
    """(number, customer, period label, cutoff, format, no tree head) of a plain
    invoice; None for anything else (notes, progressive invoices, a body this
    cannot read): the caller recomputes those."""
    if stored.kind != Kind.INVOICE.value:
        return None
    try:
        b = _keys.decode(stored.data)
    except (msgspec.DecodeError, ValueError):
        return None
    if b.role is not msgspec.UNSET:
        return None
    fmt = 1 if b.format is msgspec.UNSET else int(b.format)
    no_head = b.tree_head is msgspec.UNSET
    return (stored.number, b.customer_id, b.period.label, b.cutoff_seq, fmt, no_head)


def _hashes(since: int, until: int) -> dict[str, Remote]:
    """In a worker process: recompute the invoices with seq in (since, until]
    (`invoicing.compute_bodies`, the reads shared as in one process) and answer with
    their content hashes only. Notes, progressive invoices and documents that
    cannot be read are left to the caller."""
    from meterline.gcpause import gc_paused
    from meterline.services import invoicing

    out: dict[str, Remote] = {}
    with workers.store().read() as conn, gc_paused():
        wanted = [
            w
            for w in map(_wanted, documents.read_rows(conn, since, until, statuses=False))
            if w is not None
        ]
        got = invoicing.compute_bodies(conn, [w[1:5] for w in wanted])
    for w, g in zip(wanted, got, strict=True):
        if isinstance(g, typed.Body):
            if w[5]:
                g = structs.replace(g, tree_head=typed.UNSET)
            out[w[0]] = ("hash", body_hash(g), w[3])
        elif isinstance(g, MeterlineError):
            out[w[0]] = ("error", str(g), w[3])
        else:
            out[w[0]] = ("again", "", 0)
    return out


def guided(n: int, most: int, jobs: int, least: int = 50) -> list[tuple[int, int]]:
    """[i, j) ranges cutting ``n`` items for ``jobs`` workers: ``most`` per task
    while plenty is left, then shrinking to ``least``, so the workers run out
    of work together (with equal tasks one worker recomputed the last 500 alone,
    ~1 s at 10,000 invoices, while the other had stopped)."""
    out: list[tuple[int, int]] = []
    i, least = 0, min(least, most)
    while i < n:
        size = max(least, min(most, (n - i) // (2 * jobs)))
        out.append((i, min(n, i + size)))
        i += size
    return out


class _Workers:
    """Worker processes recomputing every invoice, a chunk of seq range per task,
    started before the caller reads the documents itself (the two overlap). A task
    that fails (a database error) leaves its invoices to the caller, which
    recomputes them and reports exactly as one process would."""

    def __init__(self, store: Store, conn: Any, jobs: int, chunk: int) -> None:
        seqs = [
            int(r[0])
            for r in conn.execute(
                text("SELECT seq FROM documents WHERE kind = 'invoice' ORDER BY seq")
            )
        ]
        self.pool = None
        self.futures: list[Any] = []
        if len(seqs) < PARALLEL_MIN:
            return
        bounds = [(seqs[i] - 1, seqs[j - 1]) for i, j in guided(len(seqs), chunk, jobs)]
        self.pool = workers.pool(store.url, jobs)
        self.futures = [self.pool.submit(_hashes, lo, hi) for lo, hi in bounds]

    def results(self) -> dict[str, Remote]:
        out: dict[str, Remote] = {}
        try:
            for future in self.futures:
                try:
                    out.update(future.result())
                except Exception:  # a database error in the worker: the caller recomputes
                    continue
        finally:
            self.close()
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


def verify(store: Store, number: str | None = None, jobs: int = 1) -> Report:
    """``jobs`` > 1: invoices are recomputed in that many worker processes when there
    are at least `PARALLEL_MIN` of them (the rest of the report is the same)."""
    from meterline.gcpause import gc_paused
    from meterline.services.invoicing import RECOMPUTE_CHUNK

    report = Report()
    with store.read() as conn:
        workers = (
            _Workers(store, conn, jobs, RECOMPUTE_CHUNK) if jobs > 1 and number is None else None
        )
        try:
            unaltered: set[str] = set()
            with gc_paused():  # what grows is held alive: see `gc_paused`
                docs = _readable(conn, report, number, unaltered, lazy=workers is not None)
            remote = {} if workers is None else workers.results()
        finally:
            if workers is not None:
                workers.close()
        previous = GENESIS
        ready: dict[str, Recomputed] = {}
        for i, entry in enumerate(docs):
            if isinstance(entry, _Envelope) and entry.number not in remote:
                lazy = entry
                try:  # left to this process: decoded now (bytes issued here always decode)
                    entry = docs[i] = lazy.stored.issued()
                except Exception as exc:
                    if number is None or number == lazy.number:
                        report.check(
                            f"{lazy.number} readable",
                            False,
                            f"documents seq {lazy.stored.seq} cannot be read "
                            f"({type(exc).__name__}: {exc})",
                        )
                    entry = docs[i] = _Unreadable(lazy.number, lazy.document_hash)
            if remote:
                pass  # recomputed by the workers; what they left is recomputed below
            elif i % RECOMPUTE_CHUNK == 0:
                with gc_paused():
                    ready = recompute_many(
                        conn,
                        [
                            d
                            for d in docs[i : i + RECOMPUTE_CHUNK]
                            if isinstance(d, Issued) and (number is None or d.number == number)
                        ],
                    )
            if isinstance(entry, _Unreadable):
                previous = entry.document_hash
                continue
            doc = entry
            selected = number is None or doc.number == number
            if selected:
                stored_ok = doc.number in unaltered or (
                    isinstance(doc, Issued) and body_hash(doc.body) == doc.content_hash
                )
                content_hash = (
                    doc.stored.content_hash if isinstance(doc, _Envelope) else (doc.content_hash)
                )
                answer = remote.get(doc.number, ("again", "", 0))
                cutoff = answer[2] if isinstance(doc, _Envelope) else doc.body.cutoff_seq
                try:
                    if answer[0] == "error":
                        raise _Refused(answer[1])
                    if answer[0] == "hash":
                        got_hash = answer[1]
                    else:
                        assert isinstance(doc, Issued)
                        again = ready.get(doc.number)
                        if isinstance(again, MeterlineError):
                            raise again
                        if again is None:
                            with conn.begin_nested():
                                again = recompute(conn, doc)
                        got_hash = body_hash(again)
                    reproduced = got_hash == content_hash
                    detail = (
                        f"reproduces at cutoff seq {cutoff}"
                        if reproduced
                        else (
                            f"recomputed at cutoff seq {cutoff} the content hash is "
                            f"{got_hash}, not {content_hash}"
                        )
                    )
                except _Refused as exc:
                    reproduced, detail = False, f"cannot recompute: {exc}"
                except MeterlineError as exc:
                    reproduced, detail = False, f"cannot recompute: {exc}"
                except Exception as exc:  # a corrupted fact it depends on: report, go on
                    reproduced = False
                    detail = f"cannot recompute: {type(exc).__name__}: {exc}"
                report.check(
                    f"{doc.number} body unaltered",
                    stored_ok,
                    "stored body matches its content hash"
                    if stored_ok
                    else "stored body does not match its content hash: altered after issue",
                )
                report.check(f"{doc.number} reproduces", reproduced, detail)
            envelope = doc.fields if isinstance(doc, _Envelope) else doc.envelope()
            linked = doc.previous_hash == previous and chain_hash(envelope) == doc.document_hash
            if selected or not linked:
                report.check(
                    f"{doc.number} chain",
                    linked,
                    "linked to the previous document"
                    if linked
                    else "hash chain broken at this document",
                )
            previous = doc.document_hash
        if number is not None and not any(d.number == number for d in docs):
            report.check(f"{number} exists", False, f"no issued document {number}")
    return report
