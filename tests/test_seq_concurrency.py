"""DESIGN §2 on PostgreSQL: concurrent writers never expose a hole in seq.

Several writers ingest batches at once while a reader keeps checking, in one
snapshot, that the events it can see are exactly seq 1..max (count == max).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from tests.support import event, ingest, stored

from meterline.domain.clock import FixedClock
from meterline.store.database import Store, open_store


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_concurrent_writers_leave_no_visible_hole(store: Store, clock: FixedClock) -> None:
    writers, batches, per_batch = 4, 12, 40
    stop = threading.Event()
    violations: list[tuple[int, int]] = []
    observations = 0
    errors: list[BaseException] = []

    def write(w: int) -> None:
        own = open_store(store.url)
        try:
            for b in range(batches):
                evs = [event(f"w{w}-b{b}-{i}") for i in range(per_batch - (b % 3))]
                ingest(own, clock, evs, batch_size=len(evs))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            own.dispose()

    def read() -> None:
        nonlocal observations
        own = open_store(store.url)
        try:
            while not stop.is_set():
                with own.read() as conn:
                    count, top = conn.execute(
                        text("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM events")
                    ).one()
                observations += 1
                if count != top:
                    violations.append((int(count), int(top)))
        finally:
            own.dispose()

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert not errors, errors
    assert observations > 0
    assert violations == []
    seqs = [r[0] for r in stored(store)]
    expected = sum(per_batch - (b % 3) for b in range(batches)) * writers
    assert seqs == list(range(1, expected + 1))
