"""A real `meterline serve` in a subprocess on loopback, for the API tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from meterline.store.database import Store

NOW = "2024-02-10T00:00:00Z"
INGEST_KEY = "test-ingest-9f1c2a7e"
ADMIN_KEY = "test-admin-4b8d0e61"
KEYS = f"{INGEST_KEY}:ingest,{ADMIN_KEY}:admin"
MAX_BODY = 1024 * 1024
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def meterline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def clean_env(keys: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    if keys is not None:
        env["METERLINE_API_KEYS"] = keys
    return env


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def client(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def _wait(server: Server, path: str) -> bool:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return False
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def start_server(
    db_url: str, log_dir: Path, keys: str | None = KEYS, ready: str = "/readyz"
) -> Server:
    """Start `meterline serve` on a free port and wait until `ready` answers 200."""
    for _ in range(3):
        port = free_port()
        log_path = log_dir / f"server-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meterline",
                    "--db",
                    db_url,
                    "--now",
                    NOW,
                    "serve",
                    "--port",
                    str(port),
                    "--max-body-bytes",
                    str(MAX_BODY),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(keys),
            )
        server = Server(f"http://127.0.0.1:{port}", proc, log_path)
        if _wait(server, ready):
            return server
        server.stop()
        if "address already in use" not in server.log().lower():
            raise AssertionError(f"server did not become ready:\n{server.log()}")
    raise AssertionError("no free port found for the server")


def stored_events(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT source, event_id, customer_id, event_type, event_time, properties, "
                    "backfill FROM events ORDER BY seq"
                )
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def quarantined(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = (
            conn.execute(text("SELECT position, source, code, raw FROM quarantine ORDER BY id"))
            .mappings()
            .all()
        )
    return [{**r, "raw": bytes(r["raw"])} for r in rows]
