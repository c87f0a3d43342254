"""Drill-down from an invoice line to its source events (DESIGN §7).

How a support engineer answers "I didn't make those calls": the line's events
as known at the document's cutoff, paged, with their count, which must equal
the line's event count (and, for format-1 documents, a digest recomputed over
all of them that must equal the digest printed on the invoice).
"""

from __future__ import annotations

import hashlib
from typing import Any

from msgspec import UnsetType

from meterline.billing.customers import Subscription
from meterline.billing.document import Issued
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.domain.timestamps import format_us, parse_rfc3339
from meterline.metering import dimensions, dimensions_dict, encode_dimensions, value_of
from meterline.services.invoicing import fetch_events
from meterline.store import documents
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters


def _line(doc: Issued, n: int) -> int:
    """The index of line `n` in the document's lines."""
    for i, line in enumerate(doc.body.lines):
        if line.line == n:
            return i
    raise MeterlineError(
        ErrorCode.INVALID_ARGUMENT,
        f"{doc.number} has no line {n} (lines 1..{len(doc.body.lines)})",
    )


def explain(
    store: Store,
    number: str,
    line: int | None = None,
    events: bool = False,
    limit: int = 50,
    offset: int = 0,
    count: bool = True,
) -> dict[str, Any]:
    """A document, one line's explanation, or one page of a line's source events as
    known at the cutoff. `count=False` (a browser page) stops reading once the page
    is full and takes the total from the line's event count instead of counting
    every event again (`count_matches` is then absent)."""
    with store.read() as conn:
        issued = documents.get(conn, number)
        body = issued.body
        doc = issued.to_dict()  # the public JSON shape this answers with
        header = {
            k: doc[k]
            for k in (
                "number",
                "kind",
                "customer_id",
                "currency",
                "period",
                "cutoff_seq",
                "corrects",
            )
        }
        if line is None:
            if events:
                raise MeterlineError(
                    ErrorCode.INVALID_ARGUMENT, "listing events needs a line number (line N)"
                )
            return header | {"lines": doc["lines"]}
        index = _line(issued, line)
        chosen, usage = body.lines[index], body.lines[index].usage
        out = header | {"line": doc["lines"][index]}
        if not events:
            return out
        if not chosen.meter or usage is None:
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT, f"line {line} is not metered: it has no source events"
            )
        k = body.cutoff_seq
        meter = {m.code: m for m in load_meters(conn, k)}[chosen.meter]
        wanted = encode_dimensions(tuple(chosen.dimensions.get(g) for g in meter.group_by))
        lo, hi = parse_rfc3339(body.period.start), parse_rfc3339(body.period.end)
        subs = [
            Subscription(
                s.price_book,
                parse_rfc3339(s.start),
                None if s.end is None else parse_rfc3339(s.end),
            )
            for s in body.subscriptions
            if s.price_book == chosen.price_book
        ]
        page: list[dict[str, Any]] = []
        digest = hashlib.sha256()
        keys: list[tuple[str, str]] = []
        total = 0
        for sub in subs:
            span = sub.active(lo, hi)
            if span is None:
                continue
            for ev in fetch_events(conn, body.customer_id, [meter.event_type], span[0], span[1], k):
                props = decode_json(ev.properties)
                try:
                    value = value_of(meter, props)
                    dims = encode_dimensions(dimensions(meter, props))
                except MeterlineError:
                    continue
                if dims != wanted:
                    continue
                if not count and total >= offset + limit:
                    break
                keys.append((ev.source, ev.event_id))
                if offset <= total < offset + limit:
                    page.append(
                        {
                            "source": ev.source,
                            "event_id": ev.event_id,
                            "event_time": format_us(ev.event_time),
                            "value": None if value is None else str(value),
                            "properties": props,
                            "dimensions": dimensions_dict(meter, dimensions(meter, props)),
                        }
                    )
                total += 1
        if not count:
            total = usage.event_count
            return out | {
                "events": page,
                "page": {"offset": offset, "limit": limit, "total": total},
            }
        listed = {
            "events": page,
            "page": {"offset": offset, "limit": limit, "total": total},
            "count_matches": total == usage.event_count,
        }
        if isinstance(usage.events_digest, UnsetType):
            return out | listed  # format 2: the line names its events by count
        for source, event_id in sorted(keys):
            digest.update(f"{source}\x1f{event_id}\n".encode())
        return (
            out
            | listed
            | {
                "digest": digest.hexdigest(),
                "digest_matches": digest.hexdigest() == usage.events_digest,
            }
        )
