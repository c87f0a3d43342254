"""`meterline demo`: a realistic month, end to end, on a fresh SQLite store.

The story, each step through the same services the CLI and the API use, with
the receiving clock pinned so the run is reproducible:

1. apply the catalog (meters, price books with a mid-month version, customers);
2. ingest January (duplicates, malformed lines, out-of-order arrivals); January
   is still open, and the progressive customer's usage has reached its threshold,
   so it gets an interim invoice; then the first hours of February, which move
   the watermark past January's close;
3. issue January's invoices (the progressive customer's is the final one, netting
   the interim), and the anniversary customer's first period (Dec 20 - Jan 20);
4. two days later the past changes: a producer's retry queue delivers late
   January calls, a batch is backfilled, staging traffic is retracted, and a
   JPY price is fixed retroactively;
5. `rerate` issues the debit and credit notes; some invoices are paid;
6. `verify` re-derives every document; `reconcile` ties the books out;
7. every document is written as JSON, a selection as text and PDF.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text

from meterline.billing.document import Issued, Kind, Status
from meterline.demo import catalog as demo_catalog
from meterline.demo.workload import Workload, write
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import US_PER_HOUR, format_us, parse_rfc3339, to_datetime
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.render.text import render_text
from meterline.services import corrections, invoicing, progressive, rollups, verification
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store.database import Store, open_store
from meterline.wiring import ingestor_for

PERIOD = "2024-01"
ANNIVERSARY_PERIOD = demo_catalog.ANNIVERSARY_START[:10]  # its first period's label
# Receiving times of each step (the clock the demo pins).
CATALOG_AT = "2023-12-20T09:00:00Z"
JANUARY_AT = "2024-02-01T06:00:00Z"
FEBRUARY_AT = "2024-02-01T12:05:00Z"
ISSUE_AT = "2024-02-01T12:30:00Z"
CHANGES_AT = "2024-02-03T09:00:00Z"
RERATE_AT = "2024-02-03T10:00:00Z"
PAID_AT = "2024-02-15T16:00:00Z"

LATE_CUSTOMER_INDEX = 1
BACKFILL_CUSTOMER_INDEX = 2
RETRACT_CUSTOMER_INDEX = 4
LATE_CALLS = 1_500
BACKFILL_CALLS = 300
RETRACTIONS = 40
PDFS_PER_KIND = 2
SHOWN_NOTES = 8


@dataclass
class Outcome:
    """What the demo did, for its summary (and for tests of the demo)."""

    out: Path
    ingest: IngestReport | None = None
    invoices: list[Issued] = field(default_factory=list)  # final and ordinary, every period
    interims: list[Issued] = field(default_factory=list)  # progressive billing, open January
    notes: list[Issued] = field(default_factory=list)
    paid: int = 0
    verified: bool = False
    reconciled: bool | None = None
    pdfs: list[Path] = field(default_factory=list)


def _us(t: str) -> int:
    return parse_rfc3339(t)


def _clock(t: str) -> FixedClock:
    return FixedClock(to_datetime(parse_rfc3339(t)))


@contextmanager
def _step(console: Console, title: str) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    yield
    console.print(f"[dim]({time.perf_counter() - t0:.1f}s)[/dim]")


def _ingest_file(
    store: Store, at: str, path: Path, console: Console, backfill: bool = False
) -> IngestReport:
    lines = sum(1 for _ in path.open("rb"))
    ingestor = ingestor_for(store, _clock(at))
    with Progress(
        TextColumn(f"[bold]ingesting {path.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("ingest", total=lines)
        report = ingestor.ingest(
            read_file(str(path)),
            IngestOptions(origin=f"demo:{path.name}", backfill=backfill),
            lambda n: bar.advance(task, n),
        )
    kept = " (quarantined with their raw input)" if report.rejected else ""
    console.print(
        f"{path.name}: accepted {report.accepted:,}, duplicates {report.duplicates:,}, "
        f"rejected {report.rejected:,}{kept}"
    )
    return report


def _write_ndjson(path: Path, events: list[dict[str, Any]]) -> Path:
    enc = msgspec.json.Encoder()
    path.write_bytes(b"".join(enc.encode(e) + b"\n" for e in events))
    return path


def _late_calls(customer: str) -> list[dict[str, Any]]:
    """A gateway retry queue flushing January 20th's calls, two weeks late."""
    base = _us("2024-01-20T00:00:00Z")
    return [
        {
            "event_id": f"retry_{i:06d}",
            "customer_id": customer,
            "event_type": "api_call",
            "event_time": format_us(base + i * 40_000_000),
            "properties": {"region": "eu"},
            "source": "gateway",
        }
        for i in range(LATE_CALLS)
    ]


