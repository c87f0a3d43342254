"""`meterline status`: watermarks, late events, and when each open period closes."""

from __future__ import annotations

import typer

from meterline.cli import output
from meterline.cli.context import handles_errors, print_json, settings
from meterline.cli.output import plural
from meterline.domain.timestamps import from_datetime, parse_rfc3339


def _span(us: int) -> str:
    """A plain duration: `26 days 16 hours`, `3 hours`, `45 minutes`."""
    minutes = us // 60_000_000
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = []
    if days:
        parts.append(plural(days, "day"))
    if hours:
        parts.append(plural(hours, "hour"))
    if mins and not days:
        parts.append(plural(mins, "minute"))
    return " ".join(parts) or "less than a minute"


@handles_errors
def status_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Watermarks per source, late events, and when each open period closes.

    A period can be invoiced once it is closed: the global watermark (the least
    event time reached by the active sources) has reached the end of the
    period's last window plus the meter's allowed lateness. Until then `invoice
    issue` refuses with PERIOD_NOT_CLOSED (or issues a forced invoice with
    --force). Events are what move the watermark: the clock alone does not.

    \b
    Examples:
      meterline status
      meterline --now 2024-02-02T00:00:00Z status --json
    """
    from meterline.services.status import status

    s = settings(ctx)
    out = status(s.store(), from_datetime(s.clock().now()))
    if as_json:
        print_json(out)
        return
    wm = out["watermark"]
    typer.echo(f"now {out['now']}; global watermark {wm or 'none (no events yet)'}")
    if out["sources"]:
        output.table(
            ("source", "watermark", "last received", "active"),
            [
                (
                    src["source"],
                    src["watermark"],
                    src["last_received"],
                    "yes" if src["active"] else f"no (idle > {out['idle_timeout']})",
                )
                for src in out["sources"]
            ],
        )
    typer.echo(
        f"{plural(out['late_events'], 'late event')} recorded; "
        f"{plural(out['rerate_marks'], 're-rating mark')}"
    )
    typer.echo(f"rule: {out['rule']}")
    if not out["open_periods"]:
        typer.echo("no open periods")
        return
    rows = []
    for p in out["open_periods"]:
        if p["closed"]:
            state = "closed: ready to issue"
        elif wm is None:
            state = f"open: waits for events up to {p['closes_at']}"
        else:
            behind = parse_rfc3339(p["closes_at"]) - parse_rfc3339(wm)
            state = f"open: the watermark is {_span(behind)} short"
        rows.append((p["customer_id"], p["period"], p["closes_at"], state))
    output.table(("customer", "period", "closes at", "state"), rows, title="uninvoiced periods")
    if out["older_open_periods"]:
        typer.echo(
            f"... and {plural(out['older_open_periods'], 'older uninvoiced period')} (not listed)"
        )


def register(app: typer.Typer) -> None:
    app.command("status")(status_command)
