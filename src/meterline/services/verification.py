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
from sqlalchemy import text

from meterline.billing import body as typed
from meterline.billing.document import GENESIS, Issued, Kind, body_hash, chain_hash
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
    from meterline.services import corrections, invoicing

    body = doc.body
    if doc.kind == Kind.INVOICE:
        again = invoicing.compute_typed(
            conn, body.customer_id, body.period.label, body.cutoff_seq, body.doc_format
        )
    else:
        again = corrections.recompute_note(conn, doc)
    if body.tree_head is typed.UNSET:  # issued before the Merkle log: no tree head
        again = structs.replace(again, tree_head=typed.UNSET)
    return again


def _readable(conn: Any, report: Report, number: str | None) -> list[Issued]:
    """The documents, each read on its own: a row that cannot be read (a body that is
    not JSON, a kind or instant out of range) fails a check that names it."""
    out: list[Issued] = []
    rows = conn.execute(text("SELECT seq, number, document_hash FROM documents ORDER BY seq")).all()
    for seq, doc_number, document_hash in rows:
        try:
            with conn.begin_nested():
                out.append(documents.get(conn, str(doc_number)))
        except Exception as exc:
            if number is None or number == str(doc_number):
                report.check(
                    f"{doc_number} readable",
                    False,
                    f"documents seq {seq} cannot be read ({type(exc).__name__}: {exc})",
                )
            out.append(_Unreadable(str(doc_number), str(document_hash)))  # type: ignore[arg-type]
    return out


@dataclass
class _Unreadable:
    number: str
    document_hash: str


def verify(store: Store, number: str | None = None) -> Report:
    report = Report()
    with store.read() as conn:
        docs = _readable(conn, report, number)
        previous = GENESIS
        for doc in docs:
            if isinstance(doc, _Unreadable):
                previous = doc.document_hash
                continue
            selected = number is None or doc.number == number
            if selected:
                stored_ok = body_hash(doc.body) == doc.content_hash
                try:
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
