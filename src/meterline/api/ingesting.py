"""The blocking half of the ingest endpoints: decode, validate, store.

Runs in a worker thread (never on the event loop). Everything goes through the
Ingestor built by `wiring.ingestor_for`, so the API stores events exactly as
the CLI does, with the same hooks.
"""

from __future__ import annotations

from dataclasses import replace

from meterline.api.cloudevents import CloudEventError, split_cloudevents, to_native
from meterline.api.context import StoreHandle
from meterline.api.native import split_body
from meterline.domain.timestamps import from_datetime
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions, IngestReport, RejectInfo
from meterline.store import webhook_facts
from meterline.store.event_log import BatchHeader, Reject, append_batch


def ingest_native(
    handle: StoreHandle, body: bytes, media_type: str, options: IngestOptions
) -> IngestReport:
    items = split_body(body, media_type)
    return handle.ingestor().ingest(items, options)


def ingest_cloudevents(
    handle: StoreHandle, body: bytes, batch: bool | None, options: IngestOptions
) -> IngestReport:
    """Map each CloudEvent and ingest the valid ones; the ones that cannot even
    be mapped are quarantined too, so nothing a producer sent is lost."""
    raws = split_cloudevents(body, batch)
    items: list[Item] = []
    positions: list[int] = []
    unmappable: list[Reject] = []
    for index, raw in enumerate(raws):
        mapped = to_native(raw)
        if isinstance(mapped, CloudEventError):
            unmappable.append(Reject(index, mapped.source, mapped.code, mapped.message, raw))
        else:
            items.append(Item(raw, 0, mapped))
            positions.append(index)
    ingestor = handle.ingestor()
    report = ingestor.ingest(items, options) if items else IngestReport()
    rejects = [replace(r, index=positions[r.index]) for r in report.rejects]
    if unmappable:
        now_us = from_datetime(handle.clock.now())
        header = BatchHeader(now_us, options.origin, options.source, options.backfill)
        with ingestor.store.write() as conn:
            result = append_batch(conn, header, [], unmappable, 0)
            webhook_facts.ingest_batch(conn, header, result, unmappable, now_us)
        rejects += [RejectInfo(r.position, str(r.code), r.message) for r in unmappable]
    rejects.sort(key=lambda r: r.index)
    return IngestReport(
        accepted=report.accepted,
        duplicates=report.duplicates,
        rejected=len(rejects),
        rejects=rejects,
        batches=report.batches,
        first_seq=report.first_seq,
        last_seq=report.last_seq,
    )
