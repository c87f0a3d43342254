"""`invoice ...`, `explain` and `verify`: the document commands of DESIGN §12."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from meterline.billing.document import Status
from meterline.cli.context import (
    EXIT_DISCREPANCY,
    error_line,
    fail,
    handles_errors,
    print_json,
    settings,
)
from meterline.cli.output import plural
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import from_datetime
from meterline.render.text import render_text
from meterline.services import invoicing

invoice_app = typer.Typer(
    help="Preview, issue, list, show, render, pay and void invoices.", no_args_is_help=True
)


@invoice_app.command("preview")
@handles_errors
def preview(
    ctx: typer.Context,
    customer: str = typer.Option(..., "--customer"),
    period: str = typer.Option(
        ...,
        "--period",
        help="2024-01, 2024-Q1, 2024, 2024-W03 or an anniversary start date, in the customer's timezone.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """A draft computed as known now: no number, may change.

    \b
    Examples:
      meterline invoice preview --customer acme --period 2024-02
    """
    doc = invoicing.preview(settings(ctx).store(), customer, period)
    if as_json:
        print_json(doc)
    else:
        sys.stdout.write(render_text(doc))


@invoice_app.command("issue")
@handles_errors
def issue(
    ctx: typer.Context,
    period: str = typer.Option(
        ...,
        "--period",
        help="2024-01, 2024-Q1, 2024, 2024-W03 or an anniversary start date, in each customer's timezone.",
    ),
    customer: str = typer.Option(None, "--customer", help="Only this customer."),
    force: bool = typer.Option(False, "--force", help="Issue even if the period is not closed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    jobs: int = typer.Option(
        0,
        "--jobs",
        min=0,
        help="SQLite: worker processes computing invoice bodies (0: one per CPU, up to 8; "
        "used from 2,000 customers on). PostgreSQL: start more `invoice issue` processes.",
    ),
) -> None:
    """Issue invoices for a period; a customer-period is never invoiced twice.

    A period is issued only once it is closed (see `meterline status`); until
    then it is refused with PERIOD_NOT_CLOSED unless --force.

    \b
    Examples:
      meterline invoice issue --period 2024-01
      meterline invoice issue --period 2024-01 --customer acme --json
    """
    s = settings(ctx)
    store, now_us = s.store(), from_datetime(s.clock().now())
    try:
        if customer is None:  # shared with concurrent runs on PostgreSQL (services/invoice_run.py)
            from meterline.services import invoice_run
            from meterline.services.workers import default_jobs

            result = invoice_run.run(store, period, now_us, force, jobs or default_jobs())
        else:
            result = invoicing.issue(store, period, now_us, customer, force)
    except MeterlineError as exc:
        if exc.code == ErrorCode.PERIOD_NOT_CLOSED:
            fail(
                f"{exc.message}; see `meterline status`, or --force to issue anyway", error=exc.code
            )
        raise
    if as_json:
        print_json([d.to_dict() for d in result.issued])
    else:
        for d in result.issued:
            typer.echo(
                f"issued {d.number}  {d.body.customer_id:<24} {d.body.text(d.body.total):>14} {d.body.currency}"
            )
        for cid, number in result.already:
            typer.echo(f"already issued {number} for {cid}")
        typer.echo(
            f"{len(result.issued)} issued, {len(result.already)} already issued, {len(result.refused)} refused"
            + (f", {len(result.failed)} failed" if result.failed else "")
        )
    for _cid, message in result.refused:
        error_line(f"PERIOD_NOT_CLOSED: {message}")
    for cid, code, message in result.failed:
        line = message if cid in message else f"{cid}: {message}"
        error_line(f"{code}: {' '.join(line.split())}")
    if result.refused:
        fail(
            f"{plural(len(result.refused), 'customer')} not closed: see `meterline status`, "
            "or --force to issue anyway",
            error=ErrorCode.PERIOD_NOT_CLOSED,
        )
    if result.failed:  # each failed customer has had its own line above
        raise typer.Exit(2)


@invoice_app.command("progressive")
@handles_errors
def progressive(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer", help="Only this customer."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Issue the interim invoices due now (progressive billing, DESIGN §7).

    Each subscription with a `threshold` gets an interim invoice for its open period
    when the usage not yet billed, as known now, reached the threshold; the period's
    final invoice (`invoice issue`) then bills the rest. Safe to run on a schedule.

    \b
    Examples:
      meterline invoice progressive
      meterline invoice progressive --customer acme --json
    """
    from meterline.services.progressive import issue_interims

    s = settings(ctx)
    result = issue_interims(s.store(), from_datetime(s.clock().now()), customer)
    if as_json:
        print_json([d.to_dict() for d in result.issued])
    else:
        for d in result.issued:
            typer.echo(
                f"issued {d.number}  {d.body.customer_id:<24} {d.body.text(d.body.total):>14} "
                f"{d.body.currency}  interim {d.body.interim} of {d.body.period.label}"
            )
        typer.echo(
            f"{plural(len(result.issued), 'interim invoice')} issued, "
            f"{plural(len(result.checked), 'open period')} checked"
            + (f", {len(result.failed)} failed" if result.failed else "")
        )
    for cid, code, message in result.failed:
        line = message if cid in message else f"{cid}: {message}"
        error_line(f"{code}: {' '.join(line.split())}")
    if result.failed:
        raise typer.Exit(2)


