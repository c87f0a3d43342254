"""The cyclic garbage collector paused while a batch is validated and stored, an
invoice run's chunk is issued or a verify batch is recomputed.

A batch keeps tens of thousands of small container objects alive at once
(events, their parsed properties, candidates, rows, index deltas). The
collector runs every few hundred allocations and re-traverses all of them,
again and again as they age into older generations: measured on the SQLite
ingest benchmark, that was ~40% of the process's CPU (and ~40% of the 1M invoice
run in bench/invperf.py), for nothing, since the
batch makes no reference cycles worth collecting (everything is freed by
reference counting when the batch ends). With the collector paused for the
batch, any cycle that does form is collected after it, as usual.

Process-wide state, so it nests and is thread-safe: the first batch to
enter pauses the collector (if it was running), the last to leave restores
it; a collector someone else disabled stays disabled. A busy server has
overlapping batches, so the last one may never leave: a batch that leaves
while others remain runs a full collection if the pause has lasted longer
than `MAX_PAUSE_S`, so cycles made meanwhile are still freed (memory stays
bounded) at a cost of one collection per few seconds of sustained load.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_PAUSE_S = 2.0

_lock = threading.Lock()
_depth = 0
_resume = False
_since = 0.0  # when the pause began, or its last collection


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _resume, _since
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            _since = time.monotonic()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        collect = False
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _resume:
                    gc.enable()
            elif _resume and time.monotonic() - _since > MAX_PAUSE_S:
                _since = time.monotonic()
                collect = True
        if collect:
            gc.collect()
