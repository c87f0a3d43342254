"""Export benchmark (issue 15): the lines of 10,000 invoices to Parquet, rows/s.

A fresh store gets N issued invoices of L lines each, written straight into the
documents table with bodies shaped like real ones (explanation, tier
breakdown, usage provenance), since this measures exporting, not issuing.
Then `meterline export lines --format parquet` (the same code: rows streamed
from the store, decoded from each document's JSON, written in 10,000-row
chunks) runs into a file, and is compared in the same run with a baseline:
pyarrow writing the very same rows from a pre-built Python list (no store, no
JSON), the floor for turning Python rows into that Parquet file. Every
export is read back and checked against the rows.

    .venv/bin/python bench/export.py                      # 10,000 x 5, both backends
    .venv/bin/python bench/export.py --invoices 2000 --backend sqlite
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import text

from meterline.domain.canonical import dumps
from meterline.domain.timestamps import parse_rfc3339
from meterline.render.exports import arrow_schema, chunks
from meterline.services.exports import COLUMNS, Kind, Row, rows
from meterline.store.database import Store
from stores import fresh_store

LABEL = "2024-01"
START = parse_rfc3339("2024-01-01T00:00:00Z")
END = parse_rfc3339("2024-02-01T00:00:00Z")


def body(i: int, lines: int) -> dict[str, Any]:
    ls = []
    for j in range(lines):
        q = Decimal(1000 + 37 * i + j)
        amount = (q * Decimal("0.015")).quantize(Decimal("0.01"))
        ls.append(
            {
                "charge": f"charge_{j}",
                "description": f"API calls, region {j}",
                "price_book": "standard",
                "model": "graduated",
                "meter": "api_calls",
                "dimensions": {"region": f"r{j}"},
                "quantity": str(q),
                "unit_price": None,
                "amount": str(amount),
                "formula": f"1,000 x 0.02 + {q - 1000} x 0.015 = {amount}",
                "explanation": {
                    "tiers": [
                        {"from": "0", "to": "1000", "quantity": "1000", "unit_price": "0.02"},
                        {
                            "from": "1000",
                            "to": None,
                            "quantity": str(q - 1000),
                            "unit_price": "0.015",
                        },
                    ]
                },
                "usage": {"windows": 31, "events": int(q), "from": "2024-01-01T00:00:00Z"},
            }
        )
    return {
        "kind": "invoice",
        "customer_id": f"cust-{i:05d}",
        "customer_name": f"Customer {i}",
        "currency": "USD",
        "timezone": "UTC",
        "period": {"label": LABEL, "start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"},
        "lines": ls,
        "subtotal": "0.00",
        "tax_rate": "0",
        "tax": "0.00",
        "credits": [],
        "credits_applied": "0.00",
        "total": "0.00",
        "corrects": None,
        "cutoff_seq": 1,
    }


def load(store: Store, invoices: int, lines: int) -> None:
    params = [
        {
            "q": i + 1,
            "n": f"INV-{i + 1:06d}",
            "c": f"cust-{i:05d}",
            "ik": f"cust-{i:05d}|{LABEL}",
            "b": dumps(body(i, lines)).decode(),
        }
        for i in range(invoices)
    ]
    with store.write() as conn:
        conn.execute(
            text(
                "INSERT INTO documents (seq, number, kind, customer_id, period_label, period_start, "
                "period_end, invoice_key, corrects, cutoff_seq, currency, total, body, content_hash, "
                "previous_hash, document_hash, forced, issued_at) VALUES (:q, :n, 'invoice', :c, "
                f"'{LABEL}', {START}, {END}, :ik, NULL, 1, 'USD', '0.00', :b, 'h', 'p', 'd', false, {END})"
            ),
            params,
        )


def export_file(store: Store, path: Path) -> int:
    with path.open("wb") as f:
        for chunk in chunks("parquet", COLUMNS[Kind.LINES], rows(store, Kind.LINES, LABEL)):
            f.write(chunk)
    return int(pq.ParquetFile(path).metadata.num_rows)


def baseline_file(prebuilt: list[Row], path: Path) -> int:
    """pyarrow alone: the same rows, already in memory, to the same Parquet schema
    in one write_table call (no store, no JSON, no chunking, no exactness check)."""
    schema = arrow_schema(COLUMNS[Kind.LINES])
    columns = list(zip(*prebuilt, strict=True))
    table = pa.Table.from_arrays(
        [pa.array(list(col), type=schema.field(i).type) for i, col in enumerate(columns)],
        schema=schema,
    )
    pq.write_table(table, path, compression="zstd")
    return int(pq.ParquetFile(path).metadata.num_rows)


def run(backend: str, invoices: int, lines: int, repeat: int) -> None:
    with fresh_store(backend) as store, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        load(store, invoices, lines)
        load_s = time.perf_counter() - t0
        prebuilt = list(rows(store, Kind.LINES, LABEL))
        n = len(prebuilt)
        assert n == invoices * lines
        best_export = best_base = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            assert export_file(store, Path(tmp) / "lines.parquet") == n
            best_export = min(best_export, time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert baseline_file(prebuilt, Path(tmp) / "base.parquet") == n
            best_base = min(best_base, time.perf_counter() - t0)
        table = pq.read_table(Path(tmp) / "lines.parquet")
        assert table.column("amount").to_pylist() == [r[14] for r in prebuilt]
        size = (Path(tmp) / "lines.parquet").stat().st_size
        print(
            f"{backend:10s} {invoices:,} invoices x {lines} lines = {n:,} rows "
            f"(load {load_s:.1f} s, file {size / 1e6:.2f} MB)\n"
            f"  export (store -> Parquet): {best_export:6.2f} s  {n / best_export:10,.0f} rows/s\n"
            f"  baseline (list -> Parquet): {best_base:6.2f} s  {n / best_base:10,.0f} rows/s\n"
            f"  ratio export/baseline time: {best_export / best_base:.2f}x"
        )
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--invoices", type=int, default=10_000)
    ap.add_argument("--lines", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    a = ap.parse_args()
    for backend in ("sqlite", "postgres") if a.backend == "both" else (a.backend,):
        run(backend, a.invoices, a.lines, a.repeat)


if __name__ == "__main__":
    main()
