"""Inclusion proofs over HTTP (admin): `GET /v1/invoices/{number}/proofs`.

Answers exactly `meterline prove NUMBER --event ID [--source S] --json`. A proof
whose path does not reach the document's root is still a 200 with `verified`
false (the CLI's exit 1): the request was fine, the log was not.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import (
    Param,
    blocking,
    json_response,
    parameters,
    path_param,
    required_text,
    text_param,
)
from meterline.api.auth import Scope, require
from meterline.api.billing_schemas import STR, obj
from meterline.api.context import AppContext
from meterline.services.proofs import prove

_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_INT = {"type": "integer", "minimum": 0}

PROOF_SCHEMAS: dict[str, oa.Schema] = {
    "InclusionProof": obj(
        {
            "document": STR,
            "event": obj(
                {
                    "source": STR,
                    "event_id": STR,
                    "customer_id": STR,
                    "event_type": STR,
                    "event_time": {"type": "string", "format": "date-time"},
                    "event_time_us": {"type": "integer"},
                    "properties": {**STR, "description": "Canonical JSON text, hashed as is."},
                }
            ),
            "seq": _INT,
            "retracted_at_cutoff": {"type": "boolean"},
            "leaf_index": _INT,
            "content_hash": _HEX,
            "leaf_hash": _HEX,
            "audit_path": {"type": "array", "items": _HEX},
            "tree_size": _INT,
            "root": _HEX,
            "verified": {"type": "boolean"},
        }
    )
}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["billing"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    @api.get(
        "/v1/invoices/{number}/proofs",
        operation_id="proveEvent",
        summary="Inclusion proof of an event in the log a document commits to (admin)",
        description=(
            "Same as `meterline prove NUMBER --event ID [--source S] --json`: the RFC 6962 "
            "audit path of the event's leaf up to the tree head recorded in the document. "
            "See docs/PROOFS.md for the algorithm and a verifier."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                path_param("number", "Document number, e.g. INV-000001."),
                Param("event_id", "The event to prove.", {"type": "string"}, required=True),
                Param("source", "The event's source (needed if its id is in several)."),
            ),
            **oa.SECURED,
        },
        responses={
            200: {"description": "The proof.", **oa.json_body(oa.ref("InclusionProof"))},
            **oa.errors(
                {
                    400: "A missing or invalid parameter; an event id in several sources.",
                    404: "No such document (DOCUMENT_NOT_FOUND) or event (EVENT_NOT_FOUND).",
                    409: "The event was recorded after the document's cutoff "
                    "(EVENT_AFTER_CUTOFF), or the document has no tree head (NO_TREE_HEAD).",
                }
            ),
        },
    )
    async def proofs(request: Request) -> Response:
        number = request.path_params["number"]
        event_id = required_text(request, "event_id")
        source = text_param(request, "source")
        out: dict[str, Any] = await blocking(
            ctx, lambda: prove(ctx.handle.ready_store(), number, event_id, source)
        )
        return json_response(out)

    return api
