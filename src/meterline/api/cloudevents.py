"""CloudEvents 1.0 (structured JSON) -> meterline events, as OpenMeter maps them.

    id -> event_id    source -> source    subject -> customer_id
    type -> event_type    time -> event_time    data -> properties

Differences from OpenMeter, on purpose: `time` is required (OpenMeter fills in
the ingestion time; meterline bills by event time and will not guess it), and
`data` must be a JSON object or absent (the same as OpenMeter's API schema).
Other attributes and extensions are accepted and not stored.

Attribute errors are reported with CloudEvents names (`subject`, not
`customer_id`); the rest of validation (timestamp format, age bounds, numbers)
is the native validator's, so both endpoints accept exactly the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from meterline.api.native import check_json, invalid_json, raw_elements
from meterline.domain.errors import ErrorCode
from meterline.domain.events import MAX_ID_LENGTH, decode_json
from meterline.domain.json_errors import describe_decode_error, describe_validation_error

SPECVERSION = "1.0"
# attribute -> native field, in the order they are checked
_REQUIRED = (
    ("specversion", None),
    ("id", "event_id"),
    ("source", "source"),
    ("type", "event_type"),
    ("subject", "customer_id"),
)


@dataclass(frozen=True, slots=True)
class CloudEventError:
    code: ErrorCode
    message: str
    source: str | None


def _is_json_media_type(value: str) -> bool:
    main = value.split(";", 1)[0].strip().lower()
    return main == "application/json" or (
        main.startswith("application/") and main.endswith("+json")
    )


def _string_attribute(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise _Bad(ErrorCode.MISSING_FIELD, f"missing required CloudEvents attribute {name!r}")
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise _Bad(
            ErrorCode.INVALID_FIELD,
            f"CloudEvents attribute {name!r} must be a string of 1 to {MAX_ID_LENGTH} characters",
        )
    return value


class _Bad(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message


def _map(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Bad(ErrorCode.INVALID_JSON, "a CloudEvent must be a JSON object")
    native: dict[str, Any] = {}
    for attribute, field in _REQUIRED:
        value = _string_attribute(obj, attribute)
        if field is not None:
            native[field] = value
    if obj["specversion"] != SPECVERSION:
        raise _Bad(
            ErrorCode.INVALID_FIELD,
            f"unsupported specversion {obj['specversion']!r}; only {SPECVERSION!r} is accepted",
        )
    time = obj.get("time")
    if time is None:
        raise _Bad(
            ErrorCode.MISSING_FIELD,
            "missing CloudEvents attribute 'time': meterline bills by event time, so it is required",
        )
    native["event_time"] = time  # type and format are checked by the native validator
    content_type = obj.get("datacontenttype")
    if content_type is not None and (
        not isinstance(content_type, str) or not _is_json_media_type(content_type)
    ):
        raise _Bad(
            ErrorCode.INVALID_FIELD,
            f"datacontenttype {content_type!r} is not supported; data must be JSON",
        )
    if "data_base64" in obj:
        raise _Bad(ErrorCode.INVALID_FIELD, "binary data (data_base64) is not supported")
    data = obj.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise _Bad(ErrorCode.INVALID_FIELD, "CloudEvents 'data' must be a JSON object")
        native["properties"] = data
    return native


def to_native(raw: bytes) -> dict[str, Any] | CloudEventError:
    """Map one CloudEvent (its raw JSON) to a native event object, or say why not."""
    try:
        obj = decode_json(raw)
    except msgspec.ValidationError as exc:  # a number beyond the accepted range
        return CloudEventError(
            ErrorCode.INVALID_FIELD, f"data: {describe_validation_error(exc)}", None
        )
    except msgspec.DecodeError as exc:
        return CloudEventError(ErrorCode.INVALID_JSON, describe_decode_error(exc), None)
    try:
        return _map(obj)
    except _Bad as bad:
        source = obj.get("source") if isinstance(obj, dict) else None
        storable = isinstance(source, str) and "\x00" not in source  # PostgreSQL text has no NUL
        return CloudEventError(bad.code, bad.message, source if storable else None)


def split_cloudevents(body: bytes, batch: bool | None) -> list[bytes]:
    """Raw CloudEvents in the body: one (`batch=False`), an array (`True`), or
    whichever the body is (`None`, plain application/json as OpenMeter takes it)."""
    text = body.strip()
    is_array = text[:1] == b"["
    if batch is not None and is_array != batch:
        raise invalid_json(
            "application/cloudevents-batch+json takes a JSON array of events"
            if batch
            else "application/cloudevents+json takes one event; "
            "send a batch as application/cloudevents-batch+json"
        )
    try:
        if is_array:
            return raw_elements(text)
        check_json(text)
    except msgspec.DecodeError as exc:
        raise invalid_json(f"request body is {describe_decode_error(exc)}") from None
    return [text]
