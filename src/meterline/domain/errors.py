"""Stable error codes.

Codes are part of the public contract (DESIGN §3, §12): scripts match on them,
so a code is never renamed. Messages are for people and may change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # ingestion (DESIGN §3)
    INVALID_JSON = "INVALID_JSON"
    MISSING_FIELD = "MISSING_FIELD"
    INVALID_FIELD = "INVALID_FIELD"
    INVALID_EVENT_TIME = "INVALID_EVENT_TIME"
    EVENT_IN_FUTURE = "EVENT_IN_FUTURE"
    EVENT_TOO_OLD = "EVENT_TOO_OLD"
    EVENT_ID_CONFLICT = "EVENT_ID_CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INVALID_PROPERTY = "INVALID_PROPERTY"
    EVENT_NOT_FOUND = "EVENT_NOT_FOUND"
    # Inclusion proofs (DESIGN §2): the event was recorded after the document's
    # cutoff, or the document predates the Merkle log and records no tree head.
    EVENT_AFTER_CUTOFF = "EVENT_AFTER_CUTOFF"
    NO_TREE_HEAD = "NO_TREE_HEAD"
    # ingestion bounds (issue 11): see docs/SEMANTICS.md "Hostile input"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_TEXT = "INVALID_TEXT"
    NESTING_TOO_DEEP = "NESTING_TOO_DEEP"
    STORE_REJECTED = "STORE_REJECTED"
    # input files
    INVALID_INPUT = "INVALID_INPUT"
    # catalog and pricing (DESIGN §5)
    INVALID_CATALOG = "INVALID_CATALOG"
    PRICE_VERSION_IMMUTABLE = "PRICE_VERSION_IMMUTABLE"
    NO_PRICE_FOR_DATE = "NO_PRICE_FOR_DATE"
    RETROACTIVE_VERSION_REQUIRED = "RETROACTIVE_VERSION_REQUIRED"
    UNKNOWN_METER = "UNKNOWN_METER"
    # invoicing (DESIGN §7)
    UNKNOWN_CUSTOMER = "UNKNOWN_CUSTOMER"
    # entitlements (DESIGN §13)
    UNKNOWN_FEATURE = "UNKNOWN_FEATURE"
    NO_SUBSCRIPTION = "NO_SUBSCRIPTION"
    PERIOD_NOT_CLOSED = "PERIOD_NOT_CLOSED"
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    INVALID_STATUS_CHANGE = "INVALID_STATUS_CHANGE"
    INVOICE_RUN_INCOMPLETE = "INVOICE_RUN_INCOMPLETE"
    INVOICE_FAILED = "INVOICE_FAILED"
    INVALID_DOCUMENT = "INVALID_DOCUMENT"
    # store
    STORE_NOT_INITIALISED = "STORE_NOT_INITIALISED"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    # usage
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    # webhooks and exports (DESIGN §14, §7)
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    EXPORT_PRECISION = "EXPORT_PRECISION"
    # credit grants (DESIGN §13)
    CREDIT_GRANT_NOT_FOUND = "CREDIT_GRANT_NOT_FOUND"
    CREDIT_GRANT_EXISTS = "CREDIT_GRANT_EXISTS"
    CREDIT_GRANT_VOID = "CREDIT_GRANT_VOID"
    # command line and renderings (newcomer)
    OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"
    DEPENDENCY_MISSING = "DEPENDENCY_MISSING"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class MeterlineError(Exception):
    """An expected failure with a stable code: shown as one line, never a traceback."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
