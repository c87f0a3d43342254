"""Invoices and corrections (admin): the document commands of DESIGN §12 over HTTP.

Each route calls the service function its CLI command calls and answers with
the same JSON (`--json`), so a script can move from the CLI to the API without
reshaping anything. Where the CLI signals through its exit status, the API
uses the HTTP status:

- `issue` refusing some customers because their period is not closed (CLI
  exit 2) answers 409 PERIOD_NOT_CLOSED; the documents it did issue are in
  `details.issued`, exactly as the CLI prints them. Issuing is idempotent, so
  the job can simply be retried once the period closes.
- `verify` finding a discrepancy (CLI exit 1) still answers 200: the check
  ran; `ok` is false and the failing checks say why.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import (
    Param,
    bad,
    blocking,
    bool_param,
    decode_cursor,
    encode_cursor,
    int_param,
    json_body,
    json_response,
    parameters,
    path_param,
    period,
    required_text,
    text_param,
)
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext
from meterline.api.errors import ApiError
from meterline.billing.document import Issued, Status
from meterline.domain.errors import ErrorCode
from meterline.domain.timestamps import from_datetime
from meterline.render.text import render_text
from meterline.services import invoicing
from meterline.services import progressive as progressive_billing
from meterline.services.corrections import rerate as rerate_periods
from meterline.services.explain import explain as explain_document
from meterline.services.verification import verify as verify_documents

MAX_PAGE = 10_000
DEFAULT_PAGE = 50
MAX_LINE = 1_000_000
MAX_OFFSET = 2**62

_PERIOD_SCHEMA = {
    "type": "string",
    "pattern": "^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    "(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?|-Q[1-4]|-W(0[1-9]|[1-4][0-9]|5[0-3]))?$",
    "description": "A billing period label, years 1970 to 9998: YYYY-MM (calendar month), "
    "YYYY-Qn, YYYY, YYYY-Www (ISO week) or YYYY-MM-DD (an anniversary period's start date).",
    "example": "2024-01",
}


class IssueRequest(msgspec.Struct, forbid_unknown_fields=True):
    period: str
    customer: str | None = None
    force: bool = False


class RerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer: str | None = None
    period: str | None = None
    reason: str | None = None


class ProgressiveRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer: str | None = None


class StatusRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


def _body(required: list[str], properties: dict[str, Any], *, optional: bool) -> dict[str, Any]:
    return {
        "required": not optional,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": required,
                    "properties": properties,
                    "additionalProperties": False,
                }
            }
        },
    }


_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_ISSUE_BODY = _body(
    ["period"],
    {
        "period": {**_PERIOD_SCHEMA, "description": "A period label in each customer's timezone."},
        "customer": {**_NAME, "description": "Only this customer (default: every customer)."},
        "force": {
            "type": "boolean",
            "default": False,
            "description": "Issue even if the period is not closed; the invoice is marked forced.",
        },
    },
    optional=False,
)
_PROGRESSIVE_BODY = _body(
    [],
    {"customer": {**_NAME, "description": "Only this customer (default: every customer)."}},
    optional=True,
)

_RERATE_BODY = _body(
    [],
    {
        "customer": _NAME,
        "period": _PERIOD_SCHEMA,
        "reason": {
            "type": "string",
            "minLength": 1,
            "description": "Mark one period (customer and period) for re-rating by hand.",
        },
    },
    optional=True,
)
_STATUS_BODY = _body([], {"reason": {"type": "string", "minLength": 1}}, optional=True)


def summary(d: Issued) -> dict[str, Any]:
    """One row of `invoice list --json`."""
    return {
        "number": d.number,
        "kind": str(d.kind),
        "status": str(d.status),
        "customer_id": d.body.customer_id,
        "period": d.body.period.to_dict(),
        "total": d.body.text(d.body.total),
        "currency": d.body.currency,
        "corrects": d.body.corrects,
        "issued_at": d.issued_at,
    }


def _customer(text: str | None) -> str | None:
    if text is not None and (not text or len(text) > 256):
        raise bad("customer must be 1 to 256 characters", parameter="customer")
    return text


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["billing"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    def now_us() -> int:
        return from_datetime(ctx.clock.now())

    def store() -> Any:
        return ctx.handle.ready_store()

    @api.get(
        "/v1/invoices/preview",
        operation_id="previewInvoice",
        summary="Draft invoice for a customer-period, as known now (admin)",
        description="Same as `meterline invoice preview --json`: no number, may change.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                Param("customer", "Customer id.", required=True),
                Param("period", "A period label in the customer's timezone.", _PERIOD_SCHEMA, True),
            ),
            **oa.SECURED,
        },
        responses={
            200: {"description": "The draft.", **oa.json_body(oa.ref("Document"))},
            **oa.errors(
                {
                    400: "A missing or invalid parameter.",
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                    422: (
                        "No subscription in the period, or no price in effect; or, for a run "
                        "over all customers, some could not be invoiced "
                        "(INVOICE_RUN_INCOMPLETE, `details.failed`; the others were issued)."
                    ),
                }
            ),
        },
    )
    async def preview(request: Request) -> Response:
        customer = required_text(request, "customer")
        label = period("period", required_text(request, "period"))
        return json_response(
            await blocking(ctx, lambda: invoicing.preview(store(), customer, label))
        )

    @api.post(
        "/v1/invoices/issue",
        operation_id="issueInvoices",
        summary="Issue invoices for a period (admin)",
        description=(
            "Same as `meterline invoice issue --json`: the documents issued by this call. "
            "A customer-period already invoiced is skipped (never a second invoice), so "
            "retrying is safe. Without `customer`, customers whose period is not closed are "
            "refused: the answer is then 409 with the issued documents in `details.issued`."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _ISSUE_BODY, **oa.SECURED},
        responses={
            200: {"description": "The issued documents.", **oa.json_body(oa.ref("DocumentList"))},
            **oa.errors(
                {
                    400: "An invalid body.",
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                    409: 'The period is not closed (PERIOD_NOT_CLOSED); send "force": true to issue anyway.',
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                    422: "No subscription in the period, or no price in effect.",
                }
            ),
        },
    )
    async def issue(request: Request) -> Response:
        body = await json_body(request, ctx, IssueRequest, optional=False)
        label = period("period", body.period)
        customer = _customer(body.customer)
        result = await blocking(
            ctx, lambda: invoicing.issue(store(), label, now_us(), customer, body.force)
        )
        issued = [d.to_dict() for d in result.issued]
        if result.failed:
            raise ApiError(
                422,
                str(ErrorCode.INVOICE_RUN_INCOMPLETE),
                f"{len(result.failed)} customer(s) could not be invoiced; "
                f"{len(issued)} issued, {len(result.already)} already issued, "
                f"{len(result.refused)} refused (period not closed)",
                {
                    "issued": issued,
                    "already": [{"customer_id": c, "number": n} for c, n in result.already],
                    "refused": [{"customer_id": c, "message": m} for c, m in result.refused],
                    "failed": [
                        {"customer_id": c, "code": code, "message": m}
                        for c, code, m in result.failed
                    ],
                },
            )
        if result.refused:
            raise ApiError(
                409,
                str(ErrorCode.PERIOD_NOT_CLOSED),
                f"{len(result.refused)} customer(s) refused: the period is not closed; "
                f"{len(issued)} issued, {len(result.already)} already issued; send "
                '"force": true in the request body to issue anyway',
                {
                    "issued": issued,
                    "already": [{"customer_id": c, "number": n} for c, n in result.already],
                    "refused": [{"customer_id": c, "message": m} for c, m in result.refused],
                },
            )
        return json_response(issued)

    @api.get(
        "/v1/invoices",
        operation_id="listInvoices",
        summary="Issued documents (invoices, credit and debit notes), oldest first (admin)",
        description="Same as `meterline invoice list --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={**parameters(Param("customer", "Only this customer.")), **oa.SECURED},
        responses={
            200: {
                "description": "Document summaries.",
                **oa.json_body({"type": "array", "items": oa.ref("DocumentSummary")}),
            },
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def list_documents(request: Request) -> Response:
        customer = text_param(request, "customer")
        docs = await blocking(ctx, lambda: invoicing.list_all(store(), customer))
        return json_response([summary(d) for d in docs])

    _NUMBER: dict[str, Any] = path_param("number", "Document number, e.g. INV-000001.")
    _number_errors = {
        400: "An invalid parameter.",
        404: "No such document (DOCUMENT_NOT_FOUND).",
    }

    @api.get(
        "/v1/invoices/{number}",
        operation_id="getInvoice",
        summary="One issued document (admin)",
        description="Same as `meterline invoice show NUMBER --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={**parameters(_NUMBER), **oa.SECURED},
        responses={
            200: {"description": "The document.", **oa.json_body(oa.ref("Document"))},
            **oa.errors(_number_errors),
        },
    )
    async def show(request: Request) -> Response:
        number = request.path_params["number"]
        doc = await blocking(ctx, lambda: invoicing.show(store(), number).to_dict())
        return json_response(doc)

    @api.get(
        "/v1/invoices/{number}/render",
        operation_id="renderInvoice",
        summary="Render an issued document as JSON, text or PDF (admin)",
        description="Same bytes as `meterline invoice render NUMBER --format F`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                _NUMBER,
                Param(
                    "format",
                    "json (canonical, indented), text or pdf.",
                    {"type": "string", "enum": ["json", "text", "pdf"], "default": "json"},
                ),
            ),
            **oa.SECURED,
        },
        responses={
            200: oa.bodies(
                "The rendering.",
                {
                    "application/json": oa.ref("Document"),
                    "text/plain": {"type": "string"},
                    "application/pdf": {"type": "string", "format": "binary"},
                },
            ),
            **oa.errors(_number_errors),
        },
    )
    async def render(request: Request) -> Response:
        number = request.path_params["number"]
        fmt = text_param(request, "format") or "json"
        if fmt not in ("json", "text", "pdf"):
            raise bad("format must be json, text or pdf", parameter="format")

        def work() -> tuple[bytes, str]:
            doc = invoicing.show(store(), number).to_dict()
            if fmt == "json":
                data = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
                return data, "application/json"
            if fmt == "text":
                return render_text(doc).encode(), "text/plain; charset=utf-8"
            from meterline.render.pdf import render_pdf

            return render_pdf(doc), "application/pdf"

        data, kind = await blocking(ctx, work)
        headers = {}
        if fmt == "pdf":
            headers["Content-Disposition"] = f'inline; filename="{_filename(number)}.pdf"'
        return Response(data, media_type=kind, headers=headers)

    def _status_route(status: Status, default_reason: str, verb: str) -> None:
        @api.post(
            f"/v1/invoices/{{number}}/{verb}",
            operation_id=f"{verb}Invoice",
            summary=f"Mark an issued document {status} (admin)",
            description=(
                f"Same as `meterline invoice {verb} NUMBER`; answers the document with its "
                "new status. Only an issued document can change status."
            ),
            dependencies=admin,
            response_class=Response,
            openapi_extra={"requestBody": _STATUS_BODY, **parameters(_NUMBER), **oa.SECURED},
            responses={
                200: {"description": "The document.", **oa.json_body(oa.ref("Document"))},
                **oa.errors(
                    {
                        **_number_errors,
                        400: "An invalid body.",
                        409: "The document is not issued (INVALID_STATUS_CHANGE).",
                        413: "The body exceeds the configured limit.",
                        415: "Unsupported Content-Type.",
                    }
                ),
            },
        )
        async def change(request: Request) -> Response:
            number = request.path_params["number"]
            body = await json_body(request, ctx, StatusRequest, optional=True)
            reason = body.reason if body.reason and body.reason.strip() else default_reason

            def work() -> dict[str, Any]:
                invoicing.set_status(store(), number, status, reason, now_us())
                return invoicing.show(store(), number).to_dict()

            return json_response(await blocking(ctx, work))

    _status_route(Status.PAID, "payment received", "pay")
    _status_route(Status.VOID, "voided", "void")

    @api.get(
        "/v1/invoices/{number}/explain",
        operation_id="explainInvoice",
        summary="Why a document's lines cost what they do, down to source events (admin)",
        description=(
            "Same as `meterline explain NUMBER --json`. With `line` and `events=true`, the "
            "line's source events as known at the cutoff, one page at a time: follow "
            "`page.next_cursor` (or pass `offset`)."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                _NUMBER,
                Param("line", "Only this line.", {"type": "integer", "minimum": 1}),
                Param(
                    "events",
                    "List the line's source events (needs line).",
                    {"type": "boolean", "default": False},
                ),
                Param(
                    "page_size",
                    "Events per page.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                ),
                Param("cursor", "From `page.next_cursor` of the previous page."),
                Param(
                    "offset",
                    "Start at this event (instead of a cursor).",
                    {"type": "integer", "minimum": 0, "default": 0},
                ),
            ),
            **oa.SECURED,
        },
        responses={
            200: {"description": "The explanation.", **oa.json_body(oa.ref("Explanation"))},
            **oa.errors(_number_errors),
        },
    )
    async def explain(request: Request) -> Response:
        number = request.path_params["number"]
        line = int_param(request, "line", None, 1, MAX_LINE)
        events = bool_param(request, "events")
        limit = int_param(request, "page_size", DEFAULT_PAGE, 1, MAX_PAGE)
        assert limit is not None
        cursor = text_param(request, "cursor")
        offset = int_param(request, "offset", None, 0, MAX_OFFSET)
        if cursor is not None and offset is not None:
            raise bad("give cursor or offset, not both")
        start = decode_cursor(cursor) if cursor is not None else (offset or 0)
        if start > MAX_OFFSET:
            raise bad("cursor is not one this server returned", parameter="cursor")
        out = await blocking(
            ctx, lambda: explain_document(store(), number, line, events, limit, start)
        )
        if "page" in out:
            page = out["page"]
            following = page["offset"] + page["limit"]
            page["next_cursor"] = encode_cursor(following) if following < page["total"] else None
        return json_response(out)

    @api.post(
        "/v1/invoices/progressive",
        operation_id="issueInterimInvoices",
        summary="Issue the interim invoices due now (progressive billing, admin)",
        description=(
            "Same as `meterline invoice progressive --json`: the interim invoices issued by "
            "this call, one per open period whose unbilled usage reached its subscription's "
            "threshold (an empty list when none is due; retrying is safe)."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _PROGRESSIVE_BODY, **oa.SECURED},
        responses={
            200: {"description": "The interim invoices.", **oa.json_body(oa.ref("DocumentList"))},
            **oa.errors(
                {
                    400: "An invalid body.",
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                    422: "No price in effect, or some customers could not be billed "
                    "(INVOICE_RUN_INCOMPLETE, `details.failed`; the others were issued).",
                }
            ),
        },
    )
    async def progressive(request: Request) -> Response:
        body = await json_body(request, ctx, ProgressiveRequest, optional=True)
        customer = _customer(body.customer)
        result = await blocking(
            ctx, lambda: progressive_billing.issue_interims(store(), now_us(), customer)
        )
        issued = [d.to_dict() for d in result.issued]
        if result.failed:
            raise ApiError(
                422,
                str(ErrorCode.INVOICE_RUN_INCOMPLETE),
                f"{len(result.failed)} customer(s) could not be billed; {len(issued)} issued",
                {
                    "issued": issued,
                    "failed": [
                        {"customer_id": c, "code": code, "message": m}
                        for c, code, m in result.failed
                    ],
                },
            )
        return json_response(issued)

    @api.post(
        "/v1/rerate",
        operation_id="rerate",
        summary="Re-rate issued periods; issue credit/debit notes for differences (admin)",
        description=(
            "Same as `meterline rerate --json`: the correction documents issued (an empty "
            "list when nothing changed; re-rating is idempotent). Without a body, every "
            "invoice with something recorded since it was billed is re-rated."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _RERATE_BODY, **oa.SECURED},
        responses={
            200: {
                "description": "The corrections issued.",
                **oa.json_body(oa.ref("DocumentList")),
            },
            **oa.errors(
                {
                    400: "An invalid body (reason needs customer and period).",
                    404: "No issued invoice for the named customer-period.",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                    422: "No subscription or no price in effect when recomputing.",
                }
            ),
        },
    )
    async def rerate(request: Request) -> Response:
        body = await json_body(request, ctx, RerateRequest, optional=True)
        customer = _customer(body.customer)
        label = None if body.period is None else period("period", body.period)
        reason = body.reason if body.reason and body.reason.strip() else None
        if body.reason is not None and reason is None:
            raise bad("reason must not be empty", parameter="reason")
        if reason and not (customer and label):
            raise bad("reason marks one period: give customer and period too")
        result = await blocking(
            ctx, lambda: rerate_periods(store(), now_us(), customer, label, reason)
        )
        return json_response([d.to_dict() for d in result.issued])

    @api.get(
        "/v1/verify",
        operation_id="verifyDocuments",
        summary="Recompute issued documents at their cutoff and check the chain (admin)",
        description=(
            "Same as `meterline verify --json`. Always 200 when the check ran: `ok` is "
            "false (the CLI's exit 1) when a document does not reproduce."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(Param("number", "One document (default: all).")),
            **oa.SECURED,
        },
        responses={
            200: {"description": "The checks.", **oa.json_body(oa.ref("CheckReport"))},
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def verify(request: Request) -> Response:
        number = text_param(request, "number")
        report = await blocking(ctx, lambda: verify_documents(store(), number))
        return json_response(report.to_dict())

    return api


def _filename(number: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in number)[:64] or "document"
