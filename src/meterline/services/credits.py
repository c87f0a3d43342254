"""Credit grants: grant, void, expire, list and balance (DESIGN §13).

Every change is one write transaction holding the knowledge-sequence lock: the
credit fact, its ledger entry and the audit row commit together or not at all.
Rollover and expiry breakage at a period close run inside the invoice's own
transaction (`settle_period`, called by services/invoicing.py), so they happen
exactly once per issued invoice; `meterline credits expire` posts the breakage
of grants that expired with no invoice to close them. See docs/SEMANTICS.md
"Credit grants" for the rules.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.engine import Connection

from meterline.billing.credits import (
    DEFAULT_PRIORITY,
    Grant,
    GrantKind,
    GrantState,
    Source,
    expiry_breakage,
    rollover_breakage,
    summarize,
    view,
)
from meterline.billing.customers import Customer
from meterline.billing.periods import Period
from meterline.domain.clock import Clock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import MAX_EVENT_TIME_US, MIN_EVENT_TIME_US
from meterline.domain.money import Currency, money_str
from meterline.domain.timestamps import InvalidTimestamp, format_us, from_datetime, parse_rfc3339
from meterline.ledger.credit_postings import EXPIRY, GRANT, ROLLOVER, VOID
from meterline.store import audit, balance_projections, credit_facts, sequence
from meterline.store.customer_catalog import customer_ids, load_customer, load_customers_by_id
from meterline.store.database import Store
from meterline.store.facts import facts

_GRANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,31}")
MAX_PRIORITY = 1_000_000


def _bad(message: str) -> MeterlineError:
    return MeterlineError(ErrorCode.INVALID_ARGUMENT, message)


def _amount(raw: str, what: str, currency: Currency, *, zero_ok: bool = False) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise _bad(f"{what}: {raw!r} is not a decimal number") from None
    if not value.is_finite() or value < 0 or (value == 0 and not zero_ok):
        raise _bad(f"{what}: {raw!r} must be a positive amount")
    if value >= Decimal("1e15"):
        raise _bad(f"{what}: {raw!r} is too large (at most 999999999999999)")
    if value != value.quantize(currency.quantum):
        raise _bad(f"{what}: {raw!r} has more digits than {currency.code} allows")
    return value.quantize(currency.quantum)


def _instant(raw: str, what: str) -> int:
    try:
        us = parse_rfc3339(raw)
    except InvalidTimestamp as exc:
        raise _bad(f"{what}: {exc}") from None
    if not MIN_EVENT_TIME_US <= us < MAX_EVENT_TIME_US:
        raise _bad(f"{what}: {raw!r} is outside 1970-01-01T00:00:00Z to 9000-01-01T00:00:00Z")
    return us


def grant(
    store: Store,
    customer_id: str,
    amount: str,
    now_us: int,
    *,
    priority: int | None = None,
    expires_at: str | None = None,
    rollover: str | None = None,
    kind: str = "paid",
    effective_at: str | None = None,
    grant_id: str | None = None,
) -> dict[str, Any]:
    """Record a credit grant (a fact) and post it: paid debits cash, promotional
    debits promotions; both credit the customer's credit liability."""
    if kind not in {k.value for k in GrantKind}:
        raise _bad(f"kind: {kind!r}; expected paid or promotional")
    if priority is not None and not 0 <= priority <= MAX_PRIORITY:
        raise _bad(f"priority: {priority} must be from 0 to {MAX_PRIORITY}")
    if grant_id is not None and not _GRANT_ID.fullmatch(grant_id):
        raise _bad(
            f"id: {grant_id!r} must be 1 to 32 letters, digits or . _ : - (starting with a "
            "letter or digit)"
        )
    effective = now_us if effective_at is None else _instant(effective_at, "effective")
    expires = None if expires_at is None else _instant(expires_at, "expires")
    if expires is not None and expires <= effective:
        raise _bad("expires: must be after the grant's effective time")
    with store.write() as conn:
        k = sequence.lock(conn)
        customer = load_customer(conn, customer_id, k)
        currency = customer.currency
        value = _amount(amount, "amount", currency)
        cap = None if rollover is None else _amount(rollover, "rollover", currency, zero_ok=True)
        seq = sequence.take(conn)
        gid = grant_id or f"gr-{seq}"
        if credit_facts.grant_fact(conn, gid) is not None or any(
            c.id == gid for c in customer.credits
        ):
            raise MeterlineError(
                ErrorCode.CREDIT_GRANT_EXISTS, f"a credit grant {gid!r} already exists"
            )
        g = Grant(
            gid,
            customer.id,
            currency.code,
            value,
            effective,
            DEFAULT_PRIORITY if priority is None else priority,
            expires,
            cap,
            GrantKind(kind),
        )
        credit_facts.record(conn, seq, GRANT, g, value, {}, now_us)
        audit.record(conn, "credit_grant", {"seq": seq, **g.definition()}, now_us)
        return _row(GrantState(g), now_us, seq)


