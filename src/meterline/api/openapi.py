"""The OpenAPI document, written out by hand where FastAPI cannot infer it.

Ingest routes read their raw bodies, so FastAPI knows nothing about what they
accept or answer; the request bodies, parameters and every response are
declared here and attached to the routes (`openapi_extra`, `responses`), and
the shared schemas are added to `components` when the document is built.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from meterline import __version__
from meterline.domain.events import MAX_ID_LENGTH

Schema = dict[str, Any]

_ID: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": "^[^\\u0000]+$",  # PostgreSQL text holds no NUL (issue 11: INVALID_TEXT)
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Schema] = {
    "Event": {
        "type": "object",
        "description": (
            "A usage event in meterline's native format (DESIGN §3). Any other top-level "
            "field is rejected (UNKNOWN_FIELD); texts hold no NUL (INVALID_TEXT)."
        ),
        "required": ["event_id", "customer_id", "event_type", "event_time"],
        "additionalProperties": False,
        "properties": {
            "event_id": _ID,
            "customer_id": _ID,
            "event_type": _ID,
            "event_time": {
                "type": "string",
                "format": "date-time",
                "description": "RFC 3339 with an explicit offset; normalised to UTC.",
            },
            "source": {
                **_ID,
                "description": "Defaults to the `source` query parameter, else `default`.",
            },
            "properties": {
                "type": "object",
                "additionalProperties": True,
                "description": "Numbers are read as exact decimals.",
            },
        },
        "example": {
            "event_id": "evt_001",
            "customer_id": "acme",
            "event_type": "api_call",
            "event_time": "2024-01-15T14:23:45.123Z",
            "properties": {"tokens": 1200, "region": "eu"},
            "source": "gateway",
        },
    },
    "Reject": {
        "type": "object",
        "required": ["index", "code", "message"],
        "properties": {
            "index": {"type": "integer", "minimum": 0, "description": "0-based position."},
            "code": {"type": "string", "description": "Stable error code, e.g. EVENT_TOO_OLD."},
            "message": {"type": "string"},
            "line": {"type": "integer", "minimum": 1, "description": "NDJSON line number."},
        },
    },
    "IngestSummary": {
        "type": "object",
        "required": ["accepted", "duplicates", "rejected", "rejects"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "rejects": {"type": "array", "items": ref("Reject")},
        },
    },
    "ErrorBody": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "details": {"type": "object", "additionalProperties": True},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": ref("ErrorBody")},
    },
    "Problem": {
        "type": "object",
        "description": "RFC 7807 problem details, plus the meterline error envelope.",
        "required": ["type", "title", "status", "detail", "error"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": ref("Reject"),
                "description": "The rejected events of the request, by index.",
            },
            "error": ref("ErrorBody"),
        },
    },
    "CloudEvent": {
        "type": "object",
        "description": (
            "A CloudEvents 1.0 event in structured JSON mode, as OpenMeter takes it. "
            "Unlike OpenMeter, `time` is required."
        ),
        "required": ["specversion", "id", "source", "type", "subject", "time"],
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {**_ID, "description": "-> event_id"},
            "source": {**_ID, "description": "-> source"},
            "type": {**_ID, "description": "-> event_type"},
            "subject": {**_ID, "description": "-> customer_id"},
            "time": {"type": "string", "format": "date-time", "description": "-> event_time"},
            "datacontenttype": {"type": ["string", "null"], "enum": ["application/json", None]},
            "dataschema": {"type": ["string", "null"]},
            "data": {
                "type": ["object", "null"],
                "additionalProperties": True,
                "description": "-> properties",
            },
        },
        "example": {
            "specversion": "1.0",
            "id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c",
            "source": "gateway",
            "type": "api_call",
            "subject": "acme",
            "time": "2024-01-15T14:23:45.123Z",
            "data": {"tokens": 1200},
        },
    },
    "QuarantineEntry": {
        "type": "object",
        "required": [
            "id",
            "batch_id",
            "position",
            "source",
            "code",
            "message",
            "raw",
            "raw_base64",
            "received_at",
        ],
        "properties": {
            "id": {"type": "integer"},
            "batch_id": {"type": "integer"},
            "position": {"type": "integer"},
            "source": {"type": ["string", "null"]},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "raw": {
                "type": ["string", "null"],
                "description": "The payload as text, or null when it is not UTF-8.",
            },
            "raw_base64": {"type": "string", "description": "The exact payload bytes."},
            "received_at": {"type": "string", "format": "date-time"},
        },
    },
    "QuarantinePage": {
        "type": "object",
        "required": ["items", "next_after"],
        "properties": {
            "items": {"type": "array", "items": ref("QuarantineEntry")},
            "next_after": {
                "type": ["integer", "null"],
                "description": "Pass as `after` for the next page; null at the end.",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "schema"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]},
            "schema": {"type": "string"},
        },
    },
}

SECURITY_SCHEMES: dict[str, Schema] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from METERLINE_API_KEYS, scope ingest or admin.",
    }
}
SECURED: Schema = {"security": [{"apiKey": []}]}


def json_body(schema: Schema, media_type: str = "application/json") -> Schema:
    return {"content": {media_type: {"schema": schema}}}


def error(description: str) -> Schema:
    return {"description": description, **json_body(ref("Error"))}


def problem(description: str) -> Schema:
    return {"description": description, **json_body(ref("Problem"), "application/problem+json")}


def bodies(description: str, schemas: dict[str, Schema]) -> Schema:
    """A response with one schema per media type."""
    return {
        "description": description,
        "content": {kind: {"schema": schema} for kind, schema in schemas.items()},
    }


_AUTH_ERRORS = {
    401: "Missing or invalid API key.",
    403: "The API key lacks the needed scope.",
}
_SERVER_ERRORS = {
    500: "Unexpected server error (no internals are disclosed).",
    503: "The store is unavailable or not initialised.",
}


def errors(
    extra: dict[int, str], *, problems: bool = False, auth: bool = True
) -> dict[int | str, Schema]:
    """The error responses of an operation, in the envelope or as problem details."""
    described = {**extra, **(_AUTH_ERRORS if auth else {}), **_SERVER_ERRORS}
    render = problem if problems else error
    return {status: render(text) for status, text in sorted(described.items())}


def install(app: FastAPI, *extra: dict[str, Schema]) -> None:
    """Build the document once, with the shared schemas (plus `extra` ones) and
    the security scheme."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=__version__,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(SCHEMAS)
            for more in extra:
                schemas.update(more)
            components["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
