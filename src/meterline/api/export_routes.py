"""Exports over HTTP (admin): `GET /v1/exports/{kind}?period=P&format=csv|parquet`.

The same rows and bytes as `meterline export`, streamed: rows are read through
a streaming cursor and encoded in chunks while the response is being sent
(StreamingResponse over a generator run in a worker thread), so memory stays
flat whatever the size of the period. Arguments are checked before the first
byte, so a bad request is a 400 with the error envelope, never a cut stream.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from meterline.api import openapi as oa
from meterline.api.adapt import Param, bad, blocking, parameters, path_param, period, text_param
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext
from meterline.render.exports import FORMATS, MEDIA_TYPES, chunks
from meterline.services.exports import COLUMNS, Kind, rows

_BINARY: oa.Schema = {"type": "string", "format": "binary"}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["exports"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    @api.get(
        "/v1/exports/{kind}",
        operation_id="export",
        summary="Export invoices, lines, journal or events of a period (admin)",
        description=(
            "Same bytes as `meterline export KIND --period P --format F`; columns in "
            "docs/EXPORTS.md. Streamed (chunked transfer encoding)."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                {
                    **path_param("kind", "What to export."),
                    "schema": {"type": "string", "enum": [k.value for k in Kind]},
                },
                Param(
                    "period",
                    "YYYY-MM (events: the UTC month).",
                    {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"},
                    required=True,
                ),
                Param(
                    "format", "csv (default) or parquet.", {"type": "string", "enum": list(FORMATS)}
                ),
            ),
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "The export.",
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/vnd.apache.parquet": {"schema": _BINARY},
                },
            },
            **oa.errors({400: "An invalid parameter.", 404: "No such export."}),
        },
    )
    async def export(request: Request) -> Response:
        name = request.path_params["kind"]
        if name not in {k.value for k in Kind}:
            raise bad(f"unknown export {name!r}; use invoices, lines, journal or events")
        what = Kind(name)
        label = period("period", text_param(request, "period", required=True) or "")
        fmt = text_param(request, "format") or "csv"
        if fmt not in FORMATS:
            raise bad("format must be csv or parquet", parameter="format")
        store = await blocking(ctx, ctx.handle.ready_store)

        def body() -> Iterator[bytes]:
            yield from chunks(fmt, COLUMNS[what], rows(store, what, label))

        filename = f"{what.value}-{label}.{fmt}"
        return StreamingResponse(
            body(),
            media_type=MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return api
