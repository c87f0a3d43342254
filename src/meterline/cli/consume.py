"""`meterline consume`: the Kafka consumer-group worker (DESIGN §11, docs/KAFKA.md)."""

from __future__ import annotations

import logging
import sys

import typer

from meterline.cli.context import fail, handles_errors, print_json, settings
from meterline.domain.events import DEFAULT_SOURCE


def _client_options(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"-X expects KEY=VALUE (a librdkafka property), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


@handles_errors
def consume(
    ctx: typer.Context,
    brokers: str = typer.Option(..., "--brokers", help="Bootstrap servers, HOST:PORT[,...]."),
    topic: str = typer.Option(..., "--topic", help="Topic of usage events (keyed by customer)."),
    group: str = typer.Option("meterline", "--group", help="Consumer group id."),
    source: str = typer.Option(
        DEFAULT_SOURCE, "--source", help="Source for events that name none."
    ),
    backfill: bool = typer.Option(
        False, "--backfill", help="Accept events older than the age bound (recorded as backfill)."
    ),
    batch_size: int = typer.Option(
        1000, "--batch-size", min=1, max=1_000_000, help="Messages per stored batch."
    ),
    max_wait_ms: int = typer.Option(
        1000, "--max-wait-ms", min=0, help="Longest a message waits before its batch is stored."
    ),
    client: list[str] = typer.Option(
        [], "-X", "--client-option", help="librdkafka property KEY=VALUE (repeatable)."
    ),
    dead_letter_topic: str = typer.Option(
        "",
        "--dead-letter-topic",
        help="Topic for messages that cannot be stored (default: TOPIC.dlq).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every stored batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the final counts as JSON."),
) -> None:
    """Consume usage events from Kafka: store each batch, then commit its offsets.

    Runs until SIGTERM/SIGINT, then finishes the batch, commits and exits.

    \b
    Examples:
      meterline consume --brokers localhost:9092 --topic usage
    """
    try:
        from meterline.kafka.consumer import KafkaWorker, WorkerSettings, stop_on_signals
    except ImportError:
        fail("the Kafka worker needs confluent-kafka: pip install 'meterline[kafka]'")
    from meterline.wiring import ingestor_for

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("meterline").setLevel(logging.DEBUG if verbose else logging.INFO)
    s = settings(ctx)
    store = s.store()
    try:
        worker_settings = WorkerSettings(
            brokers=brokers,
            topic=topic,
            group=group,
            source=source,
            backfill=backfill,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
            client=_client_options(client),
            dead_letter_topic=dead_letter_topic or None,
        )
        worker = KafkaWorker(ingestor_for(store, s.clock()), worker_settings)
    except ValueError as exc:
        fail(str(exc))
    with stop_on_signals(worker):
        stats = worker.run()
    if as_json:
        print_json(stats.to_dict())
    else:
        typer.echo(
            f"consumed {stats.messages:,} messages in {stats.batches:,} batches: "
            f"accepted {stats.accepted:,}  duplicates {stats.duplicates:,}  "
            f"rejected {stats.rejected:,}"
        )


def register(app: typer.Typer) -> None:
    app.command("consume")(consume)
