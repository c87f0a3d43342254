"""Feeds billing/finance.py from the store: the customer and seller as known at
a document's cutoff, so a later catalog change never alters what was sent."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.engine import Connection

from meterline.billing.body import Body
from meterline.billing.document import Issued
from meterline.billing.finance import finance_details
from meterline.domain.errors import MeterlineError
from meterline.store.customer_catalog import load_customer
from meterline.store.seller_catalog import load_seller


def details(conn: Connection, body: Body, issued_at: str | None) -> dict[str, Any]:
    k = body.cutoff_seq
    try:
        customer = load_customer(conn, body.customer_id, k)
    except MeterlineError:
        customer = None
    return finance_details(body, issued_at, load_seller(conn, k), customer)


def with_finance(conn: Connection, doc: Issued) -> Issued:
    return dataclasses.replace(doc, finance=details(conn, doc.body, doc.issued_at))
