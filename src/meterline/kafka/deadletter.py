"""The dead-letter topic: where a message goes when it cannot be stored.

A message with a rejected event (bad JSON, a bound, a conflict, a value the
database refused) is copied, key and value byte for byte, to the dead-letter
topic (default "<topic>.dlq") with the reason in headers; its offset is then
committed like any other, so one bad message never blocks its partition. The
quarantine table in the store holds the same rejects; the dead-letter copy is
for Kafka tooling (replay with any producer, alert on the topic's lag).

Headers (all UTF-8 text):
    meterline.code        stable error code of the first rejected element
    meterline.message     its message
    meterline.rejected    how many elements of the message were rejected
    meterline.topic / meterline.partition / meterline.offset   where it came from
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from meterline.ingest.service import IngestReport
from meterline.kafka.batching import Batch, TopicPartitionKey

log = logging.getLogger("meterline.kafka")

HEADER_PREFIX = "meterline."


def dead_letter_topic(topic: str, configured: str | None) -> str:
    return configured or f"{topic}.dlq"


@dataclass(frozen=True)
class DeadLetter:
    source: TopicPartitionKey
    offset: int
    key: bytes | None
    value: bytes | None
    code: str
    message: str
    rejected: int

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            "code": self.code,
            "message": self.message,
            "rejected": str(self.rejected),
            "topic": self.source.topic,
            "partition": str(self.source.partition),
            "offset": str(self.offset),
        }
        return [
            (HEADER_PREFIX + k, v.encode("utf-8", "backslashreplace")) for k, v in fields.items()
        ]


def dead_letters(batch: Batch, report: IngestReport) -> list[DeadLetter]:
    """One dead letter per message with at least one rejected element, in offset order."""
    firsts: dict[tuple[TopicPartitionKey, int], tuple[str, str]] = {}
    counts: dict[tuple[TopicPartitionKey, int], int] = {}
    for reject in report.rejects:
        tp, offset, _element = batch.origins[reject.index]
        firsts.setdefault((tp, offset), (reject.code, reject.message))
        counts[(tp, offset)] = counts.get((tp, offset), 0) + 1
    out = []
    for (tp, offset), (code, message) in sorted(firsts.items()):
        key, value = batch.received.get((tp, offset), (None, None))
        out.append(DeadLetter(tp, offset, key, value, code, message, counts[(tp, offset)]))
    return out


class ProducerLike(Protocol):
    """The part of `confluent_kafka.Producer` the dead-letter publisher uses."""

    def produce(self, topic: str, **kwargs: Any) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


ProducerFactory = Callable[[dict[str, Any]], ProducerLike]


class DeadLetterPublisher:
    """Publishes dead letters and waits until the broker has them all (acks=all):
    only then may the offsets of those messages be committed."""

    def __init__(
        self, brokers: str, topic: str, factory: ProducerFactory, timeout: float = 30.0
    ) -> None:
        self.topic = topic
        self.timeout = timeout
        self._config = {
            "bootstrap.servers": brokers,
            "client.id": "meterline-dead-letters",
            "acks": "all",
            "linger.ms": 0,
        }
        self._factory = factory
        self._producer: ProducerLike | None = None

    def publish(self, letters: list[DeadLetter]) -> bool:
        """True when every letter was delivered; False leaves them to a retry."""
        if not letters:
            return True
        if self._producer is None:
            self._producer = self._factory(self._config)
        failed: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failed.append(str(error))

        try:
            for letter in letters:
                self._producer.produce(
                    self.topic,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.headers(),
                    on_delivery=delivered,
                )
                self._producer.poll(0)
            left = self._producer.flush(self.timeout)
        except Exception as exc:  # BufferError, KafkaException: retried with the batch
            log.warning("publishing %d dead letters failed: %s", len(letters), exc)
            return False
        if left or failed:
            log.warning(
                "dead letters not delivered to %s (%d left, errors: %s)",
                self.topic,
                left,
                failed[:3],
            )
            return False
        return True

    def close(self) -> None:
        """Drop the producer (every letter was flushed by `publish`)."""
        if self._producer is not None:
            self._producer.flush(1.0)
            self._producer = None