@invoice_app.command("list")
@handles_errors
def list_(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Issued documents, oldest first.

    \b
    Examples:
      meterline invoice list
      meterline invoice list --customer acme --json
    """
    docs = invoicing.list_all(settings(ctx).store(), customer)
    if as_json:
        print_json(
            [
                {
                    "number": d.number,
                    "kind": str(d.kind),
                    "status": str(d.status),
                    "customer_id": d.body.customer_id,
                    "period": d.body.period.to_dict(),
                    "total": d.body.text(d.body.total),
                    "currency": d.body.currency,
                    "corrects": d.body.corrects,
                    "issued_at": d.issued_at,
                }
                for d in docs
            ]
        )
        return
    for d in docs:
        role = d.body.role_of  # progressive billing: say which invoice of the period
        typer.echo(
            f"{d.number:<10} {d.kind!s:<12} {d.status!s:<7} {d.body.customer_id:<24} "
            f"{d.body.period.label}  {d.body.text(d.body.total):>14} {d.body.currency}"
            + (f"  interim {d.body.interim}" if role == "interim" else "")
            + ("  final" if role == "final" else "")
        )


@invoice_app.command("show")
@handles_errors
def show(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Document number, e.g. INV-000001."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """One issued document: lines, totals, seller, dates and terms.

    \b
    Examples:
      meterline invoice show INV-000001
      meterline invoice show CN-000001 --json
    """
    doc = invoicing.show(settings(ctx).store(), number).to_dict()
    if as_json:
        print_json(doc)
    else:
        sys.stdout.write(render_text(doc))


@invoice_app.command("render")
@handles_errors
def render(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Document number, e.g. INV-000001."),
    fmt: str = typer.Option("text", "--format", help="json | text | pdf"),
    output: str = typer.Option(None, "-o", "--output", help="File to write (required for pdf)."),
) -> None:
    """Render an issued document as JSON, text or PDF.

    \b
    Examples:
      meterline invoice render INV-000001 --format pdf -o INV-000001.pdf
      meterline invoice render CN-000001 --format text
    """
    if fmt not in ("json", "text", "pdf"):
        fail(f"--format must be json, text or pdf, got {fmt!r}")
    if fmt == "pdf" and output is None:
        output = f"{number}.pdf"
    if output is not None:
        target = Path(output)
        if not target.parent.is_dir():
            fail(
                f"cannot write {output}: the directory {target.parent} does not exist",
                error=ErrorCode.OUTPUT_UNWRITABLE,
            )
    doc = invoicing.show(settings(ctx).store(), number).to_dict()
    if fmt == "json":
        import msgspec

        data = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
    elif fmt == "text":
        data = render_text(doc).encode()
    else:
        data = _pdf(doc)
    if output is None:
        sys.stdout.buffer.write(data)
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}", error=ErrorCode.OUTPUT_UNWRITABLE)
    typer.echo(f"wrote {output}")


def _pdf(doc: dict[str, object]) -> bytes:
    """The PDF, or a coded line saying what is missing (WeasyPrint or its libraries)."""
    try:
        from meterline.render.pdf import render_pdf
    except (ImportError, OSError) as exc:
        fail(
            f"PDF rendering needs WeasyPrint and its system libraries "
            f"(pip install 'meterline[pdf]'): {' '.join(str(exc).split())[:200]}",
            error=ErrorCode.DEPENDENCY_MISSING,
        )
    try:
        return render_pdf(doc)
    except (ImportError, OSError) as exc:
        fail(
            f"PDF rendering needs WeasyPrint and its system libraries "
            f"(pip install 'meterline[pdf]'): {' '.join(str(exc).split())[:200]}",
            error=ErrorCode.DEPENDENCY_MISSING,
        )


def _status(ctx: typer.Context, number: str, status: Status, reason: str) -> None:
    s = settings(ctx)
    invoicing.set_status(s.store(), number, status, reason, from_datetime(s.clock().now()))
    typer.echo(f"{number} is {status}")


@invoice_app.command("pay")
@handles_errors
def pay(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Document number, e.g. INV-000001."),
    reason: str = typer.Option("payment received", "--reason", help="Kept with the status change."),
) -> None:
    """Mark an issued document paid.

    \b
    Examples:
      meterline invoice pay INV-000001 --reason "wire 2024-03-01"
    """
    _status(ctx, number, Status.PAID, reason)


@invoice_app.command("void")
@handles_errors
def void(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Document number, e.g. INV-000001."),
    reason: str = typer.Option("voided", "--reason", help="Kept with the status change."),
) -> None:
    """Void an issued document (its content stays; its status changes).

    Voiding an invoice voids its open credit and debit notes with it; it is
    refused while one of them is paid.

    \b
    Examples:
      meterline invoice void INV-000001 --reason "issued to the wrong customer"
    """
    _status(ctx, number, Status.VOID, reason)


@handles_errors
def explain(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Issued document number."),
    line: int = typer.Option(None, "--line", help="Only this line."),
    events: bool = typer.Option(False, "--events", help="List the line's source events (paged)."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    offset: int = typer.Option(0, "--offset", min=0),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Why a line costs what it does, down to its source events as known at the cutoff.

    \b
    Examples:
      meterline explain INV-000001
      meterline explain INV-000001 --line 1 --events --limit 20
    """
    from meterline.services.explain import explain as explain_doc

    out = explain_doc(settings(ctx).store(), number, line, events, limit, offset)
    if as_json:
        print_json(out)
        return
    lines = [out["line"]] if "line" in out else out["lines"]
    typer.echo(
        f"{out['number']} {out['customer_id']} {out['period']['label']} (as known at seq {out['cutoff_seq']})"
    )
    for ln in lines:
        typer.echo(f"\nline {ln['line']}: {ln['description']}  {ln['amount']} {out['currency']}")
        typer.echo(f"  {ln['formula']}")
        for v in ln["explanation"].get("versions", []):
            typer.echo(f"  price {ln['price_book']} {v['version']} effective {v['effective_from']}")
        for seg in ln["explanation"].get("segments", []):
            for t in seg.get("tiers", []):
                upto = t.get("up_to", "∞")
                typer.echo(
                    f"    tier {t['tier']} ({t['from']}, {upto}]: {t['units']} x {t['unit_price']} + {t['flat_fee']} = {t['amount']}"
                )
        if ln.get("usage"):
            u = ln["usage"]
            if "events_digest" in u:
                typer.echo(
                    f"  {plural(u['event_count'], 'event')}, "
                    f"{plural(u['windows']['count'], 'window')} of {u['windows']['size']}, "
                    f"digest {u['events_digest']}"
                )
            else:
                typer.echo(f"  {plural(u['event_count'], 'event')}, windows of {u['window']}")
    if "events" in out:
        p = out["page"]
        typer.echo(
            f"\nevents {p['offset'] + 1}..{p['offset'] + len(out['events'])} of {p['total']:,}:"
        )
        for e in out["events"]:
            value = "" if e["value"] is None else f"  value={e['value']}"
            typer.echo(f"  {e['event_time']}  {e['source']}/{e['event_id']}{value}")
        if "digest_matches" in out:
            typer.echo(
                f"digest over all {plural(p['total'], 'event')} "
                f"{'matches' if out['digest_matches'] else 'DOES NOT match'} the invoice"
            )
        else:
            typer.echo(
                f"{plural(p['total'], 'event')} "
                f"{'match' if out['count_matches'] else 'DO NOT match'} the line's event count"
            )


@handles_errors
def verify(
    ctx: typer.Context,
    number: str = typer.Argument(None, help="One document (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    jobs: int = typer.Option(
        0,
        "--jobs",
        min=0,
        help="Worker processes recomputing invoices (0: one per CPU, up to 8; "
        "used from 2,000 invoices on).",
    ),
) -> None:
    """Recompute issued documents at their cutoff; exit 1 if any does not reproduce.

    \b
    Examples:
      meterline verify
      meterline verify INV-000001 --json
      meterline verify --jobs 1
    """
    from meterline.services.verification import verify as verify_docs
    from meterline.services.workers import default_jobs

    report = verify_docs(settings(ctx).store(), number, jobs or default_jobs())
    if as_json:
        print_json(report.to_dict())
    else:
        for c in report.checks:
            typer.echo(f"{'ok  ' if c['ok'] else 'FAIL'}  {c['name']}: {c['details']}")
        typer.echo("verified: all documents reproduce" if report.ok else "verification FAILED")
    if not report.ok:
        raise typer.Exit(EXIT_DISCREPANCY)


@handles_errors
def rerate(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer"),
    period: str = typer.Option(None, "--period", help="YYYY-MM"),
    reason: str = typer.Option(None, "--reason", help="Mark the period by hand, with this reason."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Re-rate issued periods as known now; issue credit/debit notes for differences.

    \b
    Examples:
      meterline rerate
      meterline rerate --customer acme --period 2024-01 --reason "contract fix"
    """
    from meterline.services.corrections import rerate as rerate_periods

    if reason and not (customer and period):
        fail("--reason marks one period: give --customer and --period too")
    s = settings(ctx)
    result = rerate_periods(s.store(), from_datetime(s.clock().now()), customer, period, reason)
    if as_json:
        print_json([d.to_dict() for d in result.issued])
        return
    for d in result.issued:
        typer.echo(
            f"issued {d.number} ({d.kind}) correcting {d.body.corrects}: {d.body.text(d.body.total)} {d.body.currency}"
        )
        for why in d.body.reasons:
            typer.echo(f"  - {why}")
    typer.echo(
        f"{plural(len(result.issued), 'correction')} issued, "
        f"{plural(len(result.unchanged), 'invoice')} unchanged"
    )


def register(app: typer.Typer) -> None:
    app.command("rerate")(rerate)
    app.add_typer(invoice_app, name="invoice")
    app.command("explain")(explain)
    app.command("verify")(verify)
