"""`meterline serve` as a subprocess on a free loopback port, for the HTTP benchmarks:
started, waited for until `/readyz` answers, and stopped afterwards."""

from __future__ import annotations

import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    url: str,
    now: str,
    keys: str,
    log: Path,
    extra: tuple[str, ...] = (),
    start_timeout: float = 60.0,
) -> Iterator[str]:
    """Serve the store at `url` with the clock pinned at `now` and API keys `keys`
    ("KEY:scope,..."); yields the base URL. The server's output goes to `log`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env["METERLINE_API_KEYS"] = keys
    command = [sys.executable, "-m", "meterline", "--db", url, "--now", now, "serve"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def timed_gets(
    http: httpx.Client, next_path: Callable[[], str], n: int, rate: float = 0.0
) -> list[float]:
    """Latencies (s) of n GETs sent one after another on one connection, each
    checked for 200. With `rate` > 0 (requests/s for this client) each request is
    sent at its scheduled instant, start + i / rate, and timed from that instant:
    an answer slow enough to delay the next send counts against that one too (no
    coordinated omission), so the figure is the latency a client sending at that
    rate sees. With `rate` 0, as fast as the answers come (closed loop)."""
    out: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        path = next_path()
        due = start + i / rate if rate > 0 else time.perf_counter()
        if rate > 0:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        r = http.get(path)
        out.append(time.perf_counter() - due)
        if r.status_code != 200:
            raise SystemExit(f"{path}: {r.status_code} {r.text[:200]}")
    return out


def _client(args: tuple[str, str, str, list[str], int, int, float]) -> list[float]:
    base, key, path, customers, requests, seed, rate = args
    rng = random.Random(seed)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        return timed_gets(http, lambda: path.format(customer=rng.choice(customers)), requests, rate)


def load_test(
    base: str,
    key: str,
    path: str,
    customers: list[str],
    clients: int,
    requests: int,
    rate: float = 0.0,
    seed: int = 1,
) -> dict[str, float]:
    """`clients` processes (spawned, so the load generator does not share a GIL
    with itself) x `requests` GETs of `path` ("{customer}" filled at random),
    as fast as answered (rate 0) or each client at `rate` requests/s (see
    `timed_gets`): p50/p99 latency and requests/s."""
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        # warm up the server and the client processes (spawned, importing httpx)
        pool.map(_client, [(base, key, path, customers, 5, -i, 0.0) for i in range(clients)])
        t0 = time.perf_counter()
        parts = pool.map(
            _client,
            [(base, key, path, customers, requests, seed + i, rate) for i in range(clients)],
        )
        wall = time.perf_counter() - t0
    lat = sorted(x for p in parts for x in p)
    return {
        "requests": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
        "per_s": round(len(lat) / wall, 1),
    }
