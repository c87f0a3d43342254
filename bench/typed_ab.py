"""A/B timing of the invoice run and `verify` on one prebuilt SQLite store (issue 17,
typed bodies): build the `bench/invoice_run.py` store once, then time each code version
on a fresh copy, in CPU time (contention on a shared machine disturbs it far less than
wall time). Run the two code versions alternately, each with its own interpreter:

    /work/main/.venv/bin/python bench/typed_ab.py /work/main/bench build /tmp/ab.db
    /work/main/.venv/bin/python bench/typed_ab.py /work/main/bench before /tmp/ab.db
    .venv/bin/python bench/typed_ab.py bench after /tmp/ab.db
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time


def main(bench_dir: str, mode: str, path: str) -> None:
    sys.path.insert(0, bench_dir)
    from invoice_run import customer_ids, load, timed_issue
    from meterline.services.verification import verify
    from meterline.store.database import open_store

    if mode == "build":
        store = open_store(f"sqlite:///{path}")
        store.upgrade()
        loaded = load(store, customer_ids(300), 1000, 50_000)
        print(f"built {loaded.events} events")
        return
    tmp = tempfile.mkdtemp(prefix="typed-ab-")
    db = os.path.join(tmp, "bench.db")
    shutil.copy(path, db)
    store = open_store(f"sqlite:///{db}")
    load_avg = os.getloadavg()[0]
    c0 = time.process_time()
    result, issue_s = timed_issue(store, False, 0)
    c1 = time.process_time()
    t0 = time.perf_counter()
    report = verify(store)
    verify_s = time.perf_counter() - t0
    c2 = time.process_time()
    assert report.ok and len(result.issued) == 300
    print(
        f"{mode}: issue 300 invoices {issue_s:.2f}s wall, {c1 - c0:.2f}s cpu; "
        f"verify {verify_s:.2f}s wall, {c2 - c1:.2f}s cpu; load {load_avg:.1f}"
    )
    store.engine.dispose()
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main(*sys.argv[1:4])
