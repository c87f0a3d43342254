"""Export writers: CSV and Parquet, produced as a stream of byte chunks.

Both consume rows lazily and hand out bytes every CHUNK_ROWS rows, so the CLI
writes a file and the HTTP API streams a response without ever holding the
whole export.

- CSV (RFC 4180, UTF-8, header row): decimals as plain decimal strings exactly
  as the documents print them ("180.00", never an exponent), instants as RFC
  3339 UTC text, booleans as true/false, a missing value as an empty field.
- Parquet: decimals as decimal128(38, 12). A fixed scale gives every file the
  same schema, so warehouses append files and sum columns natively and
  exactly; 12 fractional digits hold every money amount (at most 4 minor
  digits) and the unit prices and quantities meterline prints, with 26 integer
  digits to spare. A value that would need more digits is refused
  (EXPORT_PRECISION), never rounded. Instants as timestamp[us, UTC].
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us
from meterline.services.exports import Column, ColumnType, Row

CHUNK_ROWS = 10_000
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 12
FORMATS = ("csv", "parquet")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, "--format must be csv or parquet")
    return name


def _csv_value(value: Any, kind: ColumnType) -> str:
    if value is None:
        return ""
    if kind is ColumnType.TIMESTAMP:
        return format_us(int(value))
    if kind is ColumnType.BOOL:
        return "true" if value else "false"
    if kind is ColumnType.DECIMAL:
        return f"{value:f}" if isinstance(value, Decimal) else str(value)
    return str(value)


def csv_chunks(columns: tuple[Column, ...], rows: Iterable[Row]) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([c.name for c in columns])
    kinds = [c.type for c in columns]
    for n, row in enumerate(rows, start=1):
        writer.writerow([_csv_value(v, k) for v, k in zip(row, kinds, strict=True)])
        if n % CHUNK_ROWS == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


class _ChunkSink:
    """A write-only file for pyarrow that keeps bytes until they are taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _exact(value: Decimal, column: str) -> Decimal:
    scaled = value.scaleb(DECIMAL_SCALE)
    if scaled != scaled.to_integral_value() or abs(scaled) >= Decimal(10) ** DECIMAL_PRECISION:
        raise MeterlineError(
            ErrorCode.EXPORT_PRECISION,
            f"{column} value {fmt(value)} does not fit decimal({DECIMAL_PRECISION}, "
            f"{DECIMAL_SCALE}); export it as CSV",
        )
    return value


def arrow_schema(columns: tuple[Column, ...]) -> Any:
    import pyarrow as pa

    types = {
        ColumnType.STRING: pa.string(),
        ColumnType.INT: pa.int64(),
        ColumnType.DECIMAL: pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
        ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
        ColumnType.BOOL: pa.bool_(),
    }
    return pa.schema([pa.field(c.name, types[c.type], nullable=c.nullable) for c in columns])


def _arrow_required() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            "Parquet needs pyarrow: pip install 'meterline[export]'",
        ) from None
    return pa, pq


def parquet_chunks(columns: tuple[Column, ...], rows: Iterable[Row]) -> Iterator[bytes]:
    pa, pq = _arrow_required()
    schema = arrow_schema(columns)
    sink = _ChunkSink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    names = [c.name for c in columns]
    try:
        batch: list[Row] = []
        for row in rows:
            batch.append(row)
            if len(batch) == CHUNK_ROWS:
                writer.write_batch(_record_batch(pa, schema, batch, names))
                batch = []
                yield sink.take()
        if batch or sink.tell() == 0:
            writer.write_batch(_record_batch(pa, schema, batch, names))
    finally:
        writer.close()
    yield sink.take()


def _record_batch(pa: Any, schema: Any, batch: list[Row], names: list[str]) -> Any:
    columns = list(zip(*batch, strict=True)) if batch else [() for _ in names]
    arrays = []
    for i, col in enumerate(columns):
        try:
            arrays.append(pa.array(col, type=schema.field(i).type))
        except pa.ArrowInvalid:
            for v in col:  # name the value that does not fit; never round it
                _exact(v, names[i])
            raise
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def chunks(fmt_name: str, columns: tuple[Column, ...], rows: Iterable[Row]) -> Iterator[bytes]:
    if check_format(fmt_name) == "csv":
        return csv_chunks(columns, rows)
    return parquet_chunks(columns, rows)
