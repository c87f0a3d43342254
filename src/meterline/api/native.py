"""Native request bodies -> ingest Items: one object, a JSON array, or NDJSON.

Array elements are cut out as raw bytes (msgspec.Raw) instead of being decoded
into Python objects: each then takes the same fast validation path as an
NDJSON line, and a rejected element is quarantined byte for byte as sent.
"""

from __future__ import annotations

import msgspec

from meterline.api.errors import ApiError
from meterline.domain.errors import ErrorCode
from meterline.domain.json_errors import describe_decode_error
from meterline.ingest.jsonsplit import split_array
from meterline.ingest.readers import Item

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
ACCEPTED_TYPES = JSON_TYPES + NDJSON_TYPES

_array = msgspec.json.Decoder(list[msgspec.Raw])
_value = msgspec.json.Decoder(msgspec.Raw)


def raw_elements(text: bytes) -> list[bytes]:
    """The elements of a JSON array, each as the exact bytes sent (msgspec.DecodeError if malformed).

    An element nested deeper than msgspec can follow is cut out without
    recursing, and then rejected on its own (NESTING_TOO_DEEP)."""
    try:
        return [bytes(raw) for raw in _array.decode(text)]
    except RecursionError:
        elements = split_array(text)
        if elements is None:
            raise msgspec.DecodeError("malformed JSON array") from None
        return elements


def check_json(text: bytes) -> None:
    """Raise msgspec.DecodeError unless `text` is one well-formed JSON value (a
    single value nested too deep passes: the validator rejects it)."""
    try:
        _value.decode(text)
    except RecursionError:
        return


def invalid_json(message: str) -> ApiError:
    return ApiError(400, str(ErrorCode.INVALID_JSON), message)


def split_ndjson(body: bytes) -> list[Item]:
    """One Item per non-blank line, numbered from 1 like the CLI reader."""
    items = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if line:
            items.append(Item(line, number))
    return items


def split_json(body: bytes) -> list[Item]:
    """A JSON object (one event) or array (a batch). A body that is not valid
    JSON cannot be cut into events, so it fails as a whole (400)."""
    text = body.strip()
    head = text[:1]
    try:
        if head == b"[":
            return [Item(raw, 0) for raw in raw_elements(text)]
        if head == b"{":
            check_json(text)  # syntax only: the validator re-reads it
            return [Item(text, 0)]
    except msgspec.DecodeError as exc:
        hint = ""
        if head == b"{" and b"\n" in text:
            hint = " (for one event per line use Content-Type: application/x-ndjson)"
        raise invalid_json(f"request body is {describe_decode_error(exc)}{hint}") from None
    raise invalid_json("request body must be a JSON object (one event) or array (a batch)")


def split_body(body: bytes, media_type: str) -> list[Item]:
    return split_ndjson(body) if media_type in NDJSON_TYPES else split_json(body)
