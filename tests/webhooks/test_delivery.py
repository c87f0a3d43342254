"""Webhooks end to end on both backends (DESIGN §14): facts write messages in
their own transactions; a dispatcher signs and delivers them to a real receiver
on loopback, which verifies every signature with `standardwebhooks`."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january, setup
from tests.support import event, ingest
from tests.webhooks.receiver import Receiver

from meterline.billing.document import Status
from meterline.domain.clock import SystemClock
from meterline.domain.errors import ErrorCode
from meterline.domain.timestamps import US_PER_SECOND, parse_rfc3339
from meterline.services import invoicing, webhooks
from meterline.services.corrections import rerate
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.store import documents, outbox, sequence, webhook_facts
from meterline.store.database import Store
from meterline.store.event_log import BatchHeader, Reject, append_batch
from meterline.webhooks.events import EMITTED_TODAY, EventType
from meterline.webhooks.retry import RetryPolicy
from meterline.webhooks.signing import new_secret

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


class StepClock:
    """A clock that starts at the wall clock and moves only when told to."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, us: int) -> None:
        self.at += timedelta(microseconds=us)


def drain(d: webhooks.Dispatcher, rounds: int = 50) -> None:
    for _ in range(rounds):
        if d.run_once() == 0:
            return


def endpoint(store: Store, receiver: Receiver, types: list[str] | None = None) -> outbox.Endpoint:
    return webhooks.add_endpoint(store, receiver.url, types or [], FEB_US, receiver.secret)


def messages(store: Store) -> list[tuple[str, str]]:
    with store.read() as conn:
        rows = conn.execute(text("SELECT id, type FROM webhook_messages ORDER BY created_at, id"))
        return [(str(r[0]), str(r[1])) for r in rows]


def two_customers() -> dict[str, object]:
    doc = catalog()
    doc["customers"] = [
        {
            "id": cid,
            "name": cid.title(),
            "currency": "USD",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        }
        for cid in ("acme", "beta")
    ]
    # usage.threshold_crossed and entitlement.exhausted (DESIGN §13) for acme
    doc["features"] = [{"code": "api", "name": "API", "meter": "api_calls"}]
    doc["customers"][0]["entitlements"] = [{"feature": "api", "limit": 9_000}]
    doc["customers"][0]["alerts"] = [{"code": "busy", "meter": "api_calls", "threshold": 5_000}]
    return doc


