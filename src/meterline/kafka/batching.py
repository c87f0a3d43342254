"""The pure part of the Kafka worker: no client, no store, no wall clock.

- `split_value` turns one message value into ingestion `Item`s (one JSON event,
  a JSON array of events, or NDJSON).
- `BatchAccumulator` gathers messages until the batch is full or old enough and
  hands it over with, per partition, the exact offset to commit (last + 1) and
  the first offset (where to rewind if storing fails).
- `OffsetBook` remembers offsets that are stored but whose commit has not
  succeeded yet, so they are retried (next commit, or on revoke).

The adapter in `meterline.kafka.consumer` drives these; tests drive them
directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from meterline.domain.events import decode_json, encode_json
from meterline.ingest.readers import Item


class TopicPartitionKey(NamedTuple):
    topic: str
    partition: int


def message_key(event: Mapping[str, Any]) -> bytes:
    """The producer-side key of an event message: its customer id.

    Keying by customer keeps one customer's events in one partition, in the
    order the producer sent them, and handled by one worker at a time.
    """
    return str(event["customer_id"]).encode()


def _lines(value: bytes) -> list[Item]:
    return [
        Item(line, number)
        for number, line in enumerate((ln.strip() for ln in value.splitlines()), start=1)
        if line
    ]


def split_value(value: bytes | None) -> list[Item]:
    """The items of one message value.

    - one JSON object (the common case): one item, raw bytes untouched;
    - a JSON array: one item per element;
    - NDJSON (several lines that are not one JSON document): one item per line.

    Anything else (empty, malformed) is one item holding the raw bytes, so the
    ingestor rejects and quarantines it exactly as sent; it never blocks the
    partition. `Item.line` is the 1-based element/line within the message.
    """
    if value is None:
        return [Item(b"", 1)]
    body = value.strip()
    if not body:
        return [Item(value, 1)]
    if body[:1] == b"[":
        try:
            doc = decode_json(body)
        except msgspec.DecodeError:
            lines = _lines(body)
            return lines if len(lines) > 1 else [Item(body, 1)]
        if isinstance(doc, list):
            return [Item(encode_json(obj), n, obj) for n, obj in enumerate(doc, start=1)]
        return [Item(body, 1, doc)]
    if b"\n" not in body:
        return [Item(body, 1)]  # validated on the fast path, decoded once
    try:
        doc = decode_json(body)  # one pretty-printed document?
    except msgspec.DecodeError:
        return _lines(body)
    return [Item(body, 1, doc)]


@dataclass
class Batch:
    """Messages drained from the accumulator, ready to store in one transaction."""

    items: list[Item] = field(default_factory=list)
    # Where each item came from: (partition, offset, element within the message).
    origins: list[tuple[TopicPartitionKey, int, int]] = field(default_factory=list)
    # Per partition: the first offset in the batch and the offset to commit (last + 1).
    first: dict[TopicPartitionKey, int] = field(default_factory=dict)
    commit: dict[TopicPartitionKey, int] = field(default_factory=dict)
    messages: int = 0
    # The message as received (key, value), for the dead-letter topic.
    received: dict[tuple[TopicPartitionKey, int], tuple[bytes | None, bytes | None]] = field(
        default_factory=dict
    )

    def __bool__(self) -> bool:
        return self.messages > 0


class BatchAccumulator:
    """Buffers consumed messages; ready at `max_messages` or after `max_wait` seconds."""

    def __init__(
        self,
        max_messages: int,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        self.max_messages = max_messages
        self.max_wait = max_wait
        self._clock = clock
        self._messages: list[tuple[TopicPartitionKey, int, list[Item]]] = []
        self._received: dict[tuple[TopicPartitionKey, int], tuple[bytes | None, bytes | None]] = {}
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def room(self) -> int:
        return self.max_messages - len(self._messages)

    def add(
        self,
        tp: TopicPartitionKey,
        offset: int,
        items: list[Item],
        key: bytes | None = None,
        value: bytes | None = None,
    ) -> None:
        if self._started is None:
            self._started = self._clock()
        self._messages.append((tp, offset, items))
        self._received[(tp, offset)] = (key, value)

    def time_left(self) -> float | None:
        """Seconds until the buffered batch is due; None when empty."""
        if self._started is None:
            return None
        return max(0.0, self._started + self.max_wait - self._clock())

    def ready(self) -> bool:
        if not self._messages:
            return False
        return len(self._messages) >= self.max_messages or self.time_left() == 0.0

    def drain(self) -> Batch:
        batch = Batch()
        for tp, offset, items in self._messages:
            batch.messages += 1
            batch.first.setdefault(tp, offset)
            batch.first[tp] = min(batch.first[tp], offset)
            batch.commit[tp] = max(batch.commit.get(tp, 0), offset + 1)
            for item in items:
                batch.items.append(item)
                batch.origins.append((tp, offset, item.line))
            batch.received[(tp, offset)] = self._received.get((tp, offset), (None, None))
        self._messages = []
        self._received = {}
        self._started = None
        return batch

    def drop(self, tps: Iterable[TopicPartitionKey]) -> int:
        """Forget buffered messages of these partitions (revoked); returns how many."""
        gone = set(tps)
        kept = [m for m in self._messages if m[0] not in gone]
        dropped = len(self._messages) - len(kept)
        self._messages = kept
        self._received = {k: v for k, v in self._received.items() if k[0] not in gone}
        if not kept:
            self._started = None
        return dropped


class OffsetBook:
    """Offsets durably stored but not (yet) committed to the group."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartitionKey, int] = {}

    def stored(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            self._pending[tp] = max(self._pending.get(tp, 0), offset)

    def pending(
        self, tps: Iterable[TopicPartitionKey] | None = None
    ) -> dict[TopicPartitionKey, int]:
        if tps is None:
            return dict(self._pending)
        return {tp: self._pending[tp] for tp in tps if tp in self._pending}

    def committed(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            if self._pending.get(tp, offset + 1) <= offset:
                del self._pending[tp]

    def forget(self, tps: Iterable[TopicPartitionKey]) -> None:
        for tp in tps:
            self._pending.pop(tp, None)

    def __len__(self) -> int:
        return len(self._pending)
