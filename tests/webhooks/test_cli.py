"""`meterline webhooks add|list|deliveries|replay|run` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.webhooks.receiver import Receiver

from meterline.store.database import Store
from meterline.webhooks.signing import new_secret


def cli(store: Store, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "meterline", "--db", store.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env=env,
    )


def ok(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.lstrip().startswith(("{", "[")) else done.stdout


def test_webhooks_commands(store: Store, tmp_path: Path) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        added = ok(
            cli(store, "webhooks", "add", receiver.url, "--type", "events.rejected", "--json")
        )
        assert added["secret"].startswith("whsec_") and added["event_types"] == ["events.rejected"]
        receiver.secret = added["secret"]  # the generated secret
        listed = ok(cli(store, "webhooks", "list", "--json"))
        assert [e["url"] for e in listed] == [receiver.url] and "secret" not in listed[0]

        bad = tmp_path / "bad.ndjson"
        bad.write_text('{"event_id": "e1"}\nnot json\n')
        assert ok(cli(store, "ingest", str(bad), "--json"))["rejected"] == 2
        assert "attempted 1 deliveries" in ok(cli(store, "webhooks", "run", "--once"))
        [got] = receiver.received
        assert got.verified and got.payload["data"]["rejected"] == 2

        [row] = ok(cli(store, "webhooks", "deliveries", "--attempts", "--json"))
        assert row["status"] == "delivered" and row["attempts_log"][0]["status_code"] == 200
        replayed = ok(cli(store, "webhooks", "replay", row["message_id"], "--json"))
        assert len(replayed["deliveries"]) == 1
        ok(cli(store, "webhooks", "run", "--once"))
        assert [r.message_id for r in receiver.received] == [row["message_id"]] * 2
        assert all(r.verified for r in receiver.received)

        assert ok(cli(store, "webhooks", "disable", str(added["id"]), "--json"))["enabled"] is False
        ok(cli(store, "webhooks", "replay", row["message_id"], "--endpoint", str(added["id"])))
        assert "attempted 0 deliveries" in ok(cli(store, "webhooks", "run", "--once"))
        assert "enabled" in ok(cli(store, "webhooks", "enable", str(added["id"])))
        assert "attempted 1 deliveries" in ok(cli(store, "webhooks", "run", "--once"))
        assert len(receiver.received) == 3

        for args, message in (
            (("webhooks", "add", "ftp://x"), "webhook URL must be http(s)"),
            (("webhooks", "add", receiver.url, "--secret", "nope"), "must start with whsec_"),
            (("webhooks", "replay", "msg_missing"), "WEBHOOK_NOT_FOUND"),
            (("webhooks", "deliveries", "--status", "lost"), "status must be"),
            (("webhooks", "disable", "42"), "no webhook endpoint 42"),
        ):
            done = cli(store, *args)
            assert done.returncode == 2 and message in done.stderr, done.stderr
            assert "Traceback" not in done.stderr
    finally:
        receiver.stop()
