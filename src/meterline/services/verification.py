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

from msgspec import structs

from meterline.billing import body as typed
from meterline.billing.document import GENESIS, Issued, Kind, body_hash, chain_hash
from meterline.domain.canonical import digest
from meterline.domain.errors import MeterlineError
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
    conn: Any, report: Report, number: str | None, unaltered: set[str] | None = None
) -> list[Issued]:
    """The documents, read in chunks: a row that cannot be read (a body that is not
    JSON, a kind or instant out of range) fails a check that names it.

    ``unaltered`` collects the numbers whose stored bytes hash to their content hash:
    the bytes hashed at issue, so re-encoding the decoded body gives them again
    (encode(decode(b)) == b for every canonical body, billing/body.py)."""
    out: list[Issued] = []
    for seq, doc_number, document_hash, got, stored in documents.read_all_stored(conn):
        if isinstance(got, Exception):
            if number is None or number == doc_number:
                report.check(
                    f"{doc_number} readable",
                    False,
                    f"documents seq {seq} cannot be read ({type(got).__name__}: {got})",
                )
            out.append(_Unreadable(doc_number, document_hash))  # type: ignore[arg-type]
        else:
            out.append(got)
            if unaltered is not None and digest(stored) == got.content_hash:
                unaltered.add(doc_number)
    return out


@dataclass
class _Unreadable:
    number: str
    document_hash: str


def verify(store: Store, number: str | None = None) -> Report:
    from meterline.gcpause import gc_paused
    from meterline.services.invoicing import RECOMPUTE_CHUNK

    report = Report()
    with store.read() as conn:
        unaltered: set[str] = set()
        with gc_paused():  # what grows is held alive: see `gc_paused`
            docs = _readable(conn, report, number, unaltered)
        previous = GENESIS
        ready: dict[str, Recomputed] = {}
        for i, doc in enumerate(docs):
            if i % RECOMPUTE_CHUNK == 0:
                with gc_paused():
                    ready = recompute_many(
                        conn,
                        [
                            d
                            for d in docs[i : i + RECOMPUTE_CHUNK]
                            if isinstance(d, Issued) and (number is None or d.number == number)
                        ],
                    )
            if isinstance(doc, _Unreadable):
                previous = doc.document_hash
                continue
            selected = number is None or doc.number == number
            if selected:
                stored_ok = doc.number in unaltered or body_hash(doc.body) == doc.content_hash
                try:
                    again = ready.get(doc.number)
                    if isinstance(again, MeterlineError):
                        raise again
                    if again is None:
                        with conn.begin_nested():
                            again = recompute(conn, doc)
                    reproduced = body_hash(again) == doc.content_hash
                    detail = (
                        f"reproduces at cutoff seq {doc.body.cutoff_seq}"
                        if reproduced
                        else (
                            f"recomputed at cutoff seq {doc.body.cutoff_seq} the content hash is "
                            f"{body_hash(again)}, not {doc.content_hash}"
                        )
                    )
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
            envelope = {
                "number": doc.number,
                "kind": str(doc.kind),
                "content_hash": doc.content_hash,
                "previous_hash": doc.previous_hash,
                "issued_at": doc.issued_at,
                "forced": doc.forced,
            }
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
