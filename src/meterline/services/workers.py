"""Worker processes for the CPU-bound services (`invoice issue --jobs`, `verify --jobs`).

Spawned, not forked: a forked child would inherit the parent's open database
connections, which SQLite and psycopg forbid sharing. Each worker opens its own
store once (`store`) and runs module-level task functions against it.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from meterline.store.database import Store

_store: Store | None = None


def _open(url: str) -> None:
    global _store
    from meterline.store.database import open_store

    _store = open_store(url)


def store() -> Store:
    """The worker's own store (opened by the pool's initializer)."""
    assert _store is not None, "called outside a worker process"
    return _store


def pool(url: str, jobs: int) -> ProcessPoolExecutor:
    """``jobs`` spawned workers, each with its own store at ``url``."""
    return ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_open,
        initargs=(url,),
    )


def default_jobs() -> int:
    """Workers for a large run: the CPUs this process may use (at most 8)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))
