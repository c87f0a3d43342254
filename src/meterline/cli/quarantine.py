"""`quarantine list|replay`: rejected inputs, and replaying them after a fix."""

from __future__ import annotations

import typer

from meterline.cli import output
from meterline.cli.context import EXIT_BAD_INPUT, fail, handles_errors, print_json, settings
from meterline.cli.output import plural
from meterline.domain.timestamps import from_datetime

quarantine_app = typer.Typer(
    help="Rejected inputs, kept byte for byte: list them, replay them after a fix.",
    no_args_is_help=True,
)


@quarantine_app.command("list")
@handles_errors
def list_(
    ctx: typer.Context,
    after: int = typer.Option(0, "--after", min=0, help="Only entries with a greater id."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="Entries to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the page as JSON."),
) -> None:
    """Quarantined (rejected) inputs, oldest first, with why and whether their
    event is stored now.

    \b
    Examples:
      meterline quarantine list
      meterline quarantine list --after 100 --limit 50 --json
    """
    from meterline.services.quarantine import read_page, stored_now

    s = settings(ctx)
    store = s.store()
    page = read_page(store, after, limit)
    stored = stored_now(store, page["items"], from_datetime(s.clock().now()))
    for item in page["items"]:
        item["stored_now"] = stored[item["id"]]
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        typer.echo("the quarantine is empty" if after == 0 else "no entries after that id")
        return
    rows = []
    for item in page["items"]:
        raw = item["raw"] if item["raw"] is not None else "(binary: see --json raw_base64)"
        raw = raw.strip().replace("\n", " ")
        rows.append(
            (
                str(item["id"]),
                item["received_at"],
                item["code"],
                item["message"],
                "stored" if item["stored_now"] else "-",
                raw[:80] + ("..." if len(raw) > 80 else ""),
            )
        )
    output.table(("id", "received", "code", "message", "now", "raw"), rows)
    if page["next_after"] is not None:
        typer.echo(f"more: meterline quarantine list --after {page['next_after']}")


@quarantine_app.command("replay")
@handles_errors
def replay(
    ctx: typer.Context,
    ids: list[int] = typer.Argument(None, help="Quarantine entry ids (see `quarantine list`)."),
    all_: bool = typer.Option(False, "--all", help="Replay every entry."),
    backfill: bool = typer.Option(
        False, "--backfill", help="Accept events older than the age bound (recorded as backfill)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Validate quarantined inputs again and store those that are now valid.

    Entries stay in the quarantine (it is a record of what was rejected); an
    event already stored is recognised as a duplicate, so replaying twice is
    harmless. Exit 2 if any entry is still rejected.

    \b
    Examples:
      meterline quarantine replay 3 4
      meterline quarantine replay --all --backfill
    """
    from meterline.services.quarantine import replay as replay_entries
    from meterline.wiring import ingestor_for

    if bool(ids) == all_:
        fail("give quarantine entry ids or --all (not both)")
    s = settings(ctx)
    store = s.store()
    clock = s.clock()
    report = replay_entries(
        store,
        ingestor_for(store, clock),
        None if all_ else list(ids),
        from_datetime(clock.now()),
        backfill,
    )
    if as_json:
        print_json(report.to_dict())
    else:
        typer.echo(
            f"replayed {plural(len(report.outcomes), 'entry', 'entries')}: "
            f"{report.count('stored'):,} stored, {report.count('duplicate'):,} already stored, "
            f"{report.count('rejected'):,} still rejected"
        )
        for o in report.outcomes:
            if o.outcome in ("rejected", "not_found"):
                typer.echo(f"  {o.id}: {o.code}: {o.message}")
    if report.count("rejected") or report.count("not_found"):
        raise typer.Exit(EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
