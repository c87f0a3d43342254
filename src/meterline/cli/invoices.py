"""`invoice ...`, `explain` and `verify`: the document commands of DESIGN §12."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from meterline.billing.document import Status
from meterline.cli.context import EXIT_DISCREPANCY, fail, handles_errors, print_json, settings
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
    period: str = typer.Option(..., "--period", help="YYYY-MM in the customer's timezone."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A draft computed as known now: no number, may change."""
    doc = invoicing.preview(settings(ctx).store(), customer, period)
    if as_json:
        print_json(doc)
    else:
        sys.stdout.write(render_text(doc))


@invoice_app.command("issue")
@handles_errors
def issue(
    ctx: typer.Context,
    period: str = typer.Option(..., "--period", help="YYYY-MM in each customer's timezone."),
    customer: str = typer.Option(None, "--customer", help="Only this customer."),
    force: bool = typer.Option(False, "--force", help="Issue even if the period is not closed."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Issue invoices for a period; a customer-period is never invoiced twice."""
    s = settings(ctx)
    result = invoicing.issue(s.store(), period, from_datetime(s.clock().now()), customer, force)
    if as_json:
        print_json([d.to_dict() for d in result.issued])
    else:
        for d in result.issued:
            typer.echo(
                f"issued {d.number}  {d.body['customer_id']:<24} {d.body['total']:>14} {d.body['currency']}"
            )
        for cid, number in result.already:
            typer.echo(f"already issued {number} for {cid}")
        typer.echo(
            f"{len(result.issued)} issued, {len(result.already)} already issued, {len(result.refused)} refused"
            + (f", {len(result.failed)} failed" if result.failed else "")
        )
    for _cid, message in result.refused:
        sys.stderr.write(f"meterline: PERIOD_NOT_CLOSED: {message}\n")
    for cid, code, message in result.failed:
        line = message if cid in message else f"{cid}: {message}"
        sys.stderr.write(f"meterline: {code}: {' '.join(line.split())}\n")
    if result.refused or result.failed:
        raise typer.Exit(2)


@invoice_app.command("list")
@handles_errors
def list_(
    ctx: typer.Context,
    customer: str = typer.Option(None, "--customer"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Issued documents, oldest first."""
    docs = invoicing.list_all(settings(ctx).store(), customer)
    if as_json:
        print_json(
            [
                {
                    "number": d.number,
                    "kind": str(d.kind),
                    "status": str(d.status),
                    "customer_id": d.body["customer_id"],
                    "period": d.body["period"],
                    "total": d.body["total"],
                    "currency": d.body["currency"],
                    "corrects": d.body.get("corrects"),
                    "issued_at": d.issued_at,
                }
                for d in docs
            ]
        )
        return
    for d in docs:
        typer.echo(
            f"{d.number:<10} {d.kind!s:<12} {d.status!s:<7} {d.body['customer_id']:<24} "
            f"{d.body['period']['label']}  {d.body['total']:>14} {d.body['currency']}"
        )


@invoice_app.command("show")
@handles_errors
def show(
    ctx: typer.Context,
    number: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One issued document."""
    doc = invoicing.show(settings(ctx).store(), number).to_dict()
    if as_json:
        print_json(doc)
    else:
        sys.stdout.write(render_text(doc))


@invoice_app.command("render")
@handles_errors
def render(
    ctx: typer.Context,
    number: str = typer.Argument(...),
    fmt: str = typer.Option("text", "--format", help="json | text | pdf"),
    output: str = typer.Option(None, "-o", "--output", help="File to write (required for pdf)."),
) -> None:
    """Render an issued document as JSON, text or PDF."""
    doc = invoicing.show(settings(ctx).store(), number).to_dict()
    if fmt == "json":
        import msgspec

        data = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
    elif fmt == "text":
        data = render_text(doc).encode()
    elif fmt == "pdf":
        from meterline.render.pdf import render_pdf

        data = render_pdf(doc)
        if output is None:
            output = f"{number}.pdf"
    else:
        fail("--format must be json, text or pdf")
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        Path(output).write_bytes(data)
        typer.echo(f"wrote {output}")


def _status(ctx: typer.Context, number: str, status: Status, reason: str) -> None:
    s = settings(ctx)
    invoicing.set_status(s.store(), number, status, reason, from_datetime(s.clock().now()))
    typer.echo(f"{number} is {status}")


@invoice_app.command("pay")
@handles_errors
def pay(
    ctx: typer.Context,
    number: str = typer.Argument(...),
    reason: str = typer.Option("payment received", "--reason"),
) -> None:
    """Mark an issued document paid."""
    _status(ctx, number, Status.PAID, reason)


@invoice_app.command("void")
@handles_errors
def void(
    ctx: typer.Context,
    number: str = typer.Argument(...),
    reason: str = typer.Option("voided", "--reason"),
) -> None:
    """Void an issued document (its content stays; its status changes)."""
    _status(ctx, number, Status.VOID, reason)


@handles_errors
def explain(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="Issued document number."),
    line: int = typer.Option(None, "--line", help="Only this line."),
    events: bool = typer.Option(False, "--events", help="List the line's source events (paged)."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    offset: int = typer.Option(0, "--offset", min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Why a line costs what it does, down to its source events as known at the cutoff."""
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
            typer.echo(
                f"  {u['event_count']:,} events, {u['windows']['count']} windows of {u['windows']['size']}, digest {u['events_digest']}"
            )
    if "events" in out:
        p = out["page"]
        typer.echo(
            f"\nevents {p['offset'] + 1}..{p['offset'] + len(out['events'])} of {p['total']:,}:"
        )
        for e in out["events"]:
            typer.echo(f"  {e['event_time']}  {e['source']}/{e['event_id']}  value={e['value']}")
        typer.echo(
            f"digest over all {p['total']:,} events {'matches' if out['digest_matches'] else 'DOES NOT match'} the invoice"
        )


@handles_errors
def verify(
    ctx: typer.Context,
    number: str = typer.Argument(None, help="One document (default: all)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recompute issued documents at their cutoff; exit 1 if any does not reproduce."""
    from meterline.services.verification import verify as verify_docs

    report = verify_docs(settings(ctx).store(), number)
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
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-rate issued periods as known now; issue credit/debit notes for differences."""
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
            f"issued {d.number} ({d.kind}) correcting {d.body['corrects']}: {d.body['total']} {d.body['currency']}"
        )
        for why in d.body["reasons"]:
            typer.echo(f"  - {why}")
    typer.echo(
        f"{len(result.issued)} corrections issued, {len(result.unchanged)} invoices unchanged"
    )


def register(app: typer.Typer) -> None:
    app.command("rerate")(rerate)
    app.add_typer(invoice_app, name="invoice")
    app.command("explain")(explain)
    app.command("verify")(verify)
