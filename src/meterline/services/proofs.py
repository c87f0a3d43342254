"""`prove`: an inclusion proof that an event is in the log a document commits to.

An issued document records the log's tree head at its cutoff (size K, root).
For an event known at that cutoff (seq <= K), the proof is the RFC 6962 audit
path of its leaf (index seq - 1) in the tree of K leaves. Anyone holding the
event's fields can recompute its content hash and check the path with SHA-256
alone (docs/PROOFS.md has the verifier), without trusting meterline.
"""

from __future__ import annotations

from typing import Any

from msgspec import UnsetType
from sqlalchemy import text

from meterline.domain import merkle as tree
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us
from meterline.store import documents, merkle
from meterline.store.database import Store


def prove(store: Store, number: str, event_id: str, source: str | None = None) -> dict[str, Any]:
    """The proof as JSON (hashes in lowercase hex), the shape of `prove --json`."""
    with store.read() as conn:
        doc = documents.get(conn, number)
        head = doc.body.tree_head
        if isinstance(head, UnsetType):
            raise MeterlineError(
                ErrorCode.NO_TREE_HEAD,
                f"{number} was issued before the Merkle log and records no tree head; "
                "`verify` still reproduces it, but it commits to no root to prove against",
            )
        size, root = head.size, head.root
        kind = merkle.FACT_KINDS[0]
        sql = f"SELECT {', '.join(kind.columns())} FROM events WHERE event_id = :e"
        params: dict[str, Any] = {"e": event_id}
        if source is not None:
            sql += " AND source = :s"
            params["s"] = source
        rows = conn.execute(text(sql + " ORDER BY seq"), params).all()
        named = f"({source}, {event_id})" if source is not None else repr(event_id)
        if not rows:
            raise MeterlineError(ErrorCode.EVENT_NOT_FOUND, f"no event {named} in the log")
        if len(rows) > 1:
            sources = ", ".join(str(r[1]) for r in rows[:5])
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT,
                f"event id {event_id!r} exists in several sources ({sources}): give --source",
            )
        row = rows[0]
        seq = int(row[0])
        if seq > size:
            raise MeterlineError(
                ErrorCode.EVENT_AFTER_CUTOFF,
                f"event {named} was recorded at seq {seq}, after {number}'s cutoff (seq {size}): "
                "the document was not computed from it",
            )
        try:
            content = merkle.fact_hash(kind, row)
        except merkle.RowError as exc:
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT, f"event {named} is unreadable: {exc}"
            ) from None
        proof = merkle.prove(conn, seq, size, content)
        retracted = conn.execute(
            text("SELECT seq FROM retractions WHERE source = :s AND event_id = :e AND seq <= :k"),
            {"s": row[1], "e": row[2], "k": size},
        ).first()
    return {
        "document": number,
        "event": {
            "source": row[1],
            "event_id": row[2],
            "customer_id": row[3],
            "event_type": row[4],
            "event_time": format_us(int(row[5])),
            "event_time_us": int(row[5]),
            "properties": str(row[6]),
        },
        "seq": seq,
        "retracted_at_cutoff": retracted is not None,
        "leaf_index": proof.leaf_index,
        "content_hash": proof.content_hash.hex(),
        "leaf_hash": proof.leaf_hash.hex(),
        "audit_path": [h.hex() for h in proof.path],
        "tree_size": size,
        "root": root,
        # The path, checked against the document's root: false when the event's row
        # or the stored nodes were altered since (`reconcile` names which).
        "verified": _checks(proof, root),
    }


def _checks(proof: merkle.Proof, root: str) -> bool:
    try:
        expected = bytes.fromhex(root)
    except ValueError:
        return False
    return tree.verify_inclusion(
        proof.leaf_index, proof.tree_size, proof.leaf_hash, proof.path, expected
    )
