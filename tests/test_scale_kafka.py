"""A consumer group of `meterline consume` processes on one PostgreSQL (issue 13).

Two processes share six partitions; one is SIGKILLed mid-stream and a third
joins. Every event must be stored exactly once and usage must be exact.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import text
from tests.conftest import NOW
from tests.test_kafka import CLIENT, brokers  # noqa: F401  (the Tansu broker fixture)
from tests.test_scale_ingest import CATALOG, FEB_END, FEB_START

from meterline.domain.timestamps import parse_rfc3339
from meterline.services.catalog import apply_catalog
from meterline.services.usage import query_usage
from meterline.store import sequence
from meterline.store.database import Store

pytestmark = [pytest.mark.xdist_group("kafka"), pytest.mark.postgres, pytest.mark.slow]

PARTITIONS = 6
CUSTOMERS = 24
N = 12_000


def _event(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "customer_id": f"c{i % CUSTOMERS}",
        "event_type": "api_call",
        "event_time": f"2024-02-0{1 + i % 8}T{i % 24:02d}:{i % 60:02d}:00Z",
        "properties": {"tokens": i % 97},
    }


def _produce(bootstrap: str, topic: str, ids: range, ends: dict[int, int]) -> None:
    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        ends[message.partition()] = max(ends.get(message.partition(), 0), message.offset() + 1)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in ids:
        e = _event(i)
        producer.produce(
            topic,
            key=e["customer_id"].encode(),
            value=json.dumps(e).encode(),
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(30) == 0


def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in c.committed(parts, timeout=15) if tp.offset > 0}
    finally:
        c.close()


def _count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one())


def _assigned(log: Path) -> bool:
    """True once the consumer logged an assignment of at least one partition."""
    return re.search(r"assigned \[.+\]", log.read_text(errors="replace")) is not None


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _consumer(
    store: Store, bootstrap: str, topic: str, group: str, log: Path
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "meterline", "--db", store.url, "--now", NOW, "consume"]
    cmd += ["--brokers", bootstrap, "--topic", topic, "--group", group]
    cmd += ["--batch-size", "200", "--max-wait-ms", "200", "--json"]
    for key, value in CLIENT.items():
        cmd += ["-X", f"{key}={value}"]
    with log.open("wb") as err:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)


@pytest.mark.parametrize("backend", ["postgres"])
def test_group_of_consumers_one_killed_one_joining(
    store: Store,
    brokers: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    with store.read() as conn:
        base = sequence.current(conn)
    topic = f"scale-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(15)
    group = f"g-{uuid.uuid4().hex[:6]}"
    ends: dict[int, int] = {}
    _produce(brokers, topic, range(N // 2), ends)

    a = _consumer(store, brokers, topic, group, tmp_path / "a.err")
    b = _consumer(store, brokers, topic, group, tmp_path / "b.err")
    procs = [a, b]
    try:
        _wait_for(lambda: _count(store) >= N // 6 or a.poll() is not None, 90, "first batches")
        assert a.poll() is None and b.poll() is None, (tmp_path / "a.err").read_text()
        os.kill(a.pid, signal.SIGKILL)  # mid-stream: stored batches may be uncommitted
        a.wait()
        killed_at = _count(store)
        assert killed_at < N // 2
        c = _consumer(store, brokers, topic, group, tmp_path / "c.err")
        procs.append(c)
        # The joiner must hold partitions before the rest is produced; otherwise b can
        # drain it all while c is still starting (a slow start is not what is tested).
        _wait_for(lambda: _assigned(tmp_path / "c.err") or c.poll() is not None, 90, "c joins")
        assert c.poll() is None, (tmp_path / "c.err").read_text()
        _produce(brokers, topic, range(N // 2, N), ends)
        _wait_for(lambda: _count(store) >= N, 120, "every event stored")
        _wait_for(lambda: _committed(brokers, topic, group) == ends, 90, "offsets committed")
        outs = []
        for p in (b, c):
            p.send_signal(signal.SIGTERM)
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            outs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sum(ends.values()) == N
    assert all(o["accepted"] > 0 for o in outs)  # the joiner took partitions over
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT seq, event_id, customer_id, properties FROM events ORDER BY seq")
        ).all()
        last = sequence.current(conn)
        quarantined = conn.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one()
    assert quarantined == 0
    assert len(rows) == len({r[1] for r in rows}) == N  # exactly once
    assert [int(r[0]) for r in rows] == list(range(base + 1, last + 1))  # no holes
    expected: dict[str, Decimal] = {}
    for i in range(N):
        e = _event(i)
        expected[e["customer_id"]] = (
            expected.get(e["customer_id"], Decimal(0)) + e["properties"]["tokens"]
        )
    with store.read() as conn:
        for customer, total in expected.items():
            out = query_usage(
                conn,
                customer=customer,
                meter_code="tokens",
                from_us=FEB_START,
                to_us=FEB_END,
                now_us=parse_rfc3339(NOW),
            )
            assert Decimal(str(out["total"])) == total, customer
