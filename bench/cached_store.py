"""A cached SQLite store of bench/invoice_run.py's workload (C customers x E
events), built once under bench/out/ and reused by later runs.

Building the 10M-event store takes tens of minutes; the invoice run, `verify`
and `reconcile` benchmarks only read it, so they reuse the cached file (or a
copy of it, when the benchmark writes: new events, checkpoints, documents).
The generator's independent usage (for checking every invoice) is saved next
to it as JSON.

    .venv/bin/python bench/cached_store.py --customers 10000 --events-per-customer 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from decimal import Decimal
from pathlib import Path

from invoice_run import Loaded, Usage, customer_ids, load
from meterline.store.database import open_store

OUT = Path(__file__).resolve().parent / "out"


def paths(customers: int, per_customer: int) -> tuple[Path, Path]:
    stem = OUT / f"invoice_{customers}x{per_customer}"
    return stem.with_suffix(".db"), stem.with_suffix(".usage.json")


def _dump(loaded: Loaded, path: Path) -> None:
    usage = {
        c: {
            "api": u.api,
            "tokens": [[m, s, q] for (m, s), q in u.tokens.items()],
            "storage": None if u.storage is None else str(u.storage),
            "events": u.events,
        }
        for c, u in loaded.usage.items()
    }
    path.write_text(json.dumps({"events": loaded.events, "usage": usage}))


def read_loaded(customers: int, per_customer: int) -> Loaded:
    """The cached store's independent usage (ingest timings are not kept)."""
    raw = json.loads(paths(customers, per_customer)[1].read_text())
    usage = {
        c: Usage(
            api=u["api"],
            tokens={(m, s): q for m, s, q in u["tokens"]},
            storage=None if u["storage"] is None else Decimal(u["storage"]),
            events=u["events"],
        )
        for c, u in raw["usage"].items()
    }
    return Loaded(raw["events"], 0.0, 0.0, usage)


def build(customers: int, per_customer: int, batch_size: int = 50_000) -> Path:
    """The cached store's path, building it first when it is not there yet."""
    db, usage = paths(customers, per_customer)
    if db.exists() and usage.exists():
        return db
    OUT.mkdir(parents=True, exist_ok=True)
    partial = db.with_suffix(".partial.db")
    partial.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{partial}")
    try:
        store.upgrade()
        t0 = time.perf_counter()
        loaded = load(store, customer_ids(customers), per_customer, batch_size)
        print(
            f"built {loaded.events:,} events in {time.perf_counter() - t0:.0f}s "
            f"(ingest {loaded.ingest_s:.0f}s)",
            flush=True,
        )
    finally:
        store.dispose()
    _dump(loaded, usage)
    os.replace(partial, db)
    return db


def working_copy(customers: int, per_customer: int, dest: Path) -> Path:
    """A copy of the cached store that a benchmark may write to."""
    src = build(customers, per_customer)
    shutil.copyfile(src, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events-per-customer", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(build(args.customers, args.events_per_customer, args.batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
