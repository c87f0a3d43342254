"""`meterline export invoices|lines|journal|events --period P --format csv|parquet -o FILE`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from meterline.cli.context import fail, handles_errors, settings
from meterline.render.exports import check_format, chunks
from meterline.services.exports import COLUMNS, parse_kind, rows


@handles_errors
def export(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="invoices | lines | journal | events"),
    period: str = typer.Option(..., "--period", help="YYYY-MM (events: the UTC month)."),
    fmt: str = typer.Option("csv", "--format", help="csv | parquet"),
    output: str = typer.Option(None, "-o", "--output", help="File to write (CSV: default stdout)."),
) -> None:
    """Export documents, their lines, the journal or the events of one period.

    Columns are stable and documented in docs/EXPORTS.md. The file appears
    complete or not at all (written beside it, then renamed)."""
    what = parse_kind(kind)
    check_format(fmt)
    store = settings(ctx).store()
    if output is None or output == "-":
        if fmt == "parquet" and sys.stdout.isatty():
            fail("Parquet is binary: give -o FILE")
        for chunk in chunks(fmt, COLUMNS[what], rows(store, what, period)):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        return
    target = Path(output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as f:
            for chunk in chunks(fmt, COLUMNS[what], rows(store, what, period)):
                f.write(chunk)
        os.replace(partial, target)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    finally:
        partial.unlink(missing_ok=True)
    typer.echo(f"wrote {what} for {period} to {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