def _backfill_calls(customer: str) -> list[dict[str, Any]]:
    """LLM calls recovered from a replica's logs after an outage on January 9th."""
    base = _us("2024-01-09T13:00:00Z")
    return [
        {
            "event_id": f"recovered_{i:06d}",
            "customer_id": customer,
            "event_type": "llm_call",
            "event_time": format_us(base + i * 7_000_000),
            "properties": {"tokens": 800 + i % 400, "model": "large"},
            "source": "inference-replica",
        }
        for i in range(BACKFILL_CALLS)
    ]


def _documents_table(docs: list[Issued], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for col in ("number", "kind", "customer", "total", "reasons"):
        table.add_column(col, overflow="fold")
    for d in docs:
        b = d.body
        table.add_row(
            d.number,
            str(d.kind),
            b.customer_id,
            f"{b.text(b.total)} {b.currency}",
            "; ".join(b.reasons),
        )
    return table


def _totals_by_currency(docs: list[Issued]) -> str:
    sums: dict[str, Decimal] = {}
    for d in docs:
        cur = d.body.currency
        sums[cur] = sums.get(cur, Decimal(0)) + d.body.total
    return ", ".join(f"{v:,} {k}" for k, v in sorted(sums.items()))


def _reconcile(store: Store, console: Console) -> bool | None:
    """Run reconciliation when this build has it (the ledger lands with issue 7)."""
    try:
        from meterline.services import reconcile as reconciliation
    except ImportError:
        console.print("reconcile: not available in this build")
        return None
    report = reconciliation.reconcile(store)
    data: dict[str, Any] = report.to_json()
    for check in data["checks"]:
        mark = "[green]ok[/green]" if check["ok"] else "[red]FAILED[/red]"
        console.print(f"  {mark}  {check['name']}: {check['details']}")
    for warning in data["warnings"]:
        said = warning.get("details", warning) if isinstance(warning, dict) else warning
        console.print(f"  [yellow]warning[/yellow]  {said}")
    return bool(data["ok"])


def _write_documents(store: Store, out: Path, outcome: Outcome, console: Console) -> None:
    docs_dir = out / "documents"
    pdf_dir = out / "pdf"
    docs_dir.mkdir(exist_ok=True)
    pdf_dir.mkdir(exist_ok=True)
    from meterline.services.finance import with_finance

    with store.read() as conn:  # seller, dates and terms as known at each cutoff
        everything = [with_finance(conn, d) for d in invoicing.list_all(store)]
    for d in everything:
        data = msgspec.json.format(msgspec.json.encode(d.to_dict()), indent=2)
        (docs_dir / f"{d.number}.json").write_bytes(data + b"\n")
    chosen = _pdf_selection(everything)
    try:
        from meterline.render.pdf import render_pdf
    except ImportError:  # the [pdf] extra is not installed
        console.print("PDF rendering needs the [pdf] extra (WeasyPrint); writing text only")
        render: Callable[[dict[str, Any]], bytes] | None = None
    else:
        render = render_pdf
    for d in chosen:
        doc = d.to_dict()
        (docs_dir / f"{d.number}.txt").write_text(render_text(doc))
        if render is not None:
            path = pdf_dir / f"{d.number}.pdf"
            path.write_bytes(render(doc))
            outcome.pdfs.append(path)


def _pdf_selection(docs: list[Issued]) -> list[Issued]:
    """The largest invoice per currency, the first notes of each kind, and the
    progressive customer's interim and final invoices."""
    chosen: list[Issued] = []
    by_currency: dict[str, Issued] = {}
    for d in docs:
        if d.kind == Kind.INVOICE:
            best = by_currency.get(d.body.currency)
            if best is None or d.body.total > best.body.total:
                by_currency[d.body.currency] = d
    chosen.extend(by_currency[c] for c in sorted(by_currency))
    for kind in (Kind.DEBIT_NOTE, Kind.CREDIT_NOTE):
        chosen.extend([d for d in docs if d.kind == kind][:PDFS_PER_KIND])
    # progressive billing: the interim invoices and the final ones that net them
    progressive = [d for d in docs if d.body.role_of in ("interim", "final")]
    chosen.extend(d for d in progressive if d.number not in {c.number for c in chosen})
    return chosen


def run_demo(out: Path, workload: Workload, console: Console) -> Outcome:
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "meterline.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    for stale in [*out.glob("documents/*"), *out.glob("pdf/*")]:
        stale.unlink()
    outcome = Outcome(out)
    ids = workload.customer_ids()
    store = open_store(f"sqlite:///{db_path}")
    try:
        store.upgrade()
        _run(store, out, workload, ids, outcome, console)
    finally:
        store.dispose()
    _summary(db_path, outcome, console)
    return outcome


def _run(
    store: Store,
    out: Path,
    workload: Workload,
    ids: list[str],
    outcome: Outcome,
    console: Console,
) -> None:
    with _step(console, "1. catalog"):
        doc = demo_catalog.catalog(workload)
        (out / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        apply_catalog(store, doc, _us(CATALOG_AT))
        console.print(
            f"{len(doc['meters'])} meters, {len(doc['price_books'])} price books, "
            f"{len(doc['customers'])} customers -> {out / 'catalog.yaml'}"
        )

    with _step(console, "2. ingest January, then the first hours of February"):
        january = out / "events-2024-01.ndjson"
        with console.status(f"generating {workload.events:,} events for {len(ids)} customers"):
            write(workload, january)
        outcome.ingest = _ingest_file(store, JANUARY_AT, january, console)
        morning = Workload(
            customers=workload.customers,
            events=max(1000, workload.events // 200),
            month_start="2024-02-01T00:00:00Z",
            month_end="2024-02-01T12:00:00Z",
            malformed=0,
            seed=workload.seed + 1,
            first_id=workload.events,
        )
        february = out / "events-2024-02-01.ndjson"
        write(morning, february)
        # January is over but not closed: progressive billing looks at the open period.
        outcome.interims = progressive.issue_interims(store, _us(JANUARY_AT)).issued
        for d in outcome.interims:
            pub = d.to_dict()  # the money as the document writes it
            console.print(
                f"interim invoice {d.number} for {pub['customer_id']} "
                f"{pub['period']['label']}: {pub['total']} {pub['currency']} "
                f"(usage reached the threshold of "
                f"{', '.join(pub['thresholds'].values())} {pub['currency']})"
            )
        _ingest_file(store, FEBRUARY_AT, february, console)
        with store.read() as conn:
            per_type = conn.execute(
                text(
                    "SELECT event_type, COUNT(*), COUNT(DISTINCT customer_id) FROM events "
                    "WHERE event_time < :feb GROUP BY event_type ORDER BY event_type"
                ),
                {"feb": _us("2024-02-01T00:00:00Z")},
            ).all()
        for event_type, n, customers in per_type:
            console.print(f"  January {event_type:<10} {n:>10,} events from {customers} customers")

    with _step(console, f"3. issue {PERIOD}"):
        # A rollup pass first, as operators schedule it: the run reads month units.
        passes = rollups.roll_up(store, _us(ISSUE_AT))["passes"]
        console.print(
            "usage index rolled up: "
            + ", ".join(f"{p['month']} {p['rows_written']:,} unit rows" for p in passes)
        )
        result = invoicing.issue(store, PERIOD, _us(ISSUE_AT))
        # The anniversary customer's periods start on the 20th: its first one is closed.
        anniversary = ids[demo_catalog.ANNIVERSARY_INDEX]
        first = invoicing.issue(store, ANNIVERSARY_PERIOD, _us(ISSUE_AT), anniversary)
        outcome.invoices = result.issued + first.issued
        console.print(
            f"issued {len(outcome.invoices)} invoices ({_totals_by_currency(outcome.invoices)}); "
            f"refused {len(result.refused)}"
        )
        for d in first.issued:
            pub = d.to_dict()
            console.print(
                f"  {d.number} for {anniversary}: anniversary period "
                f"{pub['period']['label']} [{pub['period']['start']} .. "
                f"{pub['period']['end']}), {pub['total']} {pub['currency']}"
            )
        for d in outcome.invoices:
            if d.body.role_of == "final":
                pub = d.to_dict()
                console.print(
                    f"  {d.number} for {pub['customer_id']}: final invoice of "
                    f"{pub['period']['label']}: the period's subtotal is "
                    f"{pub['period_subtotal']} {pub['currency']}; what "
                    f"{', '.join(pub['interims'])} did not bill comes to "
                    f"{pub['subtotal']}, {pub['total']} {pub['currency']} with tax"
                )
        for cid, why in result.refused[:5]:
            console.print(f"  refused {cid}: {why}")

    with _step(console, "4. the past changes"):
        late = _write_ndjson(out / "late-2024-01.ndjson", _late_calls(ids[LATE_CUSTOMER_INDEX]))
        _ingest_file(store, CHANGES_AT, late, console)
        backfill = _write_ndjson(
            out / "backfill-2024-01.ndjson", _backfill_calls(ids[BACKFILL_CUSTOMER_INDEX])
        )
        _ingest_file(store, CHANGES_AT, backfill, console, backfill=True)
        with store.read() as conn:
            keys = conn.execute(
                text(
                    "SELECT source, event_id FROM events WHERE customer_id = :c "
                    "AND event_type = 'api_call' ORDER BY event_time, event_id LIMIT :n"
                ),
                {"c": ids[RETRACT_CUSTOMER_INDEX], "n": RETRACTIONS},
            ).all()
        for source, event_id in keys:
            retract_event(
                store,
                source,
                event_id,
                "staging traffic sent with a production key",
                _us(CHANGES_AT),
            )
        console.print(f"retracted {len(keys)} events of {ids[RETRACT_CUSTOMER_INDEX]}")
        apply_catalog(store, demo_catalog.JAPAN_FIX, _us(CHANGES_AT))
        console.print("recorded japan v1b retroactively (2 JPY -> 1.5 JPY per API call)")

    with _step(console, "5. rerate, and payments"):
        reran = corrections.rerate(store, _us(RERATE_AT))
        outcome.notes = reran.issued
        shown = reran.issued[:SHOWN_NOTES]
        console.print(_documents_table(shown, f"{len(reran.issued)} corrections issued by rerate"))
        if len(reran.issued) > len(shown):
            console.print(f"... and {len(reran.issued) - len(shown)} more in documents/")
        again = corrections.rerate(store, _us(RERATE_AT))
        console.print(f"rerate again: {len(again.issued)} documents (idempotent)")
        for inv in outcome.invoices[: len(outcome.invoices) // 2]:
            invoicing.set_status(store, inv.number, Status.PAID, "bank transfer", _us(PAID_AT))
            outcome.paid += 1
        console.print(f"{outcome.paid} invoices paid")

    with _step(console, "6. verify and reconcile"):
        report = verification.verify(store)
        outcome.verified = report.ok
        failed = [c for c in report.checks if not c["ok"]]
        console.print(
            f"verify: {len(report.checks)} checks, "
            + ("all documents reproduce" if report.ok else f"{len(failed)} FAILED")
        )
        outcome.reconciled = _reconcile(store, console)

    with _step(console, "7. documents"):
        _write_documents(store, out, outcome, console)


def _summary(db_path: Path, outcome: Outcome, console: Console) -> None:
    out = outcome.out
    console.rule("[bold]where everything is")
    console.print(f"store:      {db_path}")
    console.print(f"catalog:    {out / 'catalog.yaml'}")
    console.print(f"documents:  {out / 'documents'}/  (every document as JSON; text for a few)")
    for p in outcome.pdfs:
        console.print(f"pdf:        {p}")
    if outcome.invoices:
        first = outcome.invoices[0].number
        console.print(
            "\ntry:  .venv/bin/meterline --db sqlite:///"
            f"{db_path} explain {first} --line 1 --events"
        )
    console.print(
        f"      .venv/bin/meterline --db sqlite:///{db_path} verify    "
        f"(clock for further commands: --now {format_us(_us(PAID_AT) + US_PER_HOUR)})"
    )
