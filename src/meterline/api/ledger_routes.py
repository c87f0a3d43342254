"""Reconciliation and the ledger (admin), read-only.

`GET /v1/reconcile` runs every check of DESIGN §9 on one snapshot of the
store and answers `meterline reconcile --json`; like `verify`, it is 200 when
the checks ran, with `ok` false (the CLI's exit 1) on a discrepancy. The
ledger endpoints are projections of the append-only journal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import (
    Param,
    blocking,
    bool_param,
    int_param,
    json_response,
    parameters,
    text_param,
)
from meterline.api.auth import Scope, require
from meterline.api.billing_schemas import NSTR, STR, obj
from meterline.api.context import AppContext
from meterline.domain.timestamps import from_datetime
from meterline.services import ledger, webhooks
from meterline.services.reconcile import reconcile

MAX_JOURNAL = 100_000

_LINE = obj({"account": STR, "debit": STR, "credit": STR})

LEDGER_SCHEMAS: dict[str, oa.Schema] = {
    "ReconcileReport": obj(
        {
            "ok": {"type": "boolean"},
            "checks": {
                "type": "array",
                "items": obj(
                    {"name": STR, "ok": {"type": "boolean"}, "details": STR},
                    {"count": {"type": "integer"}},
                ),
            },
            "warnings": {
                "type": "array",
                "items": obj({"name": STR, "details": STR}, {"count": {"type": "integer"}}),
            },
        },
        {
            "cutoff_seq": {"type": "integer"},
            "mode": {"type": "string", "enum": ["full", "incremental"]},
            "checkpoint": {
                "type": "object",
                "description": "The seq range checked (from_seq exclusive), the previous "
                "checkpoint's hash and, after a clean run, the one recorded.",
            },
        },
    ),
    "Balance": obj(
        {
            "account": STR,
            "type": STR,
            "customer_id": NSTR,
            "currency": STR,
            "debit": STR,
            "credit": STR,
            "balance": {**STR, "description": "Signed in the account's normal direction."},
        }
    ),
    "JournalEntry": obj(
        {
            "seq": {"type": "integer"},
            "kind": STR,
            "document": NSTR,
            "customer_id": NSTR,
            "currency": STR,
            "memo": NSTR,
            "posted_at": {"type": "string", "format": "date-time"},
            "balanced": {"type": "boolean"},
            "lines": {"type": "array", "items": _LINE},
        }
    ),
}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["ledger"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    @api.get(
        "/v1/reconcile",
        operation_id="reconcile",
        summary="Run the reconciliation checks (admin)",
        description=(
            "Same as `meterline reconcile --json`: ingestion counts, window aggregates, "
            "documents, arithmetic, ledger, hash chain; unbilled usage as warnings. "
            "200 when the checks ran; `ok` is false on any discrepancy."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                Param(
                    "full",
                    "Check everything, not only what changed since the last clean run.",
                    {"type": "boolean", "default": False},
                )
            ),
            **oa.SECURED,
        },
        responses={
            200: {"description": "The report.", **oa.json_body(oa.ref("ReconcileReport"))},
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def run_reconcile(request: Request) -> Response:
        full = bool_param(request, "full")
        report = await blocking(ctx, lambda: reconcile(ctx.handle.ready_store(), full=full))
        await blocking(
            ctx,
            lambda: webhooks.reconcile_finished(
                ctx.handle.ready_store(), report.to_json(), from_datetime(ctx.clock.now())
            ),
        )
        return json_response(report.to_json())

    @api.get(
        "/v1/ledger/balances",
        operation_id="ledgerBalances",
        summary="Balance per ledger account and currency (admin)",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(Param("customer", "Only the entries of this customer's documents.")),
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "Balances.",
                **oa.json_body({"type": "array", "items": oa.ref("Balance")}),
            },
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def balances(request: Request) -> Response:
        customer = text_param(request, "customer")
        rows = await blocking(ctx, lambda: ledger.balances(ctx.handle.ready_store(), customer))
        return json_response(rows)

    @api.get(
        "/v1/ledger/journal",
        operation_id="ledgerJournal",
        summary="Journal entries, oldest first (admin)",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                Param(
                    "limit",
                    "Only the newest N entries.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_JOURNAL},
                ),
                Param("customer", "Only this customer's entries."),
            ),
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "Entries; each balances.",
                **oa.json_body({"type": "array", "items": oa.ref("JournalEntry")}),
            },
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def journal(request: Request) -> Response:
        limit = int_param(request, "limit", None, 1, MAX_JOURNAL)
        customer = text_param(request, "customer")

        def work() -> list[dict[str, Any]]:
            return ledger.journal(ctx.handle.ready_store(), limit, customer)

        return json_response(await blocking(ctx, work))

    return api
