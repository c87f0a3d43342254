"""`meterline` entry point: global options and the command tree."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meterline import __version__
from meterline.cli import output
from meterline.cli.context import (
    EXIT_OK,
    Settings,
    env_default,
    fail,
    handles_errors,
    print_json,
    settings,
)
from meterline.cli.output import plural
from meterline.domain.timestamps import format_us, from_datetime
from meterline.ingest.readers import FORMATS, Item, read_file
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.services.retraction import retract_event
from meterline.store.database import DEFAULT_URL, safe_url
from meterline.wiring import ingestor_for

app = typer.Typer(
    name="meterline",
    help=(
        "Usage-based metering and invoicing whose numbers can be proved.\n\n"
        "Start with docs/QUICKSTART.md; `meterline COMMAND -h` shows each command's examples."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"meterline {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    ctx: typer.Context,
    db: str = typer.Option(
        None, "--db", help=f"Store URL (env METERLINE_DB, default {DEFAULT_URL})."
    ),
    now: str = typer.Option(
        None, "--now", help="Pin the receiving clock (RFC 3339; env METERLINE_NOW)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    ctx.obj = Settings(
        db=db or env_default("METERLINE_DB") or DEFAULT_URL,
        now=now or env_default("METERLINE_NOW"),
    )


@app.command()
@handles_errors
def init(ctx: typer.Context) -> None:
    """Create the store, or upgrade it to the current schema.

    \b
    Examples:
      meterline init
      meterline --db postgresql://user@host/meterline init
    """
    s = settings(ctx)
    store = s.store(initialised=False)
    revision = store.upgrade()
    typer.echo(f"store ready at {safe_url(s.db)} (schema {revision})")


def _print_report(report: IngestReport) -> None:
    typer.echo(
        f"accepted {report.accepted:,}  duplicates {report.duplicates:,}  "
        f"rejected {report.rejected:,}"
    )
    if report.rejects:
        output.table(
            ("index", "line", "code", "message"),
            [(str(r.index), str(r.line or ""), r.code, r.message) for r in report.rejects[:20]],
            title="rejected (kept in quarantine: meterline quarantine list)",
        )
        if len(report.rejects) > 20:
            typer.echo(f"... and {len(report.rejects) - 20:,} more (see --json)")


@app.command()
@handles_errors
def ingest(
    ctx: typer.Context,
    files: list[str] = typer.Argument(..., help="NDJSON, JSON array or CSV files; - for stdin."),
    source: str = typer.Option("default", "--source", help="Source for events that name none."),
    backfill: bool = typer.Option(
        False, "--backfill", help="Accept events older than the age bound (recorded as backfill)."
    ),
    fmt: str = typer.Option("auto", "--format", help="auto | ndjson | json | csv"),
    batch_size: int = typer.Option(
        20_000, "--batch-size", min=1, max=1_000_000, help="Events per stored batch."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Validation processes (one writer stores in order)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 2 if any event was rejected (valid events are still stored)."
    ),
) -> None:
    """Ingest usage events. Bad events are rejected with a code and quarantined.

    Exit 0 when every valid event was stored or recognised as a duplicate; with
    --strict, any rejected event makes the exit status 2.

    \b
    Examples:
      meterline ingest examples/events.ndjson
      cat events.ndjson | meterline ingest - --source gateway --json
      meterline ingest late.csv --backfill --strict
    """
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    s = settings(ctx)
    store = s.store()
    from meterline.ingest.parallel import ParallelIngestor

    ingestor = ParallelIngestor(ingestor_for(store, s.clock()), workers)
    options = IngestOptions(source=source, backfill=backfill, origin="cli", batch_size=batch_size)

    def items() -> Iterator[Item]:
        for path in files:
            yield from read_file(path, fmt)

    show_progress = sys.stderr.isatty() and not as_json
    if show_progress:
        with Progress(
            TextColumn("[bold]ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("ingest", total=None)
            report = ingestor.ingest(items(), options, lambda n: bar.advance(task, n))
    else:
        report = ingestor.ingest(items(), options)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if strict and report.rejected:
        fail(
            f"{plural(report.rejected, 'event')} rejected (--strict); see the list above "
            "or `meterline quarantine list`",
            error="EVENTS_REJECTED",
        )


@app.command()
@handles_errors
def retract(
    ctx: typer.Context,
    event_id: str = typer.Argument(..., help="The event_id to retract."),
    source: str = typer.Option("default", "--source", help="The event's source."),
    reason: str = typer.Option(..., "--reason", help="Why (kept with the retraction)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Retract an event: it stays in the store but no longer counts from now on.

    \b
    Examples:
      meterline retract ev-42 --source gateway --reason "staging traffic"
    """
    s = settings(ctx)
    store = s.store()
    now_us = from_datetime(s.clock().now())
    r = retract_event(store, source, event_id, reason, now_us)
    if as_json:
        print_json(
            {
                "source": r.source,
                "event_id": r.event_id,
                "seq": r.seq,
                "event_seq": r.event_seq,
                "reason": r.reason,
                "retracted_at": format_us(r.retracted_at),
                "already_retracted": r.already,
            }
        )
    elif r.already:
        typer.echo(f"event ({source}, {event_id}) was already retracted at seq {r.seq}: {r.reason}")
    else:
        typer.echo(f"retracted ({source}, {event_id}) at seq {r.seq}")


