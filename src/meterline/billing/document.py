"""Documents: invoices, credit notes and debit notes (DESIGN §7, §8).

A document has a *body* (everything computed from the store as known at its
cutoff) and an *envelope* (number, status, issue time, chain). The body's
`content_hash` is what verification reproduces; the envelope's
`document_hash` links each issued document to the previous one, so editing,
removing or reordering issued documents breaks the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterline.billing.body import Body, encode, encode_bytes
from meterline.domain.canonical import content_hash, digest
from meterline.domain.decimals import fmt
from meterline.domain.money import Currency, money_str


class Kind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"
    DEBIT_NOTE = "debit_note"

    @property
    def prefix(self) -> str:
        return {"invoice": "INV", "credit_note": "CN", "debit_note": "DN"}[self.value]


class Status(StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    PAID = "paid"
    VOID = "void"


GENESIS = "0" * 64

FORMAT = 2
"""The document format new documents are issued in. Format 1 (no ``format``
field): lines carry an events digest over their sorted event keys, recomputed
from raw events. Format 2: usage comes from the bitemporal usage index, lines
carry their event count, no digest, and the body records the Merkle log's tree
head at its cutoff (DESIGN §2, §4, §7)."""


def format_of(body: dict[str, Any] | Body) -> int:
    """The format a document was issued under (absent = 1)."""
    if isinstance(body, Body):
        return body.doc_format
    return int(body.get("format", 1))


def with_format(body: dict[str, Any], fmt: int) -> dict[str, Any]:
    """Mark a body with its format (format 1 bodies carry no field, as issued)."""
    if fmt >= 2:
        body["format"] = fmt
    return body


def number_text(kind: Kind, n: int) -> str:
    return f"{kind.prefix}-{n:06d}"


def money(amount: Decimal, currency: Currency) -> str:
    return money_str(amount, currency)


def quantity(value: Decimal) -> str:
    return fmt(value)


def body_hash(body: dict[str, Any] | Body) -> str:
    """The content hash: sha256 of the body's canonical JSON."""
    if isinstance(body, Body):
        return digest(encode_bytes(body))
    return content_hash(body)


def chain_hash(envelope: dict[str, Any]) -> str:
    """Hash of the envelope fields that must never change after issue."""
    return content_hash(
        {
            k: envelope[k]
            for k in ("number", "kind", "content_hash", "previous_hash", "issued_at", "forced")
        }
    )


@dataclass(frozen=True)
class Issued:
    """What the store keeps for an issued document."""

    number: str
    kind: Kind
    body: Body  # typed (billing/body.py); JSON only in to_dict
    content_hash: str
    previous_hash: str
    document_hash: str
    issued_at: str
    forced: bool
    status: Status = Status.ISSUED
    finance: dict[str, Any] | None = None  # billing/finance.py; not part of the body

    def envelope(self) -> dict[str, Any]:
        """The fields the chain hash covers (`chain_hash`)."""
        return {
            "number": self.number,
            "kind": str(self.kind),
            "content_hash": self.content_hash,
            "previous_hash": self.previous_hash,
            "issued_at": self.issued_at,
            "forced": self.forced,
        }

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape (DESIGN §12): body plus envelope (plus, when the
        store supplied it, the finance block: seller, dates, terms; not hashed)."""
        out = {
            "number": self.number,
            "kind": str(self.kind),
            "status": str(self.status),
            **encode(self.body),
            "forced": self.forced,
            "issued_at": self.issued_at,
            "content_hash": self.content_hash,
            "previous_hash": self.previous_hash,
            "document_hash": self.document_hash,
        }
        if self.finance is not None:
            out["finance"] = self.finance
        return out


def draft_dict(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": None,
        "kind": body["kind"],
        "status": str(Status.DRAFT),
        **body,
        "content_hash": body_hash(body),
    }
