"""Input formats: NDJSON, a JSON array (or one object), and CSV.

Readers yield `Item`s lazily so a large file never has to fit in memory twice.
Each item keeps its raw bytes: a rejected event is quarantined exactly as sent.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json, encode_json
from meterline.domain.json_errors import describe_decode_error
from meterline.ingest.jsonsplit import split_array

FORMATS = ("auto", "ndjson", "json", "csv")
_NO_OBJECT: Any = object()


@dataclass(frozen=True, slots=True)
class Item:
    """One input record. `obj` is set when the reader already decoded it."""

    raw: bytes
    line: int
    obj: Any = _NO_OBJECT
    # Set when the reader could not even cut out a record (a CSV row the csv
    # module refuses): the item is rejected with this code, the file goes on.
    error: tuple[ErrorCode, str] | None = None

    @property
    def decoded(self) -> bool:
        return self.obj is not _NO_OBJECT


def detect_format(path: str, head: bytes) -> str:
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".ndjson", ".jsonl")):
        return "ndjson"
    return "json" if head.lstrip()[:1] == b"[" else "ndjson"


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise MeterlineError(
            ErrorCode.INVALID_INPUT, f"cannot read {path}: {exc.strerror}"
        ) from None


def read_ndjson(stream: BinaryIO) -> Iterator[Item]:
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if line:
            yield Item(line, number)


_raw_array = msgspec.json.Decoder(list[msgspec.Raw])
_raw_value = msgspec.json.Decoder(msgspec.Raw)


def read_json(stream: BinaryIO, name: str) -> Iterator[Item]:
    """A JSON array (one item per element, cut out as raw bytes so each is
    validated, and rejected, on its own) or one JSON value (one item)."""
    data = stream.read().strip()
    elements: list[bytes] | None
    try:
        if data[:1] == b"[":
            elements = [bytes(raw) for raw in _raw_array.decode(data)]
        else:
            elements = [bytes(_raw_value.decode(data))]
    except RecursionError:  # an element nested too deep: cut without recursing
        elements = split_array(data) if data[:1] == b"[" else [data]
        if elements is None:
            raise MeterlineError(ErrorCode.INVALID_JSON, f"{name} is not valid JSON") from None
    except msgspec.DecodeError as exc:
        raise MeterlineError(
            ErrorCode.INVALID_JSON, f"{name}: {describe_decode_error(exc)}"
        ) from None
    for raw in elements:
        yield Item(raw, 0)


def _raw_row(obj: dict[str, Any]) -> bytes:
    """The bytes quarantined for a CSV row: its JSON, or a lossless escape of
    it when it holds text that is not valid Unicode."""
    try:
        return encode_json(obj)
    except (UnicodeEncodeError, ValueError, TypeError):
        return repr(obj).encode("utf-8", "backslashreplace")


def read_csv(stream: BinaryIO, name: str) -> Iterator[Item]:
    """Columns: the event fields, plus `properties` (a JSON object) and/or
    `properties.NAME` columns. Cells are strings; an empty cell is absent."""
    # surrogateescape: invalid UTF-8 reaches validation (INVALID_TEXT, per
    # row) instead of stopping the whole file.
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    try:
        if reader.fieldnames is None:
            return
    except csv.Error as exc:
        raise MeterlineError(ErrorCode.INVALID_INPUT, f"{name}: {exc}") from None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Item(b"", reader.line_num, error=(ErrorCode.INVALID_INPUT, f"CSV: {exc}"))
            continue
        obj: dict[str, Any] = {}
        props: dict[str, Any] = {}
        bad_props: str | None = None
        for column, cell in row.items():
            if column is None or cell is None or cell == "":
                continue
            if column == "properties":
                try:
                    props_value = decode_json(cell)
                except msgspec.DecodeError:
                    bad_props = cell
                    continue
                if isinstance(props_value, dict):
                    props.update(props_value)
                else:
                    obj["properties"] = props_value  # invalid; validation says so
            elif column.startswith("properties."):
                props[column[len("properties.") :]] = cell
            else:
                obj[column] = cell
        if bad_props is not None:
            obj["properties"] = bad_props  # a string: rejected as INVALID_FIELD
        elif props and "properties" not in obj:
            obj["properties"] = props
        yield Item(_raw_row(obj), reader.line_num, obj)


def read_file(path: str, fmt: str = "auto") -> Iterator[Item]:
    stream = _open(path)
    try:
        if fmt == "auto":
            head = stream.peek(64) if hasattr(stream, "peek") else b""
            fmt = detect_format(path, head)
        if fmt == "ndjson":
            yield from read_ndjson(stream)
        elif fmt == "json":
            yield from read_json(stream, path)
        elif fmt == "csv":
            yield from read_csv(stream, path)
        else:
            raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"unknown format {fmt!r}")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def file_size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size if path != "-" else None
    except OSError:
        return None
