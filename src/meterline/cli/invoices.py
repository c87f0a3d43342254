"""`invoice ...`, `explain` and `verify`: the document commands of DESIGN §12."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from meterline.billing.document import Status
from meterline.cli.context import fail, handles_errors, print_json, settings
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
        )
    for _cid, message in result.refused:
        sys.stderr.write(f"meterline: PERIOD_NOT_CLOSED: {message}\n")
    if result.refused:
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
