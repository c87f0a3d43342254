"""`meterline webhooks add|list|deliveries|replay|run`."""

from __future__ import annotations

import signal
import threading

import typer

from meterline.cli import output
from meterline.cli.context import handles_errors, print_json, settings
from meterline.domain.clock import SystemClock
from meterline.domain.timestamps import US_PER_SECOND, from_datetime
from meterline.services import webhooks
from meterline.webhooks.retry import RetryPolicy

webhooks_app = typer.Typer(
    help="Webhook endpoints, deliveries and the dispatcher.", no_args_is_help=True
)


@webhooks_app.command("add")
@handles_errors
def add(
    ctx: typer.Context,
    url: str = typer.Argument(..., help="Where to POST (http or https)."),
    event_type: list[str] = typer.Option(
        [], "--type", help="Event type to subscribe to (repeat); none means every type."
    ),
    secret: str = typer.Option(None, "--secret", help="whsec_... (default: a new random one)."),
    description: str = typer.Option("", "--description"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register an endpoint. The signing secret is printed once: keep it."""
    s = settings(ctx)
    ep = webhooks.add_endpoint(
        s.store(), url, event_type, from_datetime(s.clock().now()), secret, description
    )
    if as_json:
        print_json(ep.to_dict(reveal_secret=True))
        return
    types = ", ".join(ep.event_types) or "all types"
    typer.echo(f"endpoint {ep.id}: {ep.url} ({types})")
    typer.echo(f"secret: {ep.secret}")


@webhooks_app.command("list")
@handles_errors
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered endpoints (secrets are not shown)."""
    eps = webhooks.list_endpoints(settings(ctx).store())
    if as_json:
        print_json([e.to_dict() for e in eps])
        return
    output.table(
        ("id", "url", "types", "enabled", "created"),
        [
            (
                str(e.id),
                e.url,
                ", ".join(e.event_types) or "all",
                str(e.enabled),
                e.to_dict()["created_at"],
            )
            for e in eps
        ],
    )


def _toggle(ctx: typer.Context, endpoint: int, enabled: bool, as_json: bool) -> None:
    s = settings(ctx)
    ep = webhooks.set_enabled(s.store(), endpoint, enabled, from_datetime(s.clock().now()))
    if as_json:
        print_json(ep.to_dict())
    else:
        typer.echo(f"endpoint {ep.id} {'enabled' if ep.enabled else 'disabled'}")


@webhooks_app.command("disable")
@handles_errors
def disable(
    ctx: typer.Context,
    endpoint: int = typer.Argument(..., help="Endpoint id."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Pause an endpoint: its deliveries wait, new messages skip it."""
    _toggle(ctx, endpoint, False, as_json)


@webhooks_app.command("enable")
@handles_errors
def enable(
    ctx: typer.Context,
    endpoint: int = typer.Argument(..., help="Endpoint id."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Resume an endpoint: its waiting deliveries are sent again."""
    _toggle(ctx, endpoint, True, as_json)


@webhooks_app.command("deliveries")
@handles_errors
def deliveries(
    ctx: typer.Context,
    message: str = typer.Option(None, "--message", help="Only this message id."),
    status: str = typer.Option(None, "--status", help="pending | delivered | failed"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    attempts: bool = typer.Option(False, "--attempts", help="Include every attempt."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deliveries, newest first, with their attempt log on request."""
    rows = webhooks.deliveries(settings(ctx).store(), message, status, limit, attempts)
    if as_json:
        print_json(rows)
        return
    table: list[tuple[str, ...]] = []
    for r in rows:
        table.append(
            (
                str(r["id"]),
                r["message_id"],
                r["type"],
                str(r["endpoint_id"]),
                r["status"],
                str(r["attempts"]),
                r["next_attempt_at"] or r["finished_at"] or "",
            )
        )
        for a in r.get("attempts_log", []):
            table.append(
                (
                    "",
                    f"  #{a['attempt']} {a['started_at']}",
                    a["outcome"],
                    "",
                    str(a["status_code"] or ""),
                    f"{a['latency_us'] // 1000} ms",
                    a["error"] or a["response_excerpt"][:40],
                )
            )
    output.table(
        ("id", "message", "type", "endpoint", "status", "attempts", "next / finished"), table
    )


@webhooks_app.command("replay")
@handles_errors
def replay(
    ctx: typer.Context,
    message_id: str = typer.Argument(..., help="The message (webhook-id) to send again."),
    endpoint: int = typer.Option(None, "--endpoint", help="Only to this endpoint."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send a recorded message again (new deliveries, fresh retry window)."""
    s = settings(ctx)
    ids = webhooks.replay(s.store(), message_id, from_datetime(s.clock().now()), endpoint)
    if as_json:
        print_json({"message_id": message_id, "deliveries": ids})
    else:
        typer.echo(f"queued {len(ids)} deliveries of {message_id}")


@webhooks_app.command("run")
@handles_errors
def run(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Attempt what is due, then exit."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="HTTP timeout, seconds."),
    idle: float = typer.Option(1.0, "--idle", min=0.01, help="Poll interval when idle, seconds."),
    lease: float = typer.Option(
        0.0, "--lease", min=0.0, help="Claim lease, seconds (default: timeout + 60)."
    ),
    backoff_base: float = typer.Option(5.0, "--backoff-base", min=0.001, help="Seconds."),
    backoff_cap: float = typer.Option(6 * 3600.0, "--backoff-cap", min=0.001, help="Seconds."),
    retry_window: float = typer.Option(
        3 * 86400.0, "--retry-window", min=0.0, help="Give up after this long, seconds."
    ),
) -> None:
    """Deliver webhooks until interrupted (SIGINT/SIGTERM finish the current send).

    Signs and schedules with the wall clock even under --now: receivers check
    webhook-timestamp against theirs."""
    s = settings(ctx)
    policy = RetryPolicy(
        round(backoff_base * US_PER_SECOND),
        round(backoff_cap * US_PER_SECOND),
        round(retry_window * US_PER_SECOND),
    )
    # The wall clock even under --now: receivers check webhook-timestamp
    # against theirs (Standard Webhooks), and retries must come due.
    dispatcher = webhooks.Dispatcher(
        s.store(),
        SystemClock(),
        policy=policy,
        timeout_s=timeout,
        lease_us=round(lease * US_PER_SECOND),
    )
    if once:
        n = dispatcher.run_once()
        typer.echo(f"attempted {n} deliveries")
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"dispatching webhooks as {dispatcher.name}", err=True)
    dispatcher.run(stop, idle)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
