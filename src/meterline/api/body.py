"""Reading request bodies ourselves: bounded, raw, never parsed by the framework.

The ingest hot path decodes with msgspec, so FastAPI/pydantic never see the
body. The size limit is enforced while the bytes arrive, so a client cannot
make the server buffer more than the limit.
"""

from __future__ import annotations

from fastapi import Request

from meterline.api.errors import PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, ApiError

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        PAYLOAD_TOO_LARGE,
        f"request body is larger than the limit of {limit} bytes; send smaller batches",
        {"limit_bytes": limit},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    """The Content-Type without parameters, lower-cased ("" when absent)."""
    value = request.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower()


def unsupported(got: str, allowed: tuple[str, ...], status: int = 415) -> ApiError:
    return ApiError(
        status,
        UNSUPPORTED_MEDIA_TYPE,
        f"unsupported Content-Type {got or '(none)'!r}; use one of: {', '.join(allowed)}",
        {"content_type": got, "allowed": list(allowed)},
    )
