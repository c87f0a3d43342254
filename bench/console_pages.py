"""Console page latency (issue 16): how long the main pages take on a demo store.

Starts `meterline serve` on the store (a subprocess on loopback, as in
production), logs in with an admin key, and times each page over several
requests (after one warm-up request). The baseline is the JSON API's
`GET /v1/invoices/{number}` on the same server in the same run, so the ratio
says what the console adds to a request that only reads one document.

    .venv/bin/meterline demo                     # the demo store: 1M events, 300 customers
    .venv/bin/python bench/console_pages.py --db sqlite:///demo-out/meterline.db
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx

ADMIN_KEY = "bench-admin-key-7f3a9c"
NOW = "2024-02-15T17:00:00Z"  # the demo's clock for further commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(db: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env["METERLINE_API_KEYS"] = f"{ADMIN_KEY}:admin"
    env["METERLINE_CONSOLE_SECRET"] = "bench-console-secret-0123456789"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meterline",
                "--db",
                db,
                "--now",
                NOW,
                "serve",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"server did not start:\n{log.read_text()}")


def _time(http: httpx.Client, path: str, runs: int) -> list[float]:
    first = http.get(path)
    if first.status_code != 200:
        raise SystemExit(f"{path}: {first.status_code} {first.text[:300]}")
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = http.get(path)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, path
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="sqlite:///demo-out/meterline.db")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--number", help="the invoice to open (default: the largest corrected one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start(args.db, Path(tmp) / "server.log")
        try:
            api = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
            )
            docs = api.get("/v1/invoices").json()
            invoices = [d for d in docs if d["kind"] == "invoice"]
            # the largest invoice with a correction: the heaviest explanation page
            corrected = {d["corrects"] for d in docs if d["corrects"]}
            candidates = [d for d in invoices if d["number"] in corrected] or invoices
            invoice = max(
                candidates,
                key=lambda d: Decimal(d["total"]) if d["currency"] == "USD" else Decimal(0),
            )
            if args.number:
                invoice = next(d for d in docs if d["number"] == args.number)
            number, customer = invoice["number"], invoice["customer_id"]
            http = httpx.Client(base_url=url, timeout=60)
            form = http.get("/console/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            login = http.post("/console/login", data={"csrf": token, "key": ADMIN_KEY})
            assert login.status_code == 303, login.text
            pages = [
                "/console",
                "/console/customers",
                f"/console/customers/{customer}",
                "/console/invoices",
                "/console/invoices?period=2024-01&kind=invoice",
                f"/console/invoices/{number}",
                f"/console/invoices/{number}/lines/1",
                f"/console/invoices/{number}/lines/1/events",
                f"/console/invoices/{number}/rerate",
                "/console/quarantine",
                "/console/price-books",
                "/console/audit",
            ]
            base = statistics.median(_time(api, f"/v1/invoices/{number}", args.runs))
            print(f"store {args.db}; invoice {number} ({customer}); {args.runs} runs per page")
            print(f"baseline GET /v1/invoices/{number}: p50 {base:.1f} ms\n")
            print(f"{'page':<52} {'p50 ms':>8} {'max ms':>8} {'x base':>7}")
            for path in pages:
                times = _time(http, path, args.runs)
                p50 = statistics.median(times)
                print(f"{path:<52} {p50:>8.1f} {max(times):>8.1f} {p50 / base:>7.1f}")
        finally:
            proc.terminate()
            proc.wait(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