def void(store: Store, grant_id: str, reason: str, now_us: int) -> dict[str, Any]:
    """Void a grant: a new fact releasing what is left of it (never an update).
    What invoices already used stays used (docs/SEMANTICS.md)."""
    if not reason.strip() or len(reason) > 1000 or "\x00" in reason:
        raise _bad("reason: a void needs a reason (1 to 1000 characters, no NUL)")
    with store.write() as conn:
        k = sequence.lock(conn)
        fact = credit_facts.grant_fact(conn, grant_id)
        if fact is None:
            raise MeterlineError(ErrorCode.CREDIT_GRANT_NOT_FOUND, f"no credit grant {grant_id!r}")
        state = _state(conn, fact.customer_id, grant_id, k)
        if state.is_void:
            raise MeterlineError(
                ErrorCode.CREDIT_GRANT_VOID, f"credit grant {grant_id!r} is already void"
            )
        released = max(state.remaining, Decimal(0))
        seq = sequence.take(conn)
        credit_facts.record(conn, seq, VOID, state.grant, released, {"reason": reason}, now_us)
        audit.record(
            conn,
            "credit_void",
            {
                "grant": grant_id,
                "customer": fact.customer_id,
                "released": str(released),
                "reason": reason,
            },
            now_us,
        )
        voided = GrantState(state.grant, state.used, state.expired, released, reason)
        return _row(voided, now_us, fact.seq)


def _state(conn: Connection, customer_id: str, grant_id: str, k: int) -> GrantState:
    customer = load_customer(conn, customer_id, k)
    for s in credit_facts.states(conn, customer, k):
        if s.grant.id == grant_id and s.grant.source is Source.GRANT:
            return s
    raise MeterlineError(ErrorCode.CREDIT_GRANT_NOT_FOUND, f"no credit grant {grant_id!r}")


def _breakage(
    conn: Connection,
    state: GrantState,
    action: str,
    amount: Decimal,
    details: dict[str, Any],
    now_us: int,
) -> dict[str, Any]:
    seq = sequence.take(conn)
    credit_facts.record(conn, seq, action, state.grant, amount, details, now_us)
    return {
        "seq": seq,
        "grant": state.grant.id,
        "customer_id": state.grant.customer_id,
        "action": action,
        "amount": money_str(amount, Currency(state.grant.currency)),
        **details,
    }


def settle_period(conn: Connection, customer_id: str, period: Period, now_us: int) -> None:
    """At a period close (its invoice was just appended, same transaction): rollover
    breakage above each cap, then the breakage of grants expired by the period end."""
    if not credit_facts.has_grants(conn, customer_id):
        return  # catalog credits post no breakage: nothing to settle (the common case)
    k = sequence.current(conn)
    customer = load_customer(conn, customer_id, k)
    posted: list[dict[str, Any]] = []
    for s in credit_facts.states(conn, customer, k):
        if s.grant.source is not Source.GRANT or s.is_void:
            continue
        if s.grant.covers(period.start, period.end) and s.grant.rollover is not None:
            amount = rollover_breakage(s)
            if amount > 0 and not credit_facts.rollover_done(conn, s.grant.id, period.label):
                posted.append(
                    _breakage(conn, s, ROLLOVER, amount, {"period": period.label}, now_us)
                )
                s = GrantState(s.grant, s.used, s.expired + amount, s.voided, s.void_reason)
        amount = expiry_breakage(s, period.end)
        if amount > 0:
            posted.append(_breakage(conn, s, EXPIRY, amount, {"closed_by": period.label}, now_us))
    if posted:
        audit.record(conn, "credit_breakage", {"customer": customer_id, "posted": posted}, now_us)


