"""The dispatcher as a real process, SIGKILLed in the middle of a delivery:
a second dispatcher sends it again once the lease runs out; nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, clock, setup
from tests.support import ingest
from tests.webhooks.receiver import Receiver

from meterline.services import webhooks
from meterline.store.database import Store
from meterline.webhooks.signing import new_secret

MESSAGES = 5


def dispatcher(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meterline",
                "--db",
                url,
                "webhooks",
                "run",
                "--lease",
                "2",
                "--idle",
                "0.1",
                "--timeout",
                "20",
                "--backoff-base",
                "0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_for(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_sigkill_mid_delivery_redelivers_and_loses_nothing(store: Store, tmp_path: Path) -> None:
    release = threading.Event()
    receiver = Receiver(new_secret(), hang=release).start()
    log = tmp_path / "dispatch.log"
    first: subprocess.Popen[bytes] | None = None
    second: subprocess.Popen[bytes] | None = None
    try:
        webhooks.add_endpoint(store, receiver.url, [], FEB_US, receiver.secret)
        setup(store)
        for i in range(MESSAGES):
            ingest(store, clock(FEB), [f'{{"event_id": {i}}}'])
        first = dispatcher(store.url, log)
        assert receiver.got_request.wait(60), log.read_text()
        # The first request is in flight (the receiver holds it): kill -9 now.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL
        release.set()
        killed_id = receiver.received[0].message_id
        with store.read() as conn:
            assert (
                conn.execute(
                    text("SELECT COUNT(*) FROM webhook_attempts WHERE message_id = :m"),
                    {"m": killed_id},
                ).scalar_one()
                == 0
            )  # the killed process never recorded the send it was in
        second = dispatcher(store.url, log)

        def all_delivered() -> bool:
            with store.read() as conn:
                return (
                    conn.execute(
                        text("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'")
                    ).scalar_one()
                    == MESSAGES
                )

        assert wait_for(all_delivered, 60), log.read_text()
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        # The killed dispatcher had up to 4 requests in flight; the ones its death cut
        # short reached the receiver incomplete (they cannot verify, and are no delivery).
        complete = [r for r in receiver.received if r.complete]
        ids = [r.message_id for r in complete]
        assert ids.count(killed_id) == 2  # at least once: sent again after the kill
        assert len(set(ids)) == MESSAGES
        assert all(r.verified for r in complete)
        with store.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT message_id, COUNT(*) FROM webhook_attempts WHERE outcome = 'success' "
                    "GROUP BY message_id"
                )
            ).all()
        assert len(rows) == MESSAGES and all(int(r[1]) == 1 for r in rows)
    finally:
        release.set()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        receiver.stop()
