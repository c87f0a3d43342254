"""`meterline index rollup`: month rollup passes of the usage index (DESIGN §4)."""

from __future__ import annotations

import typer

from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime
from meterline.services import rollups

index_app = typer.Typer(help="The usage index: rollup passes.", no_args_is_help=True)


@index_app.command("rollup")
@handles_errors
def rollup(
    ctx: typer.Context,
    month: list[str] = typer.Option(
        None, "--month", help="YYYY-MM (repeatable); default: every month changed since."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fold each month's day rollups into rollup units per customer, meter and group.

    Reads of whole UTC months as known at or after the pass start from it; run it
    daily or before an invoice run. It changes no number, only how many index rows
    a period's read folds."""
    s = settings(ctx)
    out = rollups.roll_up(s.store(), from_datetime(s.clock().now()), month or None)
    if as_json:
        print_json(out)
        return
    if not out["passes"]:
        typer.echo(f"nothing to roll up as known at seq {out['seq']}")
    for p in out["passes"]:
        typer.echo(
            f"{p['month']}: {p['customers']} customer(s), {p['rows_written']} unit rows at "
            f"seq {p['seq']} (folded {p['rows_folded']} index rows)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
