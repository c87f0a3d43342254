"""`catalog show` and `catalog validate`: read the catalog back, or check a file."""

from __future__ import annotations

import sys

import typer

from meterline.cli.context import fail, handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime


@handles_errors
def catalog_show(
    ctx: typer.Context,
    fmt: str = typer.Option("yaml", "--format", help="yaml or json."),
) -> None:
    """Print the catalog as known now (the shape `catalog apply` reads).

    \b
    Examples:
      meterline catalog show
      meterline catalog show --format json > catalog.json
    """
    import yaml

    from meterline.services.catalog_view import catalog_as_known

    if fmt not in ("yaml", "json"):
        fail(f"--format must be yaml or json, got {fmt!r}")
    doc = catalog_as_known(settings(ctx).store())
    if fmt == "json":
        print_json(doc)
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))


@handles_errors
def catalog_validate(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="Catalog file (YAML or JSON)."),
) -> None:
    """Check a catalog file without applying it.

    With an initialised store, every check of `catalog apply` runs (including
    immutability of meters and price versions) and is rolled back; without one,
    the file is checked on its own.

    \b
    Examples:
      meterline catalog validate catalog.yaml
    """
    from meterline.billing.customers import parse_customers
    from meterline.billing.seller import parse_seller
    from meterline.cli.context import require_existing_file
    from meterline.domain.errors import MeterlineError
    from meterline.metering import parse_meters
    from meterline.pricing.catalog import parse_price_books
    from meterline.services.catalog import apply_catalog, load_file

    s = settings(ctx)
    doc = load_file(file)
    try:
        require_existing_file(s.db)
        store = s.store()
    except MeterlineError:
        store = None
    if store is None:
        meters = parse_meters(doc.get("meters") or [])
        parse_price_books(doc.get("price_books") or [], frozenset(m.code for m in meters))
        parse_customers(doc.get("customers"))
        parse_seller(doc.get("seller"))
        typer.echo(f"{file}: valid (checked on its own; no store to check it against)")
        return
    report = apply_catalog(store, doc, from_datetime(s.clock().now()), dry_run=True)
    typer.echo(
        f"{file}: valid; applying it would add {len(report.added)}, leave {len(report.unchanged)} unchanged"
    )
    for item in report.added:
        typer.echo(f"  would add {item}")


def register(catalog_app: typer.Typer) -> None:
    catalog_app.command("show")(catalog_show)
    catalog_app.command("validate")(catalog_validate)
