"""Incremental `reconcile` before/after on one copy of the cached invoice store (issue 17).

`bench/invperf.py`'s workload on a working copy of the cached C x E store: the invoice
run, `reconcile --full` (it records the checkpoint, with this code), M new events
(invperf's `ingest_new`); then the incremental run of a baseline source tree and of this
one, alternated in fresh processes against the same snapshot (`record=False`, so each
sees the same checkpoint), wall and CPU timed inside the process; then the same again
with nothing new (after one recorded incremental run). The baseline ignores what it does
not know in the checkpoint's state. Each run prints its checks' names and outcomes, so
the two can be compared; the figure is a ratio measured in the same run.

    git -C /work/main archive <commit> src | tar -x -C /tmp/recon-base
    .venv/bin/python bench/recon_ab.py --customers 1000 --baseline /tmp/recon-base/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cached_store import build
from invoice_run import customer_ids, timed_issue
from invperf import ingest_new
from meterline.services.reconcile import reconcile
from meterline.store.database import open_store

_CHILD = """
import json, sys, time
from meterline.services.reconcile import reconcile
from meterline.store.database import open_store
store = open_store(sys.argv[1])
cpu, t0 = time.process_time(), time.perf_counter()
report = reconcile(store, full=sys.argv[2] == "full", record=False)
wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
store.dispose()
print(json.dumps({"wall": wall, "cpu": cpu, "report": report.to_json()}))
"""


def _run(src: str, url: str, mode: str = "incremental") -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, url, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    got: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def _shape(report: object) -> list[tuple[str, bool]]:
    assert isinstance(report, dict)
    return [(str(c["name"]), bool(c["ok"])) for c in report["checks"]]


def _pairs(
    label: str, base: str, here: str, url: str, rounds: int, mode: str = "incremental"
) -> None:
    reports: dict[str, object] = {}
    for i in range(rounds):
        for name, src in (("before", base), ("after", here)):
            got = _run(src, url, mode)
            report = got["report"]
            assert isinstance(report, dict)
            reports[name] = report
            print(
                f"{label} round {i + 1} {name}: {float(str(got['wall'])):.2f}s "
                f"(cpu {float(str(got['cpu'])):.2f}s) ok={report['ok']} mode={report['mode']} "
                f"checks={_shape(report)}; load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    before, after = reports["before"], reports["after"]
    assert isinstance(before, dict) and isinstance(after, dict)
    print(f"{label}: reports identical as JSON: {before == after}", flush=True)
    for b, a in zip(before["checks"], after["checks"], strict=True):
        if b != a:
            print(
                f"  {b['name']}: before {b['details']!r}\n  {' ' * len(b['name'])}  after  "
                f"{a['details']!r}",
                flush=True,
            )
    if before["warnings"] != after["warnings"]:
        print(f"  warnings: before {before['warnings']}\n  after {after['warnings']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000)
    parser.add_argument("--events-per-customer", type=int, default=1_000)
    parser.add_argument("--new", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", required=True, help="the baseline's src directory")
    parser.add_argument("--compare-full", action="store_true", help="also time --full, once")
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parent.parent / "src")
    print(f"load average {os.getloadavg()[0]:.2f}; baseline {args.baseline}", flush=True)
    cached = build(args.customers, args.events_per_customer)
    with tempfile.TemporaryDirectory(prefix="meterline-reconab-", dir="/tmp") as tmp:
        db = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        shutil.copyfile(cached, db)
        print(f"copied in {time.perf_counter() - t0:.1f}s", flush=True)
        url = f"sqlite:///{db}"
        store = open_store(url)
        try:
            (result, _) = timed_issue(store, False, 0)
            print(f"issued {len(result.issued):,} invoices", flush=True)
            cpu, t0 = time.process_time(), time.perf_counter()
            full = reconcile(store, full=True)
            assert full.ok, [c.to_json() for c in full.checks if not c.ok]
            print(
                f"reconcile --full: {time.perf_counter() - t0:.2f}s "
                f"(cpu {time.process_time() - cpu:.2f}s); load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            new_s = ingest_new(store, customer_ids(args.customers), args.new)
            print(f"{args.new:,} new events ingested in {new_s:.1f}s", flush=True)
            store.dispose()
            _pairs(f"incremental after {args.new:,}", args.baseline, here, url, args.rounds)
            store = open_store(url)
            assert reconcile(store).ok
            store.dispose()
            _pairs("incremental, nothing new", args.baseline, here, url, args.rounds)
            if args.compare_full:
                _pairs("full", args.baseline, here, url, 1, "full")
        finally:
            store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
