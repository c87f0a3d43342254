"""OpenAPI schemas of the billing endpoints: the CLI `--json` shapes (DESIGN §12).

Objects list the members that are always present as required and allow
additional ones, because §12 lets shapes grow but never change. Money and
quantities are decimal strings; null where a line has no quantity or meter.
"""

from __future__ import annotations

from meterline.api.openapi import Schema, ref

STR: Schema = {"type": "string"}
NSTR: Schema = {"type": ["string", "null"]}
_INSTANT: Schema = {"type": "string", "format": "date-time"}
_MONEY: Schema = {"type": "string", "description": "Decimal string, the currency's minor digits."}
_DIMS: Schema = {
    "type": "object",
    "additionalProperties": True,
    "description": "group_by property -> value (null when the event lacked it).",
}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": True,
    }


# A spend limit: a decimal string (prorated for partial periods) or {amount, prorate}.
_SPEND: Schema = {
    "oneOf": [
        {"type": ["string", "null"]},
        {
            "type": "object",
            "required": ["amount", "prorate"],
            "properties": {"amount": STR, "prorate": {"type": "boolean"}},
        },
    ]
}

_PERIOD = obj({"start": _INSTANT, "end": _INSTANT}, {"label": STR})

BILLING_SCHEMAS: dict[str, Schema] = {
    "Catalog": {
        "type": "object",
        "description": (
            "A catalog as in `meterline catalog apply` (DESIGN §12): meters, price books "
            "and customers. Unquoted JSON numbers are read as exact decimals."
        ),
        "properties": {
            "meters": {"type": "array", "items": {"type": "object"}},
            "price_books": {"type": "array", "items": {"type": "object"}},
            "customers": {"type": "array", "items": {"type": "object"}},
            "seller": {
                "type": "object",
                "description": "Who issues the documents: name, address (lines), tax_id, email.",
            },
        },
        "additionalProperties": False,
        "example": {
            "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            "price_books": [
                {
                    "code": "standard",
                    "currency": "USD",
                    "versions": [
                        {
                            "version": "v1",
                            "effective_from": "2024-01-01T00:00:00Z",
                            "charges": [
                                {
                                    "code": "api",
                                    "meter": "api_calls",
                                    "model": "per_unit",
                                    "unit_price": "0.02",
                                }
                            ],
                        }
                    ],
                }
            ],
            "customers": [
                {
                    "id": "acme",
                    "name": "Acme Corp",
                    "currency": "USD",
                    "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
                }
            ],
        },
    },
    "ApplyReport": obj(
        {
            "added": {"type": "array", "items": STR},
            "unchanged": {"type": "array", "items": STR},
            "windows_built": {"type": "integer", "minimum": 0},
        }
    ),
    "Meter": obj(
        {
            "code": STR,
            "event_type": STR,
            "aggregation": {
                "type": "string",
                "enum": ["count", "sum", "min", "max", "unique_count", "latest"],
            },
            "property": NSTR,
            "group_by": {"type": "array", "items": STR},
            "window": STR,
            "allowed_lateness": STR,
        }
    ),
    "PriceVersion": obj(
        {
            "version": STR,
            "effective_from": _INSTANT,
            "charges": {"type": "array", "items": {"type": "object"}},
            "recorded_seq": {"type": "integer", "description": "When the store learnt it."},
        },
        {
            "supersedes": NSTR,
            "reason": NSTR,
            "retroactive": {"type": "boolean"},
            "minimum_spend": _SPEND,
            "maximum_spend": _SPEND,
        },
    ),
    "PriceBook": obj(
        {
            "code": STR,
            "currency": STR,
            "rounding": {"type": "string", "enum": ["half_up", "half_even"]},
            "versions": {"type": "array", "items": ref("PriceVersion")},
        }
    ),
    "Customer": obj(
        {
            "id": STR,
            "name": STR,
            "currency": STR,
            "timezone": STR,
            "tax_rate": STR,
            "subscriptions": {
                "type": "array",
                "items": obj(
                    {
                        "price_book": STR,
                        "start": _INSTANT,
                        "end": {"type": ["string", "null"], "format": "date-time"},
                    },
                    {
                        "billing_cycle": {
                            "type": "string",
                            "enum": ["month", "quarter", "year", "week"],
                        },
                        "anchor": {"type": "string", "enum": ["calendar", "subscription"]},
                    },
                ),
            },
            "credits": {"type": "array", "items": {"type": "object"}},
        },
        {"coupons": {"type": "array", "items": {"type": "object"}}},
    ),
    "CatalogView": obj(
        {
            "meters": {"type": "array", "items": ref("Meter")},
            "price_books": {"type": "array", "items": ref("PriceBook")},
            "customers": {"type": "array", "items": ref("Customer")},
        }
    ),
    "Usage": obj(
        {
            "customer_id": STR,
            "meter": STR,
            "aggregation": STR,
            "from": _INSTANT,
            "to": _INSTANT,
            "total": NSTR,
            "watermark": {"type": ["string", "null"], "format": "date-time"},
            "windows": {
                "type": "array",
                "items": obj(
                    {
                        "start": _INSTANT,
                        "end": _INSTANT,
                        "value": NSTR,
                        "final": {"type": "boolean"},
                        "version": {"type": "integer"},
                        "dimensions": _DIMS,
                    }
                ),
            },
            "groups": {
                "type": "array",
                "items": obj({"dimensions": _DIMS, "total": NSTR}),
            },
        }
    ),
    "Line": obj(
        {
            "line": {"type": "integer", "minimum": 1},
            "charge": STR,
            "description": STR,
            "price_book": STR,
            "model": STR,
            "meter": NSTR,
            "dimensions": _DIMS,
            "quantity": {**NSTR, "description": "Decimal string; null for fees and true-ups."},
            "amount": _MONEY,
            "formula": STR,
            "explanation": {"type": "object"},
        },
        {"unit_price": NSTR, "usage": {"type": ["object", "null"]}},
    ),
    "Document": obj(
        {
            "number": {**NSTR, "description": "null for a draft (preview)."},
            "kind": {"type": "string", "enum": ["invoice", "credit_note", "debit_note"]},
            "status": {"type": "string", "enum": ["draft", "issued", "paid", "void"]},
            "customer_id": STR,
            "currency": STR,
            "period": _PERIOD,
            "lines": {"type": "array", "items": ref("Line")},
            "subtotal": _MONEY,
            "tax": _MONEY,
            "credits_applied": _MONEY,
            "total": _MONEY,
            "corrects": {**NSTR, "description": "The corrected invoice, for notes."},
            "cutoff_seq": {"type": "integer"},
            "content_hash": STR,
        },
        {
            "forced": {"type": "boolean"},
            "issued_at": _INSTANT,
            "previous_hash": STR,
            "document_hash": STR,
            "format": {
                "type": "integer",
                "description": "Document format; absent = 1 (lines carry an events digest).",
            },
            "finance": {
                "type": "object",
                "description": (
                    "Not hashed: seller, bill_to (name, customer_id, address), issue_date, "
                    "due_date (issue date + payment terms, customer's timezone), "
                    "payment_terms, tax_percent, period_local, tax_note (corrections)."
                ),
            },
        },
    ),
    "DocumentList": {"type": "array", "items": ref("Document")},
    "DocumentSummary": obj(
        {
            "number": STR,
            "kind": {"type": "string", "enum": ["invoice", "credit_note", "debit_note"]},
            "status": {"type": "string", "enum": ["issued", "paid", "void"]},
            "customer_id": STR,
            "period": _PERIOD,
            "total": _MONEY,
            "currency": STR,
            "corrects": NSTR,
            "issued_at": _INSTANT,
        }
    ),
    "Explanation": obj(
        {
            "number": STR,
            "kind": STR,
            "customer_id": STR,
            "currency": STR,
            "period": _PERIOD,
            "cutoff_seq": {"type": "integer"},
            "corrects": NSTR,
        },
        {
            "lines": {"type": "array", "items": ref("Line")},
            "line": ref("Line"),
            "events": {
                "type": "array",
                "items": obj(
                    {
                        "source": STR,
                        "event_id": STR,
                        "event_time": _INSTANT,
                        "value": NSTR,
                        "properties": {"type": "object"},
                        "dimensions": _DIMS,
                    }
                ),
            },
            "page": obj(
                {
                    "offset": {"type": "integer", "minimum": 0},
                    "limit": {"type": "integer", "minimum": 1},
                    "total": {"type": "integer", "minimum": 0},
                },
                {
                    "next_cursor": {
                        **NSTR,
                        "description": "Pass as `cursor` for the next page; null at the end.",
                    }
                },
            ),
            "count_matches": {"type": "boolean"},
            "digest": STR,
            "digest_matches": {"type": "boolean"},
        },
    ),
    "CheckReport": obj(
        {
            "ok": {"type": "boolean"},
            "checks": {
                "type": "array",
                "items": obj({"name": STR, "ok": {"type": "boolean"}, "details": {}}),
            },
            "warnings": {"type": "array"},
        }
    ),
    "Retraction": obj(
        {
            "source": STR,
            "event_id": STR,
            "seq": {"type": "integer"},
            "event_seq": {"type": "integer"},
            "reason": STR,
            "retracted_at": _INSTANT,
            "already_retracted": {"type": "boolean"},
        }
    ),
}
