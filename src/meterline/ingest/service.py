"""Batch ingestion: validate, fold in-batch duplicates, append atomically.

Input is cut into batches; each batch is stored atomically, in a transaction of
its own or, when writers queue at once, in a savepoint of a shared one
(store/group_commit.py). A crash loses at most the batches in flight, and
re-sending them stores nothing twice, because every event is deduplicated on
(source, event_id) against the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from time import perf_counter
from typing import Any

from sqlalchemy.engine import Connection

from meterline.domain.clock import Clock
from meterline.domain.errors import ErrorCode
from meterline.domain.events import (
    DEFAULT_SOURCE,
    Event,
    Limits,
    Rejection,
    validate_bytes,
    validate_object,
)
from meterline.domain.timestamps import from_datetime
from meterline.gcpause import gc_paused
from meterline.ingest.readers import Item
from meterline.services import alerts
from meterline.store import audit, webhook_facts
from meterline.store.database import Store, is_transient
from meterline.store.event_log import (
    AppendResult,
    BatchHeader,
    Candidate,
    Reject,
    append_batch,
    storable_text,
)
from meterline.store.group_commit import GroupCommit
from meterline.store.meter_catalog import MeterCatalog
from meterline.store.partitions import Partitions, month_of
from meterline.store.window_index import WindowIndex, check_properties

log = logging.getLogger("meterline.ingest")

DEFAULT_BATCH_SIZE = 20_000

# A check beyond the event rules, given the catalog in force (metered
# properties): returns a rejection or None.
EventCheck = Callable[[Event], Rejection | None]


@dataclass(frozen=True)
class IngestOptions:
    source: str = DEFAULT_SOURCE
    backfill: bool = False
    origin: str = "api"
    limits: Limits = field(default_factory=Limits)
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass(frozen=True)
class RejectInfo:
    index: int
    code: str
    message: str
    line: int = 0


@dataclass
class IngestReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects: list[RejectInfo] = field(default_factory=list)
    batches: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejects": [
                {"index": r.index, "code": r.code, "message": r.message}
                | ({"line": r.line} if r.line else {})
                for r in self.rejects
            ],
        }


@dataclass
class PreparedBatch:
    candidates: list[Candidate]
    rejects: list[Reject]
    # Later occurrences of a key already in `candidates`: duplicate or
    # conflict is decided when storing, against the event kept for the key.
    repeats: list[Candidate] = field(default_factory=list)


def prepare(
    items: list[tuple[int, Item]],
    now_us: int,
    options: IngestOptions,
    check: EventCheck | None = None,
) -> PreparedBatch:
    """Validate a batch and fold repeated keys inside it (first occurrence wins)."""
    candidates: list[Candidate] = []
    rejects: list[Reject] = []
    repeats: list[Candidate] = []
    seen: set[tuple[str, str]] = set()
    limits, source, backfill = options.limits, options.source, options.backfill
    for index, item in items:
        outcome: Event | Rejection
        if item.error is not None:
            outcome = Rejection(*item.error)
        elif item.decoded:
            if len(item.raw) > limits.max_event_bytes:
                outcome = Rejection(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"event is {len(item.raw)} bytes; the limit is {limits.max_event_bytes}",
                )
            else:
                outcome = validate_object(
                    item.obj, now_us=now_us, default_source=source, limits=limits, backfill=backfill
                )
        else:
            outcome = validate_bytes(
                item.raw, now_us=now_us, default_source=source, limits=limits, backfill=backfill
            )
        if check is not None and isinstance(outcome, Event):
            outcome = check(outcome) or outcome
        if isinstance(outcome, Rejection):
            rejects.append(Reject(index, None, outcome.code, outcome.message, item.raw))
            continue
        key = (outcome.source, outcome.event_id)
        if key in seen:
            repeats.append(Candidate(index, outcome, item.raw))
        else:
            seen.add(key)
            candidates.append(Candidate(index, outcome, item.raw))
    return PreparedBatch(candidates, rejects, repeats)


def _batches(items: Iterable[Item], size: int) -> Iterator[list[tuple[int, Item]]]:
    it = enumerate(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class IngestTimings:
    """Seconds spent per phase, summed over every `ingest` call (for benchmarks)."""

    validate: float = 0.0
    write: float = 0.0
    index: float = 0.0


class Ingestor:
    """Ingests into one store. Keeps per-store caches (PostgreSQL partitions, meters)."""

    def __init__(self, store: Store, clock: Clock, index: WindowIndex | None = None) -> None:
        self.store = store
        self.clock = clock
        self.index = index
        self.timings = IngestTimings()
        self._partitions = Partitions()
        # The writers of this process (a server's requests) queue here; when the
        # store is free the first in line writes every batch queued behind it in
        # one transaction (store/group_commit.py). On SQLite, waiting inside its
        # busy handler instead slept in steps of up to 100 ms and left the file idle.
        self.writer = GroupCommit(store)
        self._checks = MeterCatalog()

    def ingest(
        self,
        items: Iterable[Item],
        options: IngestOptions,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Ingest `items` batch by batch, in order, each batch validated then
        written. (Validating the next batch in a second thread while one is
        written was measured and dropped: the validator held the GIL whenever the
        writer came back from the database, and the writer's share grew by more
        than the overlap saved, docs/PERFORMANCE.md.)"""
        report = IngestReport()
        for chunk in _batches(items, options.batch_size):
            with gc_paused():
                self._ingest_chunk(chunk, options, report)
            if progress is not None:
                progress(len(chunk))
        return report

    def _ingest_chunk(
        self, chunk: list[tuple[int, Item]], options: IngestOptions, report: IngestReport
    ) -> None:
        """Store one chunk; if the database refuses it for a reason that is not
        transient, store its halves separately, down to the one event that
        cannot be stored, which is quarantined (STORE_REJECTED). A bad event
        never takes its batch with it; a store that is down still raises."""
        try:
            self._store_chunk(chunk, options, report)
        except Exception as exc:
            self._isolate(chunk, exc, options, report)

    def _isolate(
        self,
        chunk: list[tuple[int, Item]],
        exc: Exception,
        options: IngestOptions,
        report: IngestReport,
    ) -> None:
        """After `chunk` failed to store with `exc`: raise if the store is at fault,
        else store its halves, or quarantine the one event the database refuses."""
        if is_transient(exc):
            raise exc
        if len(chunk) > 1:
            middle = len(chunk) // 2
            self._ingest_chunk(chunk[:middle], options, report)
            self._ingest_chunk(chunk[middle:], options, report)
            return
        self._quarantine_unstorable(chunk[0], exc, options, report)

    def _store_chunk(
        self, chunk: list[tuple[int, Item]], options: IngestOptions, report: IngestReport
    ) -> None:
        now_us, batch = self._prepare(chunk, options)
        self.store_batch(chunk, batch, now_us, options, report)

    def _prepare(
        self, chunk: list[tuple[int, Item]], options: IngestOptions
    ) -> tuple[int, PreparedBatch]:
        """Validate a chunk at the clock's current time, against the metered
        properties of the catalog in force. The catalog of these checks is not the
        index's: validation may run in another thread than the write (`ingest`, a
        server's requests), and the write's fold must see exactly the meters of
        its own transaction."""
        with gc_paused():
            now_us = from_datetime(self.clock.now())
            check: EventCheck | None = None
            if self.index is not None:
                with self.store.read() as conn:
                    self._checks.refresh(conn)
                check = partial(check_properties, self._checks) if self._checks.by_type else None
            t0 = perf_counter()
            batch = prepare(chunk, now_us, options, check)
            self.timings.validate += perf_counter() - t0
        return now_us, batch

    def store_batch(
        self,
        chunk: list[tuple[int, Item]],
        batch: PreparedBatch,
        now_us: int,
        options: IngestOptions,
        report: IngestReport,
    ) -> None:
        """The write phase of one prepared batch: events, index, audit and webhook
        outbox in one transaction, then the batch's outcome added to `report`.
        The one write path, shared by the serial and the parallel ingestor."""
        with gc_paused():
            if self.store.is_postgres and batch.candidates:
                months = {month_of(c.event.event_time) for c in batch.candidates}
                self._partitions.ensure(self.store.engine, months)
            header = BatchHeader(now_us, options.origin, options.source, options.backfill)
            t0 = perf_counter()
            index_before = self.timings.index
            result = self.writer.run(partial(self._write, header, batch), weight=len(chunk))
            # The commit is a write; in a group, every member's time is the group's.
            self.timings.write += perf_counter() - t0 - (self.timings.index - index_before)
        self._account(report, chunk, batch, result)

    def _write(self, header: BatchHeader, batch: PreparedBatch, conn: Connection) -> AppendResult:
        """One batch's writes: events, index, audit, webhook outbox and alerts."""
        result = append_batch(conn, header, batch.candidates, batch.rejects, 0, batch.repeats)
        if self.index is not None:
            t0 = perf_counter()
            self.index(conn, header, result)
            self.timings.index += perf_counter() - t0
        audit.ingest_batch(conn, result, len(batch.rejects), header.origin, header.received_at)
        webhook_facts.ingest_batch(conn, header, result, batch.rejects, header.received_at)
        alerts.on_ingest(conn, result, header.received_at)
        return result

    def _quarantine_unstorable(
        self, entry: tuple[int, Item], exc: Exception, options: IngestOptions, report: IngestReport
    ) -> None:
        index, item = entry
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        message = f"the store refused this event ({type(exc).__name__}: {reason})"
        log.warning("quarantined an event the store refused (item %d): %s", index, message)
        now_us = from_datetime(self.clock.now())
        header = BatchHeader(now_us, options.origin, options.source, options.backfill)
        reject = Reject(index, None, ErrorCode.STORE_REJECTED, message, item.raw)
        with self.store.write() as conn:
            result = append_batch(conn, header, [], [reject], 0)
            audit.ingest_batch(conn, result, 1, options.origin, now_us)
            webhook_facts.ingest_batch(conn, header, result, [reject], now_us)
        report.batches += 1
        report.rejected += 1
        report.rejects.append(RejectInfo(index, str(reject.code), message, item.line))

    @staticmethod
    def _account(
        report: IngestReport,
        chunk: list[tuple[int, Item]],
        batch: PreparedBatch,
        result: AppendResult,
    ) -> None:
        lines = {index: item.line for index, item in chunk}
        rejects = sorted([*batch.rejects, *result.conflicts], key=lambda r: r.position)
        report.batches += 1
        report.accepted += len(result.accepted)
        report.duplicates += result.duplicates
        report.rejected += len(rejects)
        report.rejects.extend(
            RejectInfo(r.position, str(r.code), storable_text(r.message), lines.get(r.position, 0))
            for r in rejects
        )
        if result.accepted:
            if report.first_seq is None:
                report.first_seq = result.accepted[0][0]
            report.last_seq = result.accepted[-1][0]
