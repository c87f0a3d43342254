"""Webhook endpoints and the dispatcher (DESIGN §14).

The dispatcher claims due deliveries from the outbox (store/outbox.py) under a
lease, sends each as a signed POST (Standard Webhooks headers), logs the
attempt and schedules the next one with exponential backoff and full jitter
until the retry window is spent, then marks the delivery failed. Delivery is
at least once: a dispatcher killed mid-send leaves a lease that runs out, and
the delivery is sent again with the same webhook-id, which receivers use to
deduplicate. Clock and random source are injected.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from meterline.domain.clock import Clock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import US_PER_SECOND, from_datetime
from meterline.store import audit, outbox
from meterline.store.database import Store
from meterline.webhooks import signing
from meterline.webhooks.events import parse_types, reconcile_failed
from meterline.webhooks.retry import RetryPolicy, Uniform, default_rng

log = logging.getLogger("meterline.webhooks")

DEFAULT_TIMEOUT_S = 10.0
USER_AGENT = "meterline-webhooks/1"


def _now(clock: Clock) -> int:
    return from_datetime(clock.now())


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, f"webhook URL must be http(s)://host/..., got {url!r}"
        )
    return url


def add_endpoint(
    store: Store,
    url: str,
    event_types: list[str],
    now_us: int,
    secret: str | None = None,
    description: str = "",
) -> outbox.Endpoint:
    """Register an endpoint (a new whsec_ secret unless one is given); audited."""
    check_url(url)
    secret = secret or signing.new_secret()
    signing.secret_key(secret)
    types = parse_types(event_types)
    with store.write() as conn:
        ep = outbox.add_endpoint(conn, url, secret, types, description, now_us)
        audit.record(
            conn,
            "webhook.add",
            {"endpoint": ep.id, "url": url, "event_types": [str(t) for t in types]},
            now_us,
        )
    return ep


def set_enabled(store: Store, endpoint_id: int, enabled: bool, now_us: int) -> outbox.Endpoint:
    """Pause or resume an endpoint; its pending deliveries wait while it is disabled
    (new messages are not fanned out to it meanwhile). Audited."""
    with store.write() as conn:
        ep = outbox.set_enabled(conn, endpoint_id, enabled)
        audit.record(
            conn, "webhook.enable" if enabled else "webhook.disable", {"endpoint": ep.id}, now_us
        )
    return ep


def list_endpoints(store: Store) -> list[outbox.Endpoint]:
    with store.read() as conn:
        return outbox.endpoints(conn)


def replay(store: Store, message_id: str, now_us: int, endpoint: int | None = None) -> list[int]:
    with store.write() as conn:
        ids = outbox.replay(conn, message_id, now_us, endpoint)
        audit.record(
            conn,
            "webhook.replay",
            {"message_id": message_id, "endpoint": endpoint, "deliveries": ids},
            now_us,
        )
    return ids


def deliveries(
    store: Store, message_id: str | None, status: str | None, limit: int, with_attempts: bool
) -> list[dict[str, Any]]:
    if status is not None and status not in (outbox.PENDING, outbox.DELIVERED, outbox.FAILED):
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, "status must be pending, delivered or failed"
        )
    with store.read() as conn:
        rows = outbox.deliveries(conn, message_id=message_id, status=status, limit=limit)
        if with_attempts:
            for r in rows:
                r["attempts_log"] = outbox.attempts(conn, r["id"])
        return rows


def reconcile_finished(store: Store, report: dict[str, Any], now_us: int) -> bool:
    """reconcile.failed when a reconciliation found a discrepancy. Reconciling
    only reads a snapshot; its outcome is recorded here in a write of its own."""
    if report.get("ok", True):
        return False
    failed = [
        {"name": c["name"], "details": c["details"], "count": c.get("count", 0)}
        for c in report.get("checks", [])
        if not c["ok"]
    ]
    with store.write() as conn:
        return outbox.emit(conn, reconcile_failed(int(report["cutoff_seq"]), failed, now_us))


# --- sending ------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
    """One HTTP POST with a timeout on connect and on every read (stdlib only)."""
    parts = urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout_s)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(outbox.EXCERPT_CHARS)
    finally:
        conn.close()


Sender = Callable[[str, bytes, dict[str, str], float], tuple[int, bytes]]


@dataclass
class Dispatcher:
    store: Store
    clock: Clock
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    rng: Uniform = field(default_factory=default_rng)
    timeout_s: float = DEFAULT_TIMEOUT_S
    lease_us: int = 0  # 0: the timeout plus a minute
    batch: int = 20
    concurrency: int = 4
    name: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    send: Sender = post

    def __post_init__(self) -> None:
        if self.lease_us <= 0:
            self.lease_us = round(self.timeout_s * US_PER_SECOND) + 60 * US_PER_SECOND

    def run_once(self) -> int:
        """Claim due deliveries and attempt each once, `concurrency` at a time (one
        slow endpoint does not hold up the others); returns how many were claimed."""
        now = _now(self.clock)
        with self.store.read() as conn:
            if not outbox.any_due(conn, now):
                return 0
        with self.store.write() as conn:
            claimed = outbox.claim(conn, self.name, now, self.lease_us, self.batch)
        if len(claimed) <= 1 or self.concurrency <= 1:
            for c in claimed:
                self._attempt(c)
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(claimed))) as pool:
                list(pool.map(self._attempt, claimed))
        return len(claimed)

    def _attempt(self, c: outbox.Claimed) -> None:
        # Renew the lease right before sending; a delivery whose lease ran out
        # while it waited (and that another dispatcher took) is not sent twice.
        with self.store.write() as conn:
            if not outbox.renew(conn, c.delivery_id, self.name, _now(self.clock), self.lease_us):
                return
        started = _now(self.clock)
        headers = signing.headers(c.secret, c.message_id, started // US_PER_SECOND, c.body)
        headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
        t0 = time.perf_counter()
        status: int | None = None
        excerpt, error = "", None
        try:
            status, raw = self.send(c.url, c.body, headers, self.timeout_s)
            excerpt = raw.decode("utf-8", "replace")
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency = round((time.perf_counter() - t0) * US_PER_SECOND)
        result = outbox.Outcome(started, latency, status, excerpt, error)
        now = _now(self.clock)
        next_at: int | None = None
        if not result.success:
            first = c.first_attempt_at if c.first_attempt_at is not None else started
            if not self.policy.gives_up(first, now):
                next_at = now + self.policy.delay_us(c.attempts + 1, self.rng)
        with self.store.write() as conn:
            outbox.record_attempt(conn, c, self.name, result, next_at, now)

    def run(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Deliver until `stop` is set, sleeping `idle_s` when nothing is due."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # a store outage must not end the loop; log and retry
                log.exception("webhook dispatch failed; retrying")
                busy = 0
            if not busy:
                stop.wait(idle_s)