def expire(store: Store, now_us: int, customer: str | None = None) -> list[dict[str, Any]]:
    """Post the breakage of every grant expired by `now_us` with something left
    (idempotent: a second run finds nothing left to expire)."""
    posted: list[dict[str, Any]] = []
    with store.write() as conn:
        k = sequence.lock(conn)
        targets = [customer] if customer else credit_facts.customers_with_grants(conn)
        for cid in targets:
            c = load_customer(conn, cid, k)
            for s in credit_facts.states(conn, c, k):
                if s.grant.source is not Source.GRANT:
                    continue
                amount = expiry_breakage(s, now_us)
                if amount > 0:
                    posted.append(
                        _breakage(conn, s, EXPIRY, amount, {"at": format_us(now_us)}, now_us)
                    )
        if posted:
            audit.record(conn, "credit_expire", {"posted": posted}, now_us)
    return posted


def _status(s: GrantState, now_us: int) -> str:
    if s.is_void:
        return "void"
    if s.grant.expired_by(now_us):
        return "expired"
    if s.grant.effective_at > now_us:
        return "scheduled"
    return "active" if s.remaining > 0 else "used"


def _row(s: GrantState, now_us: int, seq: int | None = None) -> dict[str, Any]:
    g = s.grant
    cur = Currency(g.currency)
    expired, available = view(s, now_us)
    return {
        "id": g.id,
        "customer_id": g.customer_id,
        "source": g.source.value,
        "seq": seq,
        "kind": g.kind.value,
        "currency": g.currency,
        "amount": money_str(g.amount, cur),
        "priority": g.priority,
        "effective_at": format_us(g.effective_at),
        "expires_at": None if g.expires_at is None else format_us(g.expires_at),
        "rollover": None if g.rollover is None else money_str(g.rollover, cur),
        "used": money_str(s.used, cur),
        "expired": money_str(expired, cur),
        "voided": money_str(s.voided, cur),
        "available": money_str(available, cur),
        "status": _status(s, now_us),
        "void_reason": s.void_reason,
    }


def _grants(
    conn: Connection, customer_id: str, k: int | None = None
) -> tuple[Any, list[GrantState], dict[str, int]]:
    k = sequence.current(conn) if k is None else k
    customer = load_customer(conn, customer_id, k)
    rows = credit_facts.facts(conn, customer_id, k)
    from meterline.store import documents

    states = credit_facts.states_from(rows, customer, documents.credits_spent(conn, customer_id, k))
    seqs = {f.grant_id: f.seq for f in rows if f.action == GRANT}
    states.sort(key=lambda s: s.grant.order_key())
    return customer, states, seqs


def list_grants(store: Store, customer_id: str, now_us: int) -> list[dict[str, Any]]:
    """Every grant of the customer in consumption order, with what is left of it."""
    with store.read() as conn:
        _, states, seqs = _grants(conn, customer_id)
    return [_row(s, now_us, seqs.get(s.grant.id)) for s in states]


# The open period's amount due depends only on the facts `Facts.rating_basis`
# names. It is looked up, in order, in this process's memory and in the balance
# projection (`refresh` keeps it, store/balance_projections.py), each keyed by the
# basis as known now, and only rated when neither holds it for that basis: a
# balance read again, or read after `refresh`, skips re-rating until something
# that can change this customer's rating is recorded, however much the rest of
# the store moved. Memory is bounded; cleared when full.
_DUE_CACHE_SIZE = 20_000
_due_cache: dict[tuple[str, str, str, tuple[int, ...]], Decimal] = {}
_due_lock = threading.Lock()


def _rate_open(conn: Connection, customer: Customer, label: str, k: int) -> Decimal:
    """subtotal + tax of the period's draft as known at K: the preview path
    (services/invoicing.py plan + measure + assemble) without the tree head and the
    finance details a draft document carries, which a balance does not need."""
    from meterline.billing.invoice import assemble
    from meterline.services.invoicing import measure_plan, plan_billing

    b = measure_plan(conn, plan_billing(conn, customer.id, label, k, customer=customer), k)
    body = assemble(b.customer, b.period, b.subscriptions, k, [])
    # the money as the body writes it (the same Decimal as before the typed body)
    return Decimal(body.text(body.subtotal)) + Decimal(body.text(body.tax))


