"""Kafka ingestion (DESIGN §11): a consumer-group worker that stores, then commits.

`batching` is the pure part (message decoding, batch accumulation, offset
bookkeeping); `consumer` adapts it to confluent-kafka. See docs/KAFKA.md.
"""

from meterline.kafka.batching import (
    Batch,
    BatchAccumulator,
    OffsetBook,
    TopicPartitionKey,
    message_key,
    split_value,
)

__all__ = [
    "Batch",
    "BatchAccumulator",
    "OffsetBook",
    "TopicPartitionKey",
    "message_key",
    "split_value",
]
