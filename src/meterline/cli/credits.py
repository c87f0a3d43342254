"""`meterline credits grant|void|list|expire` and `meterline balance` (DESIGN §13)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import typer

from meterline.cli import output
from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime
from meterline.services import credits

credits_app = typer.Typer(
    help="Credit grants: grant, void, list, expire (DESIGN §13).", no_args_is_help=True
)

_GRANT_COLUMNS = (
    "grant",
    "kind",
    "priority",
    "effective",
    "expires",
    "amount",
    "used",
    "expired",
    "voided",
    "available",
    "status",
)


def _now(ctx: typer.Context) -> int:
    return from_datetime(settings(ctx).clock().now())


def _grant_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            r["id"] + (" (catalog)" if r["source"] == "catalog" else ""),
            r["kind"],
            str(r["priority"]),
            r["effective_at"],
            r["expires_at"] or "-",
            r["amount"],
            r["used"],
            r["expired"],
            r["voided"],
            r["available"],
            r["status"],
        )
        for r in rows
    ]


@credits_app.command("grant")
@handles_errors
def grant(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="The customer's id."),
    amount: str = typer.Option(..., "--amount", help="In the customer's currency, e.g. 100.00."),
    priority: int = typer.Option(None, "--priority", help="Lower is used first (default 10)."),
    expires: str = typer.Option(None, "--expires", help="RFC 3339 instant it expires at."),
    rollover: str = typer.Option(
        None, "--rollover", help="Cap kept at each period end; the rest expires as breakage."
    ),
    kind: str = typer.Option("paid", "--kind", help="paid (a top-up) or promotional."),
    effective: str = typer.Option(
        None, "--effective", help="RFC 3339 instant it takes effect (default: now)."
    ),
    grant_id: str = typer.Option(None, "--id", help="The grant's id (default gr-<seq>)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Grant credit to a customer: a fact, posted to the ledger, in the audit trail.

    \b
    Examples:
      meterline credits grant acme --amount 100.00
      meterline credits grant acme --amount 50 --kind promotional --expires 2024-12-31T00:00:00Z
    """
    row = credits.grant(
        settings(ctx).store(),
        customer,
        amount,
        _now(ctx),
        priority=priority,
        expires_at=expires,
        rollover=rollover,
        kind=kind,
        effective_at=effective,
        grant_id=grant_id,
    )
    if as_json:
        print_json(row)
        return
    typer.echo(f"granted {row['amount']} {row['currency']} to {customer} as {row['id']}")


@credits_app.command("void")
@handles_errors
def void(
    ctx: typer.Context,
    grant_id: str = typer.Argument(..., help="The grant's id."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the fact and the audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Void a grant: what is left of it is released (what was used stays used).

    \b
    Examples:
      meterline credits void gr-42 --reason "granted by mistake"
    """
    row = credits.void(settings(ctx).store(), grant_id, reason, _now(ctx))
    if as_json:
        print_json(row)
        return
    typer.echo(f"voided {grant_id}: {row['voided']} {row['currency']} released")


@credits_app.command("list")
@handles_errors
def list_command(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="The customer's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """A customer's grants in consumption order (priority, expiry, age).

    \b
    Examples:
      meterline credits list acme
    """
    rows = credits.list_grants(settings(ctx).store(), customer, _now(ctx))
    if as_json:
        print_json(rows)
        return
    output.table(_GRANT_COLUMNS, _grant_rows(rows), title=f"credit grants of {customer}")


@credits_app.command("expire")
@handles_errors
def expire(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer", help="Only this customer's grants."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Post the breakage of grants expired by now (--now to set the clock); idempotent.

    \b
    Examples:
      meterline credits expire
      meterline --now 2024-07-01T00:00:00Z credits expire --customer acme
    """
    posted = credits.expire(settings(ctx).store(), _now(ctx), customer)
    if as_json:
        print_json(posted)
        return
    if not posted:
        typer.echo("no expired credit left to post")
        return
    output.table(
        ("seq", "grant", "customer", "breakage"),
        [(str(p["seq"]), p["grant"], p["customer_id"], p["amount"]) for p in posted],
    )


@handles_errors
def balance_command(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="The customer's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """A customer's credit: granted, used, expired, voided, available and projected.

    \b
    Examples:
      meterline balance acme
      meterline balance acme --json
    """
    b = credits.balance(settings(ctx).store(), customer, _now(ctx))
    if as_json:
        print_json(b)
        return
    cur = b["currency"]
    output.table(
        ("granted", "used", "expired", "voided", "available", "projected"),
        [
            tuple(
                f"{b[k]} {cur}"
                for k in ("granted", "used", "expired", "voided", "available", "projected")
            )
        ],
        title=f"credit balance of {customer} at {b['at']} (seq {b['as_of_seq']})",
    )
    if b["open_period"]:
        p = b["open_period"]
        typer.echo(f"open period {p['label']}: {p['due']} {cur} due as known now")
    if b["grants"]:
        output.table(_GRANT_COLUMNS, _grant_rows(b["grants"]), title="grants")


@credits_app.command("refresh")
@handles_errors
def refresh_command(
    ctx: typer.Context,
    follow: bool = typer.Option(
        False, "--follow", help="Keep the projection up to date until interrupted."
    ),
    idle: float = typer.Option(1.0, "--idle", min=0.01, help="Poll interval when idle, seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Rate every customer's open period into the balance projection, so `balance`
    answers without rating (it still checks the projection is current, and rates
    when it is not). With --follow, re-rate customers as their usage or catalog
    changes, until SIGINT/SIGTERM.

    \b
    Examples:
      meterline credits refresh
      meterline credits refresh --follow
    """
    s = settings(ctx)
    if follow:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo("keeping the balance projection up to date", err=True)
        credits.refresh_forever(s.store(), s.clock(), stop, idle)
        return
    done = credits.refresh(s.store(), _now(ctx))
    if as_json:
        print_json(
            {
                "rated": done.rated,
                "checked": done.checked,
                "known_at": done.known_at,
                "failed": done.failed,
            }
        )
        return
    typer.echo(
        f"{done.rated} customers rated into the balance projection "
        f"({done.checked} checked, as known at seq {done.known_at})"
    )
    for cid, reason in sorted(done.failed.items()):
        typer.echo(f"  not rated: {cid}: {reason}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(credits_app, name="credits")
    app.command("balance")(balance_command)
