"""`subscription change`: a plan change in one command (DESIGN §7)."""

from __future__ import annotations

import typer

from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.timestamps import from_datetime

subscription_app = typer.Typer(help="Change a customer's plan.", no_args_is_help=True)


@subscription_app.command("change")
@handles_errors
def change(
    ctx: typer.Context,
    customer: str = typer.Argument(..., help="Customer id."),
    to: str = typer.Option(..., "--to", help="The price book of the next subscription."),
    at: str = typer.Option(..., "--at", help="When the change takes effect (RFC 3339)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """End the subscription in effect at --at there and start one on --to.

    Recorded as a new customer version, like `catalog apply`. The unused part of an
    in-advance fee of the old plan is credited ("unused time on <plan>") on the
    invoice of the period holding --at. Running the same change again is a no-op.

    \b
    Examples:
      meterline subscription change acme --to pro --at 2024-01-16T00:00:00Z
    """
    from meterline.cli.app import _instant
    from meterline.services.plan_change import change_plan

    s = settings(ctx)
    at_us = _instant("--at", at)
    result = change_plan(s.store(), customer, to, at_us, from_datetime(s.clock().now()))
    if as_json:
        print_json(result.to_dict())
        return
    verb = "changed" if result.recorded else "already changed"
    typer.echo(
        f"{verb}: {customer} from {result.ended.price_book} to {result.started.price_book} at {at}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(subscription_app, name="subscription")
