"""`meterline serve` as a subprocess on a free loopback port, for the HTTP benchmarks:
started, waited for until `/readyz` answers, and stopped afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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
