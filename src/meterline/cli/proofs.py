"""`prove NUMBER --event ID`: the inclusion proof of an event (DESIGN §2)."""

from __future__ import annotations

import typer

from meterline.cli.context import EXIT_DISCREPANCY, handles_errors, print_json, settings
from meterline.services.proofs import prove


@handles_errors
def prove_command(
    ctx: typer.Context,
    number: str = typer.Argument(..., help="An issued document, e.g. INV-000001."),
    event: str = typer.Option(..., "--event", help="The event_id to prove."),
    source: str = typer.Option(None, "--source", help="The event's source, if ambiguous."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Prove that an event is in the log the document commits to (its tree head)."""
    out = prove(settings(ctx).store(), number, event, source)
    if as_json:
        print_json(out)
    else:
        e = out["event"]
        typer.echo(f"event ({e['source']}, {e['event_id']}) at seq {out['seq']} in {number}")
        typer.echo(f"  content hash  {out['content_hash']}")
        typer.echo(f"  leaf {out['leaf_index']:<9} {out['leaf_hash']}")
        for i, h in enumerate(out["audit_path"]):
            typer.echo(f"  path[{i}]{'':<6}{h}")
        typer.echo(f"  tree size     {out['tree_size']}")
        typer.echo(f"  root          {out['root']}")
        typer.echo("proof verifies" if out["verified"] else "proof DOES NOT verify")
    if not out["verified"]:
        raise typer.Exit(EXIT_DISCREPANCY)


def register(app: typer.Typer) -> None:
    app.command("prove")(prove_command)
