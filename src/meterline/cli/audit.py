"""`audit`: who changed what, when."""

from __future__ import annotations

import typer

from meterline.cli import output
from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.canonical import dumps
from meterline.services.audit import entries


@handles_errors
def audit(
    ctx: typer.Context,
    limit: int = typer.Option(None, "--limit", min=1, help="Only the newest N rows."),
    action: str = typer.Option(None, "--action", help="Only this action (e.g. issue, ingest)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """The audit trail of every state-changing command, oldest first.

    \b
    Examples:
      meterline audit --limit 20
      meterline audit --action issue --json
    """
    rows = entries(settings(ctx).store(), limit, action)
    if as_json:
        print_json(rows)
        return
    output.table(
        ("id", "at", "actor", "action", "seq", "details"),
        [
            (
                str(r["id"]),
                r["at"],
                r["actor"],
                r["action"],
                str(r["seq"]),
                dumps(r["details"]).decode(),
            )
            for r in rows
        ],
    )


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