from meterline.cli import audit, invoices, ledger  # noqa: E402

invoices.register(app)
ledger.register(app)
audit.register(app)

from meterline.cli import consume  # noqa: E402

consume.register(app)

from meterline.cli import exports, proofs, webhooks  # noqa: E402

webhooks.register(app)
exports.register(app)
proofs.register(app)
from meterline.cli import entitlements as entitlements_cli  # noqa: E402

entitlements_cli.register(app)

from meterline.cli import quarantine, status  # noqa: E402

status.register(app)
quarantine.register(app)

from meterline.cli import credits  # noqa: E402  (credit grants and balance, issue 15)

credits.register(app)

from meterline.cli import subscriptions  # noqa: E402

subscriptions.register(app)

catalog_app = typer.Typer(help="Meters, price books and customers.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

from meterline.cli import catalog_read  # noqa: E402

catalog_read.register(catalog_app)


@catalog_app.command("apply")
@handles_errors
def catalog_apply(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="Catalog file (YAML or JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Apply a catalog. Idempotent; existing versions are never changed.

    \b
    Examples:
      meterline catalog apply examples/catalog.yaml
      meterline catalog validate catalog.yaml   (check first, apply nothing)
    """
    from meterline.services.catalog import apply_catalog, load_file

    s = settings(ctx)
    store = s.store()
    report = apply_catalog(store, load_file(file), from_datetime(s.clock().now()))
    if as_json:
        print_json(report.to_dict())
        return
    for item in report.added:
        typer.echo(f"added     {item}")
    for item in report.unchanged:
        typer.echo(f"unchanged {item}")
    if report.windows_built:
        typer.echo(f"indexed {report.windows_built:,} windows from events already stored")
    if not report.added and not report.unchanged:
        typer.echo("nothing to apply")


def _instant(name: str, value: str) -> int:
    from meterline.domain.events import MAX_EVENT_TIME_US, MIN_EVENT_TIME_US
    from meterline.domain.timestamps import InvalidTimestamp, parse_rfc3339

    try:
        us = parse_rfc3339(value)
    except InvalidTimestamp as exc:
        fail(f"{name}: {exc}")
    if not MIN_EVENT_TIME_US <= us <= MAX_EVENT_TIME_US:
        fail(
            f"INVALID_ARGUMENT: {name}: {value!r} is outside the supported range "
            "1970-01-01T00:00:00Z to 9000-01-01T00:00:00Z"
        )
    return us


@app.command()
@handles_errors
def usage(
    ctx: typer.Context,
    customer: str = typer.Option(..., "--customer", help="Customer id."),
    meter: str = typer.Option(..., "--meter", help="Meter code."),
    from_: str = typer.Option(..., "--from", help="Start (RFC 3339, inclusive)."),
    to: str = typer.Option(..., "--to", help="End (RFC 3339, exclusive)."),
    window: str = typer.Option(None, "--window", help="Roll windows up: 1m, 1h or 1d."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Usage per event-time window with finality and version, and the range total.

    \b
    Examples:
      meterline usage --customer acme --meter api_calls --from 2024-01-01T00:00:00Z --to 2024-02-01T00:00:00Z
      meterline usage --customer acme --meter tokens --from 2024-01-01T00:00:00Z --to 2024-01-02T00:00:00Z --window 1d --json
    """
    from meterline.domain.timestamps import parse_duration
    from meterline.services.usage import query_usage

    s = settings(ctx)
    store = s.store()
    try:
        window_us = parse_duration(window) if window else None
    except ValueError as exc:
        fail(f"--window: {exc}")
    with store.read() as conn:
        out = query_usage(
            conn,
            customer=customer,
            meter_code=meter,
            from_us=_instant("--from", from_),
            to_us=_instant("--to", to),
            now_us=from_datetime(s.clock().now()),
            window_us=window_us,
        )
    if as_json:
        print_json(out)
        return
    rows = []
    for w in out["windows"]:
        dims = ", ".join(f"{k}={v}" for k, v in w["dimensions"].items()) or "-"
        rows.append(
            (
                w["start"],
                w["end"],
                dims,
                str(w["value"]),
                "yes" if w["final"] else "no",
                str(w["version"]),
            )
        )
    output.table(
        ("window start", "end", "dimensions", "value", "final", "version"),
        rows,
        title=f"{out['meter']} ({out['aggregation']}) for {customer}",
    )
    for g in out["groups"]:
        dims = ", ".join(f"{k}={v}" for k, v in g["dimensions"].items())
        if dims:
            typer.echo(f"  {dims}: {g['total']}")
    typer.echo(
        f"total {out['from']} .. {out['to']}: {out['total']}  (watermark {out['watermark']})"
    )


@app.command()
@handles_errors
def demo(
    out: str = typer.Option("demo-out", "--out", help="Where the demo writes its files."),
    events: int = typer.Option(1_000_000, "--events", min=1000, help="Events to generate."),
    customers: int = typer.Option(300, "--customers", min=1, help="Customers to generate."),
) -> None:
    """Run a realistic synthetic month end to end on a fresh SQLite store.

    \b
    Examples:
      meterline demo
      meterline demo --out /tmp/demo --events 20000 --customers 12
    """
    from pathlib import Path

    from meterline.demo.run import run_demo
    from meterline.demo.workload import Workload

    outcome = run_demo(Path(out), Workload(customers=customers, events=events), Console())
    if not outcome.verified or outcome.reconciled is False:
        raise typer.Exit(1)


@app.command()
@handles_errors
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to listen on."),
    max_body_bytes: int = typer.Option(
        10 * 1024 * 1024, "--max-body-bytes", min=1, help="Largest accepted request body."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Server processes (PostgreSQL only when > 1)."
    ),
    no_webhooks: bool = typer.Option(
        False, "--no-webhooks", help="Do not run the webhook dispatcher in this process."
    ),
) -> None:
    """Run the HTTP API (keys from env METERLINE_API_KEYS="KEY:ingest,KEY2:admin").

    Interactive documentation at /docs and /redoc.

    \b
    Examples:
      meterline serve --port 8080
      METERLINE_API_KEYS="k1:ingest,k2:admin" meterline serve --host 0.0.0.0
    """
    import logging

    import uvicorn

    from meterline.api import create_app
    from meterline.api.auth import KeyRing, check_bind

    keys = KeyRing.from_env()
    check_bind(host, keys)
    s = settings(ctx)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("meterline").setLevel(logging.INFO)
    if workers > 1:
        from meterline.api.workers import check_workers, export_settings

        check_workers(s.db, workers)
        s.clock()  # a bad --now fails here, once, not in every worker
        export_settings(s.db, s.now, max_body_bytes, webhooks=not no_webhooks)
        uvicorn.run(
            "meterline.api.workers:app_from_env",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level="info",
            server_header=False,
        )
        return
    application = create_app(
        s.db, s.clock(), keys, max_body_bytes=max_body_bytes, dispatch_webhooks=not no_webhooks
    )
    uvicorn.run(application, host=host, port=port, log_level="info", server_header=False)


def main() -> None:
    from meterline.cli.usage import run

    sys.exit(run(app))


from meterline.cli import index  # noqa: E402  (month rollups of the usage index)

index.register(app)
