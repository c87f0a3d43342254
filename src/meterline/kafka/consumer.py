"""The Kafka consumer-group worker (DESIGN §11): store the batch, THEN commit.

Loop: poll messages into a `BatchAccumulator` until it holds `batch_size`
messages or its oldest message waited `max_wait_ms`; ingest every item of the
batch through the `Ingestor` in ONE transaction; then commit, synchronously,
the exact offsets of the batch (per partition, last offset + 1).

- A crash between store and commit redelivers the batch; the store
  deduplicates on (source, event_id), so the effect is exactly once.
- Rejected events are quarantined by the ingestor, their messages are copied
  to the dead-letter topic with the reason in headers (`kafka.deadletter`),
  and their offsets are committed like any other: a bad message never blocks
  its partition. An event the database itself refuses is isolated by the
  ingestor (STORE_REJECTED); should a whole batch still fail for a reason
  that is not transient, its messages are stored one by one and those that
  fail go to the dead-letter topic.
- If storing fails for a transient reason (database down), the partitions of
  the batch are rewound to the batch's first offsets and the batch is retried
  with backoff; nothing after it is committed first.
- Rebalance: on revoke, stored-but-uncommitted offsets are committed and
  buffered (unstored) messages of the revoked partitions are dropped; the new
  owner reads them again from the committed offset. On loss, nothing can be
  committed: both are dropped.
- Stop (`stop()`, SIGTERM, SIGINT): finish the batch, commit, close.

Producers key messages by customer id (`meterline.kafka.message_key`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Literal, Protocol, cast

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from meterline.domain.errors import ErrorCode
from meterline.domain.events import DEFAULT_SOURCE
from meterline.ingest.service import (
    IngestOptions,
    Ingestor,
    IngestReport,
    RejectInfo,
)
from meterline.kafka.batching import (
    Batch,
    BatchAccumulator,
    OffsetBook,
    TopicPartitionKey,
    split_value,
)
from meterline.kafka.deadletter import (
    DeadLetterPublisher,
    ProducerFactory,
    ProducerLike,
    dead_letter_topic,
    dead_letters,
)
from meterline.store.database import is_transient

log = logging.getLogger("meterline.kafka")

ORIGIN = "kafka"
MAX_BACKOFF = 30.0
# Settings the worker's guarantees depend on: never overridable.
_FIXED = {"enable.auto.commit": False, "enable.auto.offset.store": False}


class KafkaConsumerLike(Protocol):
    """The part of `confluent_kafka.Consumer` the worker uses (tests may wrap it)."""

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[[Any, list[TopicPartition]], None] = ...,
        on_revoke: Callable[[Any, list[TopicPartition]], None] = ...,
        on_lost: Callable[[Any, list[TopicPartition]], None] = ...,
    ) -> None: ...

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def close(self) -> None: ...


ConsumerFactory = Callable[[dict[str, Any]], KafkaConsumerLike]


def _confluent(config: dict[str, Any]) -> KafkaConsumerLike:
    consumer: KafkaConsumerLike = Consumer(config)
    return consumer


def _confluent_producer(config: dict[str, Any]) -> ProducerLike:
    return cast(ProducerLike, Producer(config))


@dataclass(frozen=True)
class WorkerSettings:
    brokers: str
    topic: str
    group: str = "meterline"
    source: str = DEFAULT_SOURCE
    backfill: bool = False
    batch_size: int = 1000  # messages per batch (one transaction)
    max_wait_ms: int = 1000  # longest a consumed message waits to be stored
    poll_timeout: float = 0.5  # upper bound between checks of the stop flag
    retry_backoff: float = 0.5  # first wait after a failed store; doubles up to MAX_BACKOFF
    client: Mapping[str, Any] = field(default_factory=dict)  # librdkafka overrides
    dead_letter_topic: str | None = None  # default "<topic>.dlq"

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "group.id": self.group,
            "client.id": "meterline-consumer",
            # A new group starts from the beginning: usage is never skipped.
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
        for key, value in self.client.items():
            if key in _FIXED:
                raise ValueError(f"{key} is fixed by the worker (offsets commit after storing)")
            config[key] = value
        config.update(_FIXED)
        return config


@dataclass
class WorkerStats:
    messages: int = 0
    items: int = 0
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    commits: int = 0
    commit_failures: int = 0
    store_failures: int = 0
    dropped_on_revoke: int = 0
    dead_letters: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _key(tp: TopicPartition) -> TopicPartitionKey:
    return TopicPartitionKey(tp.topic, tp.partition)


class KafkaWorker:
    """One consumer-group member storing into one store. `run()` blocks until stopped."""

    def __init__(
        self,
        ingestor: Ingestor,
        settings: WorkerSettings,
        consumer_factory: ConsumerFactory = _confluent,
        clock: Callable[[], float] = time.monotonic,
        producer_factory: ProducerFactory = _confluent_producer,
    ) -> None:
        self.ingestor = ingestor
        self.settings = settings
        self.stats = WorkerStats()
        self.options = IngestOptions(
            source=settings.source, backfill=settings.backfill, origin=ORIGIN
        )
        self._factory = consumer_factory
        self.dead_letters = DeadLetterPublisher(
            settings.brokers,
            dead_letter_topic(settings.topic, settings.dead_letter_topic),
            producer_factory,
        )
        self._config = settings.client_config()
        self._buffer = BatchAccumulator(settings.batch_size, settings.max_wait_ms / 1000, clock)
        self._book = OffsetBook()
        self._stop = threading.Event()
        self._failures = 0
        self._consumer: KafkaConsumerLike | None = None
        self.assigned: set[TopicPartitionKey] = set()

    # -- control ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to finish its batch, commit and close (thread/signal safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> WorkerStats:
        s = self.settings
        consumer = self._consumer = self._factory(self._config)
        consumer.subscribe(
            [s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("consuming %s as group %s from %s", s.topic, s.group, s.brokers)
        try:
            while not self._stop.is_set():
                self._poll(consumer)
                if self._buffer.ready():
                    self._flush(consumer)
            self._flush(consumer)  # graceful stop: finish the batch and commit it
        finally:
            consumer.close()  # revokes: commits what is stored, drops the rest
            self.dead_letters.close()
        log.info("stopped: %s", self.stats.to_dict())
        return self.stats

    # -- the loop --------------------------------------------------------

    def _poll(self, consumer: KafkaConsumerLike) -> None:
        timeout = self.settings.poll_timeout
        left = self._buffer.time_left()
        if left is not None:
            timeout = min(timeout, left)
        for message in consumer.consume(num_messages=max(1, self._buffer.room), timeout=timeout):
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer error: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            value = message.value()
            items = split_value(value)
            key = message.key()
            self._buffer.add(
                TopicPartitionKey(topic, partition),
                offset,
                items,
                key if isinstance(key, bytes) else None,
                value,
            )
            self.stats.messages += 1
            self.stats.items += len(items)

    def _flush(self, consumer: KafkaConsumerLike) -> None:
        batch = self._buffer.drain()
        if batch:
            try:
                report = self._store(batch)
            except Exception as exc:
                self._store_failed(consumer, batch, f"{type(exc).__name__}: {exc}")
                return
            letters = dead_letters(batch, report)
            if not self.dead_letters.publish(letters):
                # Stored but not dead-lettered: read the batch again (the
                # store deduplicates) rather than commit past a lost letter.
                self._store_failed(consumer, batch, "the dead-letter topic is unreachable")
                return
            self.stats.dead_letters += len(letters)
            self._failures = 0
            self._book.stored(batch.commit)
            self._account(batch, report)
        self._commit(consumer, self._book.pending())

    def _store(self, batch: Batch) -> IngestReport:
        """The batch in one go; if it fails for a reason that is not transient,
        message by message, and a message that still fails is reported as
        rejected (STORE_REJECTED) so that it goes to the dead-letter topic."""
        options = replace(self.options, batch_size=max(1, len(batch.items)))
        try:
            return self.ingestor.ingest(batch.items, options)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "a batch failed (%s: %s); storing it message by message", type(exc).__name__, exc
            )
        by_message: dict[tuple[TopicPartitionKey, int], list[int]] = {}
        for index, (tp, offset, _element) in enumerate(batch.origins):
            by_message.setdefault((tp, offset), []).append(index)
        total = IngestReport()
        for indexes in by_message.values():
            items = [batch.items[i] for i in indexes]
            try:
                part = self.ingestor.ingest(items, replace(options, batch_size=len(items)))
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = f"the store refused this message ({type(exc).__name__}: {exc})"[:500]
                part = IngestReport(
                    rejected=len(items),
                    rejects=[
                        RejectInfo(i, str(ErrorCode.STORE_REJECTED), reason)
                        for i in range(len(items))
                    ],
                )
            total.accepted += part.accepted
            total.duplicates += part.duplicates
            total.rejected += part.rejected
            total.batches += part.batches
            total.rejects.extend(replace(r, index=indexes[r.index]) for r in part.rejects)
        return total

    def _account(self, batch: Batch, report: IngestReport) -> None:
        st = self.stats
        st.batches += 1
        st.accepted += report.accepted
        st.duplicates += report.duplicates
        st.rejected += report.rejected
        for reject in report.rejects[:20]:
            tp, offset, element = batch.origins[reject.index]
            log.warning(
                "quarantined %s[%d]@%d#%d: %s %s",
                tp.topic,
                tp.partition,
                offset,
                element,
                reject.code,
                reject.message,
            )
        if len(report.rejects) > 20:
            log.warning("... and %d more quarantined in this batch", len(report.rejects) - 20)
        log.debug(
            "stored batch: %d messages, accepted %d, duplicates %d, rejected %d",
            batch.messages,
            report.accepted,
            report.duplicates,
            report.rejected,
        )

    def _store_failed(self, consumer: KafkaConsumerLike, batch: Batch, reason: str) -> None:
        """Rewind the batch's partitions so it is read again; never commit past it."""
        self.stats.store_failures += 1
        self._failures += 1
        backoff = min(MAX_BACKOFF, self.settings.retry_backoff * 2 ** (self._failures - 1))
        log.warning(
            "storing a batch of %d messages failed (%s); retrying in %.1fs",
            batch.messages,
            reason,
            backoff,
        )
        for tp, first in batch.first.items():
            # Raises if the partition cannot be rewound: the worker then stops
            # without committing, and the batch is redelivered on restart.
            consumer.seek(TopicPartition(tp.topic, tp.partition, first))
        self._stop.wait(backoff)

    def _commit(
        self, consumer: KafkaConsumerLike, offsets: Mapping[TopicPartitionKey, int]
    ) -> bool:
        """Synchronously commit exactly these offsets; failures stay pending for a retry."""
        if not offsets:
            return True
        tps = [TopicPartition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            result = consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            self.stats.commit_failures += 1
            log.warning("commit failed (stored offsets kept; redelivery is deduplicated): %s", exc)
            return False
        failed = {_key(tp) for tp in (result or []) if tp.error is not None}
        if failed:
            self.stats.commit_failures += 1
            log.warning("commit failed for %s; retried with the next commit", sorted(failed))
        self._book.committed({tp: o for tp, o in offsets.items() if tp not in failed})
        self.stats.commits += 1
        return not failed

    # -- rebalance callbacks (run inside consume/close) -------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {_key(tp) for tp in partitions}
        self.assigned |= keys
        log.info("assigned %s", sorted(keys))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {_key(tp) for tp in partitions}
        pending = self._book.pending(keys)
        if pending and self._consumer is not None:
            self._commit(self._consumer, pending)
        self._book.forget(keys)
        dropped = self._buffer.drop(keys)
        self.stats.dropped_on_revoke += dropped
        self.assigned -= keys
        log.info("revoked %s (dropped %d unstored messages)", sorted(keys), dropped)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {_key(tp) for tp in partitions}
        self._book.forget(keys)
        dropped = self._buffer.drop(keys)
        self.stats.dropped_on_revoke += dropped
        self.assigned -= keys
        log.warning("lost %s (dropped %d unstored messages)", sorted(keys), dropped)


@contextmanager
def stop_on_signals(worker: KafkaWorker) -> Iterator[None]:
    """SIGTERM/SIGINT ask the worker to stop gracefully (main thread only)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("%s: finishing the batch, committing, closing", signal.Signals(signum).name)
        worker.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