def test_every_event_type_emitted_today_is_delivered_signed(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        endpoint(store, receiver)
        setup(store, two_customers())
        bad = ingest(
            store,
            clock(FEB),
            [*calls(9_500), *calls(10, prefix="b", customer="beta"), '{"event_id": 1}'],
        )
        assert bad.rejected == 1
        close_january(store)
        issued = invoicing.issue(store, "2024-01", FEB_US).issued
        by_customer = {d.body.customer_id: d.number for d in issued}
        invoicing.set_status(store, by_customer["acme"], Status.PAID, "wire 42", FEB_US)
        invoicing.set_status(store, by_customer["beta"], Status.VOID, "duplicate", FEB_US)
        ingest(store, clock("2024-02-03T00:00:00Z"), calls(1_000, prefix="late"))
        [debit] = rerate(store, LATER_US).issued
        for i in range(2_000):
            retract_event(store, "default", f"c{i}", "faulty gateway", LATER_US)
        [credit] = rerate(store, LATER_US).issued
        assert (debit.kind, credit.kind) == ("debit_note", "credit_note")
        with store.write() as conn:
            conn.execute(
                text("DELETE FROM events WHERE event_id = 'c7'")
            )  # the log lost an event: the windows no longer tie out
        report = reconcile(store)
        assert not report.ok
        assert webhooks.reconcile_finished(store, report.to_json(), LATER_US)

        emitted = messages(store)
        assert {t for _, t in emitted} == {str(t) for t in EMITTED_TODAY}
        drain(webhooks.Dispatcher(store, SystemClock()))
        got = receiver.verified()
        assert len(got) == len(receiver.received) == len(emitted)
        assert sorted(r.message_id for r in got) == sorted(i for i, _ in emitted)
        payloads = {r.payload["type"]: r.payload for r in got}
        assert set(payloads) == {str(t) for t in EMITTED_TODAY}
        for p in payloads.values():
            assert set(p) == {"type", "timestamp", "data"}
        assert payloads["invoice.issued"]["data"]["total"] in ("147.50", "0.20")
        assert payloads["invoice.paid"]["data"]["number"] == by_customer["acme"]
        assert payloads["invoice.voided"]["data"]["reason"] == "duplicate"
        assert payloads["debit_note.issued"]["data"]["corrects"] == by_customer["acme"]
        rejected = payloads["events.rejected"]["data"]
        assert (rejected["rejected"], rejected["rejects"][0]["index"]) == (1, 9_510)
        closed = [r.payload["data"] for r in got if r.payload["type"] == "period.closed"]
        assert sorted((c["customer_id"], c["period"]["label"]) for c in closed) == [
            ("acme", "2024-01"),
            ("beta", "2024-01"),
        ]
        assert payloads["reconcile.failed"]["data"]["failed_checks"]
        crossed = payloads["usage.threshold_crossed"]["data"]
        assert (crossed["customer_id"], crossed["alert"]["code"]) == ("acme", "busy")
        exhausted = payloads["entitlement.exhausted"]["data"]
        assert (exhausted["feature"], exhausted["limit"], exhausted["has_access"]) == (
            "api",
            "9000",
            False,
        )
        with store.read() as conn:
            assert outbox.deliveries(conn, status="pending") == []
    finally:
        receiver.stop()


def test_period_closed_once_per_customer_period(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(10))
    close_january(store)
    close_january(store)  # the watermark does not move again
    ingest(
        store,
        clock("2024-02-02T12:00:00Z"),
        [event("hb2", customer="nobody", type_="ping", time="2024-02-02T11:00:00Z")],
    )
    closed = [i for i, t in messages(store) if t == "period.closed"]
    assert len(closed) == 1


def test_a_rolled_back_fact_sends_nothing(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        endpoint(store, receiver)
        setup(store)
        ingest(store, clock(FEB), calls(10))
        close_january(store)
        [doc] = invoicing.issue(store, "2024-01", FEB_US).issued
        before = messages(store)

        def pending(conn: Connection) -> int:
            return int(conn.execute(text("SELECT COUNT(*) FROM webhook_messages")).scalar_one())

        with pytest.raises(RuntimeError), store.write() as conn:
            sequence.lock(conn)
            documents.set_status(conn, doc.number, Status.PAID, "bounced", FEB_US)
            assert pending(conn) == len(before) + 1  # written with the fact...
            raise RuntimeError("the payment provider said no after all")

        header = BatchHeader(FEB_US, "test", "default", False)
        rejects = [Reject(0, None, ErrorCode.INVALID_JSON, "not JSON", b"{")]
        with pytest.raises(RuntimeError), store.write() as conn:
            result = append_batch(conn, header, [], rejects, 0)
            webhook_facts.ingest_batch(conn, header, result, rejects, FEB_US)
            assert pending(conn) == len(before) + 1
            raise RuntimeError("the batch failed after its rejects were recorded")
        # ...and rolled back with it
        assert messages(store) == before
        drain(webhooks.Dispatcher(store, SystemClock()))
        types = {r.payload["type"] for r in receiver.received}
        assert "invoice.paid" not in types and "events.rejected" not in types
        assert len(receiver.received) == len(before)
    finally:
        receiver.stop()


def test_tampered_payload_or_wrong_secret_fails_verification(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        endpoint(store, receiver)
        setup(store)
        ingest(store, clock(FEB), ['{"event_id": 1}'])
        drain(webhooks.Dispatcher(store, SystemClock()))
        [r] = receiver.received
        assert r.verified and r.headers["webhook-signature"].startswith("v1,")
        Webhook(receiver.secret).verify(r.body, r.headers)
        tampered = r.body.replace(b'"rejected":1', b'"rejected":0')
        assert tampered != r.body
        with pytest.raises(WebhookVerificationError):
            Webhook(receiver.secret).verify(tampered, r.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(r.body, r.headers)
        forged = dict(r.headers, **{"webhook-id": "msg_other"})
        with pytest.raises(WebhookVerificationError):
            Webhook(receiver.secret).verify(r.body, forged)
    finally:
        receiver.stop()


def test_receiver_down_then_up_backs_off_then_delivers_once(store: Store) -> None:
    receiver = Receiver(new_secret())
    receiver.start()
    url_port = receiver.port
    receiver.stop()  # down: connection refused
    endpoint(store, receiver)
    setup(store)
    ingest(store, clock(FEB), ['{"event_id": 1}'])
    policy = RetryPolicy(
        base_us=2 * US_PER_SECOND, cap_us=8 * US_PER_SECOND, window_us=120 * US_PER_SECOND
    )
    steps = StepClock()
    d = webhooks.Dispatcher(store, steps, policy=policy, rng=random.Random(7), timeout_s=2)
    expected = random.Random(7)
    for attempt in range(1, 5):
        assert d.run_once() == 1
        [row] = webhooks.deliveries(store, None, None, 10, True)
        assert row["status"] == "pending" and row["attempts"] == attempt
        wait = round(expected.uniform(0.0, float(policy.ceiling(attempt))))
        due = parse_rfc3339(row["next_attempt_at"])
        now = int(steps.now().timestamp() * 1_000_000)
        assert due - now == wait  # exponential ceiling, full jitter from the injected RNG
        assert d.run_once() == 0 or wait == 0  # nothing is due before the backoff ends
        steps.advance(policy.ceiling(attempt))
    receiver.port = url_port
    receiver.start()
    try:
        assert d.run_once() == 1
        assert d.run_once() == 0
        steps.advance(policy.cap_us * 3)
        assert d.run_once() == 0
        [row] = webhooks.deliveries(store, None, None, 10, True)
        assert row["status"] == "delivered"
        log = row["attempts_log"]
        assert [a["outcome"] for a in log] == ["failure"] * 4 + ["success"]
        assert all("ConnectionRefusedError" in (a["error"] or "") for a in log[:4])
        assert log[-1]["status_code"] == 200 and log[-1]["response_excerpt"] == "ok"
        assert len(receiver.received) == 1 and receiver.received[0].verified
    finally:
        receiver.stop()


def test_retry_window_spent_marks_failed_and_replay_delivers(store: Store) -> None:
    receiver = Receiver(new_secret(), status=503).start()
    try:
        ep = endpoint(store, receiver)
        setup(store)
        ingest(store, clock(FEB), ['{"event_id": 1}'])
        policy = RetryPolicy(
            base_us=US_PER_SECOND, cap_us=4 * US_PER_SECOND, window_us=10 * US_PER_SECOND
        )
        steps = StepClock()
        d = webhooks.Dispatcher(store, steps, policy=policy, rng=random.Random(1))
        for _ in range(20):
            d.run_once()
            steps.advance(4 * US_PER_SECOND)
        [row] = webhooks.deliveries(store, None, None, 10, True)
        assert row["status"] == "failed"
        assert all(a["status_code"] == 503 for a in row["attempts_log"])
        assert 3 <= row["attempts"] <= 5  # 10 s window, 4 s steps
        assert d.run_once() == 0
        receiver.status = 200
        ids = webhooks.replay(store, row["message_id"], FEB_US)
        assert len(ids) == 1
        assert d.run_once() == 1
        fresh = webhooks.deliveries(store, row["message_id"], "delivered", 10, False)
        assert [f["id"] for f in fresh] == ids and fresh[0]["endpoint_id"] == ep.id
        with store.read() as conn:
            actions = [
                str(r[0])
                for r in conn.execute(
                    text("SELECT action FROM audit_log WHERE action LIKE 'webhook.%' ORDER BY id")
                )
            ]
        assert actions == ["webhook.add", "webhook.replay"]
    finally:
        receiver.stop()


def test_concurrent_dispatchers_deliver_each_message_once(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        endpoint(store, receiver)
        setup(store)
        for i in range(30):
            ingest(store, clock(FEB), [f'{{"event_id": {i}}}'])
        workers = [webhooks.Dispatcher(store, SystemClock(), batch=3) for _ in range(3)]
        threads = [threading.Thread(target=drain, args=(w, 100)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ids = receiver.ids()
        assert len(ids) == 30 and len(set(ids)) == 30
        assert all(r.verified for r in receiver.received)
        with store.read() as conn:
            succeeded = conn.execute(
                text("SELECT COUNT(*) FROM webhook_attempts WHERE outcome = 'success'")
            ).scalar_one()
        assert succeeded == 30
    finally:
        receiver.stop()


def test_subscriptions_filter_types(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        endpoint(store, receiver, [str(EventType.INVOICE_ISSUED)])
        setup(store)
        ingest(store, clock(FEB), [*calls(5), '{"event_id": 1}'])
        close_january(store)
        invoicing.issue(store, "2024-01", FEB_US)
        drain(webhooks.Dispatcher(store, SystemClock()))
        assert [r.payload["type"] for r in receiver.received] == ["invoice.issued"]
    finally:
        receiver.stop()


def test_default_policy_gives_up_after_about_three_days(store: Store) -> None:
    receiver = Receiver(new_secret(), status=503).start()
    try:
        endpoint(store, receiver)
        setup(store)
        ingest(store, clock(FEB), ['{"event_id": 1}'])
        steps = StepClock()
        d = webhooks.Dispatcher(store, steps, rng=random.Random(3))
        policy = d.policy
        assert policy.window_us == 3 * 86_400 * US_PER_SECOND
        for _ in range(400):  # 400 x 15 min = 100 hours
            d.run_once()
            steps.advance(15 * 60 * US_PER_SECOND)
        [row] = webhooks.deliveries(store, None, None, 10, True)
        assert row["status"] == "failed"
        log = row["attempts_log"]
        first, last = (parse_rfc3339(a["started_at"]) for a in (log[0], log[-1]))
        assert (
            3 * 86_400 * US_PER_SECOND
            <= last - first
            < 3 * 86_400 * US_PER_SECOND + policy.cap_us + 15 * 60 * US_PER_SECOND
        )
        assert 10 <= len(log) <= 60
        assert len(receiver.received) == len(log)
    finally:
        receiver.stop()


def test_an_idle_dispatcher_takes_no_write_transaction(store: Store) -> None:
    """Nothing due: the dispatcher only reads. On SQLite a write transaction every
    second would take the file's lock from an ingesting server's writer."""
    writes = 0
    real_write = store.write

    def counting_write():  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return real_write()

    store.write = counting_write  # type: ignore[method-assign]
    d = webhooks.Dispatcher(store, SystemClock())
    assert d.run_once() == 0
    assert writes == 0
    receiver = Receiver(new_secret()).start()
    try:
        store.write = real_write  # type: ignore[method-assign]
        endpoint(store, receiver)
        setup(store)
        ingest(store, clock(FEB), ['{"event_id": 1}'])  # a rejected event: a message is due
        store.write = counting_write  # type: ignore[method-assign]
        assert d.run_once() >= 1
        assert writes >= 1
        assert receiver.received
    finally:
        receiver.stop()
