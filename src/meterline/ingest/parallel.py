"""`ingest --workers N`: validation in N worker processes, one writer in this one.

Validation (JSON decoding, RFC 3339, canonical JSON, SHA-256) is pure and per
batch, so it parallelises; storing is not: seq values must be handed out in
input order and the window index folds batches in that order. So the parent
cuts the input into the same batches as the serial path, numbers every item
with its global position, sends each batch to a worker (`prepare`, the serial
path's own function), and stores the prepared batches strictly in input order
with the serial path's own store functions. The outcome (counts, rejects with
their positions and lines, seq order) is the serial outcome.

Spawn-safe: the worker entry points are module-level functions and everything
sent to a worker is plain data (bytes, ints, decoded JSON values), so this runs
under the `spawn` start method on every platform. At most `2 * workers` batches
are in flight, so memory stays bounded on a file of any size.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from itertools import islice
from time import perf_counter
from typing import Any

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event
from meterline.domain.timestamps import from_datetime
from meterline.gcpause import gc_paused
from meterline.ingest.readers import Item
from meterline.ingest.service import (
    EventCheck,
    IngestOptions,
    Ingestor,
    IngestReport,
    PreparedBatch,
    prepare,
)
from meterline.store.database import Store, is_transient, open_store
from meterline.store.event_log import Candidate, Reject
from meterline.store.meter_catalog import MeterCatalog
from meterline.store.window_index import check_properties

# (position, raw, line, decoded, obj): an Item as plain picklable data. Item's
# "not decoded" sentinel is an identity, which would not survive pickling.
WireItem = tuple[int, bytes, int, bool, Any]

# A Candidate on its way back: (position, source, event_id, customer_id,
# event_type, event_time, properties, content_hash, parsed, raw). Plain tuples
# pickle in C; the frozen, slotted dataclasses pickle through Python-level
# __getstate__/__setstate__ per object, which made the parent's unpickling of
# a batch (~4 µs per event) cost nearly what validating it had cost the worker.
WireCandidate = tuple[int, str, str, str, str, int, str, str, Any, bytes]
WireBatch = tuple[list[WireCandidate], list[Reject], list[WireCandidate]]


def _to_wire(candidates: list[Candidate]) -> list[WireCandidate]:
    return [
        (
            c.position,
            e.source,
            e.event_id,
            e.customer_id,
            e.event_type,
            e.event_time,
            e.properties,
            e.content_hash,
            e.parsed,
            c.raw,
        )
        for c in candidates
        for e in (c.event,)
    ]


def _from_wire(wire: list[WireCandidate]) -> list[Candidate]:
    return [
        Candidate(pos, Event(source, event_id, customer, event_type, at, props, h, parsed), raw)
        for pos, source, event_id, customer, event_type, at, props, h, parsed, raw in wire
    ]


def _batch_from_wire(wire: WireBatch) -> PreparedBatch:
    candidates, rejects, repeats = wire
    return PreparedBatch(_from_wire(candidates), rejects, _from_wire(repeats))


@dataclass(frozen=True)
class _WorkerState:
    store: Store
    catalog: MeterCatalog
    options: IngestOptions


_state: _WorkerState | None = None


def _init_worker(store_url: str, options: IngestOptions) -> None:
    """Runs once in each worker process: its own store handle and meter cache."""
    global _state
    _state = _WorkerState(open_store(store_url), MeterCatalog(), options)


def _prepare_in_worker(wire: list[WireItem], now_us: int, with_check: bool) -> WireBatch:
    state = _state
    assert state is not None, "worker not initialised"
    chunk = [
        (pos, Item(raw, line, obj) if decoded else Item(raw, line))
        for pos, raw, line, decoded, obj in wire
    ]
    check: EventCheck | None = None
    if with_check:
        with state.store.read() as conn:
            state.catalog.refresh(conn)
        check = partial(check_properties, state.catalog) if state.catalog.by_type else None
    with gc_paused():
        batch = prepare(chunk, now_us, state.options, check)
        return (_to_wire(batch.candidates), batch.rejects, _to_wire(batch.repeats))


def _wire(chunk: list[tuple[int, Item]]) -> list[WireItem]:
    return [
        (pos, item.raw, item.line, item.decoded, item.obj if item.decoded else None)
        for pos, item in chunk
    ]


def _batches(items: Iterable[Item], size: int) -> Iterator[list[tuple[int, Item]]]:
    it = enumerate(items)
    while chunk := list(islice(it, size)):
        yield chunk


class ParallelIngestor:
    """Wraps the serial Ingestor: same store, index, partitions and accounting."""

    def __init__(self, ingestor: Ingestor, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.ingestor = ingestor
        self.workers = workers

    def ingest(
        self,
        items: Iterable[Item],
        options: IngestOptions,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        if self.workers == 1:
            return self.ingestor.ingest(items, options, progress)
        store = self.ingestor.store
        report = IngestReport()
        context = multiprocessing.get_context("spawn")
        in_flight: deque[tuple[list[tuple[int, Item]], int, Future[WireBatch]]] = deque()
        with ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(store.url, options),
        ) as pool:
            batches = _batches(items, options.batch_size)
            exhausted = False
            while True:
                while not exhausted and len(in_flight) < 2 * self.workers:
                    chunk = next(batches, None)
                    if chunk is None:
                        exhausted = True
                        break
                    now_us = from_datetime(self.ingestor.clock.now())
                    with_check = self.ingestor.index is not None
                    future = pool.submit(_prepare_in_worker, _wire(chunk), now_us, with_check)
                    in_flight.append((chunk, now_us, future))
                if not in_flight:
                    break
                chunk, now_us, future = in_flight.popleft()
                t0 = perf_counter()
                try:
                    with gc_paused():
                        batch = _batch_from_wire(future.result())
                except BrokenProcessPool as exc:
                    raise MeterlineError(
                        ErrorCode.STORE_UNAVAILABLE,
                        f"a validation worker process stopped ({exc}); committed batches "
                        "are kept, re-run to resume",
                    ) from None
                self.ingestor.timings.validate += perf_counter() - t0  # time waited
                try:
                    self.ingestor.store_batch(chunk, batch, now_us, options, report)
                except Exception as exc:
                    if is_transient(exc):
                        raise
                    # the serial path isolates the event the database refuses
                    self.ingestor._ingest_chunk(chunk, options, report)
                if progress is not None:
                    progress(len(chunk))
        return report
