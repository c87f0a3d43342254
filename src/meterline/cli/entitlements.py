"""`entitlements CUSTOMER [FEATURE]` and `alerts list` (DESIGN §13)."""

from __future__ import annotations

from typing import Any

import typer

from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime
from meterline.services import alerts, entitlements


def _line(a: dict[str, Any]) -> str:
    access = "yes" if a["has_access"] else "no"
    if a["limit"] is None:
        usage = "" if a["usage"] is None else f"  usage {a['usage']}"
        return f"{a['feature']:<20} access {access:<4}{usage}  ({a['reason']})"
    return (
        f"{a['feature']:<20} access {access:<4} usage {a['usage']} of {a['limit']} "
        f"({a['enforcement']})  balance {a['balance']}  overage {a['overage']}  ({a['reason']})"
    )


@handles_errors
def entitlements_command(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id."),
    feature: str = typer.Argument(None, help="A feature code; all features when omitted."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """May the customer use a feature now? Usage, limit, balance and overage in
    the open billing period, as known now."""
    s = settings(ctx)
    now_us = from_datetime(s.clock().now())
    with s.store().read() as conn:
        if feature is None:
            out = entitlements.check_all(conn, customer, now_us)
        else:
            out = entitlements.check(conn, customer, feature, now_us)
    if as_json:
        print_json(out)
        return
    period = out["period"]
    typer.echo(f"{out['customer_id']}  period {period['label']}  as of seq {out['as_of_seq']}")
    for a in out["entitlements"] if feature is None else [out]:
        typer.echo("  " + _line(a))


alerts_app = typer.Typer(help="Recorded usage alerts (thresholds crossed, entitlements exhausted).")


@alerts_app.command("list")
@handles_errors
def alerts_list(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer", help="Only this customer's alerts."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recorded alerts, newest first."""
    with settings(ctx).store().read() as conn:
        out = alerts.list_alerts(conn, customer)
    if as_json:
        print_json(out)
        return
    if not out["alerts"]:
        typer.echo("no alerts recorded")
    for a in out["alerts"]:
        what = a["meter"] or a["metric"]
        typer.echo(
            f"seq {a['seq']:<8} {a['customer_id']:<16} {a['period']['label']:<10} "
            f"{a['kind']:<22} {a['scope']}:{a['code']}  {what} {a['observed']} >= {a['threshold']}"
        )


def register(app: typer.Typer) -> None:
    app.command("entitlements")(entitlements_command)
    app.add_typer(alerts_app, name="alerts")