def _open_due(conn: Connection, url: str, customer: Customer, label: str, k: int) -> Decimal:
    basis = facts(conn).rating_basis(customer.id, k)
    key = (url, customer.id, label, basis)
    with _due_lock:
        found = _due_cache.get(key)
    if found is not None:
        return found
    stored = balance_projections.read(conn, customer.id, label)
    due = stored[1] if stored is not None and stored[0] == basis else None
    if due is None:
        due = _rate_open(conn, customer, label, k)
    with _due_lock:
        if len(_due_cache) >= _DUE_CACHE_SIZE:
            _due_cache.clear()
        _due_cache[key] = due
    return due


def _open_period(customer: Customer, now_us: int) -> Period | None:
    """The period of the customer's cycle open at now, if a subscription covers it."""
    period = customer.cycles()[0].period_of(now_us)
    return period if customer.subscriptions_in(period.start, period.end) else None


@dataclass(frozen=True)
class Refreshed:
    """What one `refresh` pass did: customers re-rated (and checked), up to K."""

    rated: int
    checked: int
    known_at: int
    failed: dict[str, str]


REFRESH_CHUNK = 200


def refresh(store: Store, now_us: int, since: int = 0) -> Refreshed:
    """Re-rate into the balance projection every customer whose rating basis may
    have moved in (since, K], K the knowledge seq at the start (`since` 0: all).
    The next pass starts from the returned `known_at`. A customer that cannot be
    rated (e.g. no price book in its currency) is left out, with the reason."""
    with store.read() as conn:
        k = sequence.current(conn)
        changed = None if since == 0 else facts(conn).rated_customers_changed(since, k)
        ids = customer_ids(conn, k) if changed is None else sorted(changed)
    rated = checked = 0
    failed: dict[str, str] = {}
    for i in range(0, len(ids), REFRESH_CHUNK):
        rows: list[tuple[str, str, tuple[int, ...], Decimal, int]] = []
        with store.read() as conn:
            k_now = sequence.current(conn)
            port = facts(conn)
            for cid, found in load_customers_by_id(conn, ids[i : i + REFRESH_CHUNK], k_now).items():
                checked += 1
                if isinstance(found, MeterlineError):
                    failed[cid] = found.message
                    continue
                period = _open_period(found, now_us)
                if period is None:
                    continue
                basis = port.rating_basis(cid, k_now)
                stored = balance_projections.read(conn, cid, period.label)
                if stored is not None and stored[0] == basis:
                    continue
                try:
                    due = _rate_open(conn, found, period.label, k_now)
                except MeterlineError as exc:
                    failed[cid] = exc.message
                    continue
                rows.append((cid, period.label, basis, due, k_now))
        if rows:
            with store.write() as conn:
                balance_projections.write(conn, rows)
            rated += len(rows)
    return Refreshed(rated, checked, k, failed)


def refresh_forever(store: Store, clock: Clock, stop: threading.Event, idle_s: float = 1.0) -> None:
    """`refresh` in a loop until `stop`: a full pass first, then the customers whose
    basis moved since the previous pass, waiting `idle_s` when nothing moved."""
    since = 0
    while not stop.is_set():
        done = refresh(store, from_datetime(clock.now()), since)
        if done.known_at == since:
            stop.wait(idle_s)
        since = done.known_at


def balance(store: Store, customer_id: str, now_us: int) -> dict[str, Any]:
    """granted = used + expired + voided + available; projected = available minus
    what the open period's usage, rated as known now, comes to (before credits)."""
    with store.read() as conn:
        k = sequence.current(conn)
        customer, states, seqs = _grants(conn, customer_id, k)
        cur = customer.currency
        open_period: dict[str, Any] | None = None
        due = Decimal(0)
        period = _open_period(customer, now_us)
        if period is not None:
            due = _open_due(conn, store.url, customer, period.label, k)
            open_period = {**period.to_dict(), "due": money_str(due, cur)}
    total = summarize(states, now_us)
    return {
        "customer_id": customer.id,
        "currency": cur.code,
        "as_of_seq": k,
        "at": format_us(now_us),
        "granted": money_str(total.granted, cur),
        "used": money_str(total.used, cur),
        "expired": money_str(total.expired, cur),
        "voided": money_str(total.voided, cur),
        "available": money_str(total.available, cur),
        "projected": money_str(total.available - due, cur),
        "open_period": open_period,
        "grants": [_row(s, now_us, seqs.get(s.grant.id)) for s in states],
    }
