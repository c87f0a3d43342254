"""The audit trail, read side: who did what, when (writes live in store/audit.py,
inside each change's transaction)."""

from __future__ import annotations

from typing import Any

from meterline.domain.timestamps import format_us
from meterline.store import audit as audit_store
from meterline.store.audit import acting_as, current_actor
from meterline.store.database import Store

__all__ = ["acting_as", "current_actor", "entries"]


def entries(
    store: Store, limit: int | None = None, action: str | None = None
) -> list[dict[str, Any]]:
    """Audit rows oldest first (the newest `limit` when given), JSON-ready."""
    with store.read() as conn:
        rows = audit_store.rows(conn, limit, action)
    return [r | {"at": format_us(r["at"])} for r in rows]
