"""`ledger balances`, `ledger journal` and `reconcile` (DESIGN §9, §12)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from meterline.cli import output
from meterline.cli.context import EXIT_DISCREPANCY, handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime
from meterline.services import ledger, webhooks
from meterline.services.reconcile import ReconcileReport, reconcile

ledger_app = typer.Typer(
    help="The double-entry journal and account balances.", no_args_is_help=True
)
err = Console(stderr=True)


@ledger_app.command("balances")
@handles_errors
def balances(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer", help="Only this customer's documents."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Balance of every account, per currency (a projection of the journal).

    \b
    Examples:
      meterline ledger balances
      meterline ledger balances --customer acme --json
    """
    rows = ledger.balances(settings(ctx).store(), customer)
    if as_json:
        print_json(rows)
        return
    output.table(
        ("account", "type", "currency", "debit", "credit", "balance"),
        [
            (r["account"], r["type"], r["currency"], r["debit"], r["credit"], r["balance"])
            for r in rows
        ],
    )


@ledger_app.command("journal")
@handles_errors
def journal(
    ctx: typer.Context,
    limit: int = typer.Option(None, "--limit", min=1, help="Only the newest N entries."),
    customer: str = typer.Option(None, "--customer", help="Only this customer's entries."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Journal entries, oldest first.

    \b
    Examples:
      meterline ledger journal --limit 20
    """
    entries = ledger.journal(settings(ctx).store(), limit, customer)
    if as_json:
        print_json(entries)
        return
    rows: list[tuple[str, ...]] = []
    for e in entries:
        for i, ln in enumerate(e["lines"]):
            first = i == 0
            rows.append(
                (
                    str(e["seq"]) if first else "",
                    e["posted_at"] if first else "",
                    f"{e['document']} {e['kind']}" if first else "",
                    ln["account"],
                    "" if ln["debit"].strip("0.") == "" else f"{ln['debit']} {e['currency']}",
                    "" if ln["credit"].strip("0.") == "" else f"{ln['credit']} {e['currency']}",
                )
            )
    output.table(("seq", "posted", "document", "account", "debit", "credit"), rows)


def _run(store_settings: typer.Context, show_progress: bool, full: bool) -> ReconcileReport:
    store = settings(store_settings).store()
    if not show_progress:
        return reconcile(store, full=full)
    with Progress(
        TextColumn("[bold]reconciling {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return reconcile(store, progress, full=full)


@handles_errors
def reconcile_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    full: bool = typer.Option(
        False, "--full", help="Check everything, not only what changed since the last clean run."
    ),
) -> None:
    """Check that the books tie out; exit 1 on any discrepancy (warnings do not fail).

    Incremental after a clean run (its checkpoint); --full checks the whole store.

    \b
    Examples:
      meterline reconcile
      meterline reconcile --full --json
    """
    report = _run(ctx, sys.stderr.isatty() and not as_json, full)
    webhooks.reconcile_finished(
        settings(ctx).store(), report.to_json(), from_datetime(settings(ctx).clock().now())
    )
    if as_json:
        print_json(report.to_json())
    else:
        output.table(
            ("check", "result", "details"),
            [(c.name, "ok" if c.ok else "FAIL", c.details) for c in report.checks],
            title=f"reconcile ({report.mode}) of seq "
            f"{report.checkpoint['from_seq'] + 1}..{report.cutoff_seq}",
        )
        if report.warnings:
            output.table(
                ("warning", "count", "details"),
                [(w.name, str(w.count), w.details) for w in report.warnings],
                title="unbilled usage (warnings)",
            )
        typer.echo("the books tie out" if report.ok else "reconciliation FAILED")
    if not report.ok:
        raise typer.Exit(EXIT_DISCREPANCY)


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")
    app.command("reconcile")(reconcile_command)
