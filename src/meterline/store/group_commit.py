"""Group commit: writers that queue at the same time share one transaction.

A durable commit has a fixed price (on SQLite at `synchronous=FULL` a WAL append,
an fsync and checkpoints; on PostgreSQL a WAL flush and the Merkle seal), which a
server's requests of 1,000 events pay 20 times as often as the CLI's batches of
20,000. The store takes one writer at a time anyway (SQLite's file lock, the
sequence row lock on PostgreSQL), so the writers of one process queue here; when
the store is free, the first in line takes every batch queued behind it (up to a
weight) and writes them in one transaction, each in its own savepoint.

What each writer sees does not change: its work runs as it would alone (its own
batch record, seqs, audit and webhook rows, in queue order), and it returns only
after the commit that made its writes durable. A work that fails is rolled back to
its savepoint and only its writer gets the error. If the transaction itself fails
for a reason that is not transient, every member is written again in a
transaction of its own, so an innocent batch never shares another's fate.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from meterline.store.database import Store, is_transient

T = TypeVar("T")


@dataclass(eq=False)
class _Member(Generic[T]):
    work: Callable[[Connection], T]
    weight: int
    result: T | None = None
    error: BaseException | None = None
    done: bool = False

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Runs works in write transactions of `store`, merging the ones that queue
    at the same time (thread-safe; one per store and process)."""

    def __init__(self, store: Store, max_weight: int = 20_000) -> None:
        self.store = store
        self.max_weight = max_weight
        self.transactions = 0  # committed or not, for tests and benchmarks
        self._cond = threading.Condition()
        self._queue: deque[_Member[Any]] = deque()
        self._busy = False

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def run(self, work: Callable[[Connection], T], weight: int = 1) -> T:
        """Run `work(conn)` in a write transaction and return its result once
        committed; raise what it raised, or what made the commit fail."""
        member: _Member[T] = _Member(work, weight)
        with self._cond:
            self._queue.append(member)
            while self._busy and not member.done:
                self._cond.wait()
            if member.done:
                return member.outcome()
            self._busy = True
        try:
            # FIFO: this writer's own work is in one of the next groups.
            while not member.done:
                with self._cond:
                    group = self._take()
                try:
                    self._write(group)
                except BaseException as exc:  # only a bug: _write answers every member itself
                    for m in group:
                        m.result, m.error = None, exc
                    raise
                finally:
                    with self._cond:
                        for m in group:
                            m.done = True
                        self._cond.notify_all()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return member.outcome()

    def _take(self) -> list[_Member[Any]]:
        group = [self._queue.popleft()]
        weight = group[0].weight
        while self._queue and weight + self._queue[0].weight <= self.max_weight:
            weight += self._queue[0].weight
            group.append(self._queue.popleft())
        return group

    def _write(self, group: list[_Member[Any]]) -> None:
        """Give every member of `group` a result or an error."""
        self.transactions += 1
        try:
            with self.store.write() as conn:
                if len(group) == 1:
                    group[0].result = group[0].work(conn)
                else:
                    for m in group:
                        try:
                            with self.store.savepoint(conn):
                                m.result = m.work(conn)
                        except Exception as exc:
                            if is_transient(exc):
                                raise
                            m.error = exc
        except BaseException as exc:
            if len(group) > 1 and isinstance(exc, Exception) and not is_transient(exc):
                for m in group:
                    m.result, m.error = None, None
                    self._write([m])
                return
            for m in group:
                m.result, m.error = None, exc
