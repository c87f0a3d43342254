"""Interactive API documentation at `/docs` (Swagger UI) and `/redoc` (ReDoc).

The JavaScript and CSS are served from this process, never from a CDN: the
API often runs where the internet is not reachable, and documentation pages
must not leak who reads them. The assets come from the `fastapi-offline`
package (MIT; Swagger UI is Apache-2.0, ReDoc MIT), a dependency of the
`server` extra.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from meterline.api.errors import NOT_FOUND, ApiError

_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "application/javascript",
    "favicon.png": "image/png",
}
STATIC = "/docs/static"


def _asset(name: str) -> bytes:
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()


def router(openapi_url: str, title: str) -> APIRouter:
    api = APIRouter(include_in_schema=False)

    @api.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title}: API documentation",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon.png",
        )

    @api.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title}: API reference",
            redoc_js_url=f"{STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{STATIC}/favicon.png",
            with_google_fonts=False,
        )

    @api.get(STATIC + "/{name}")
    async def static(name: str) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise ApiError(404, NOT_FOUND, f"no documentation asset {name!r}")
        return Response(
            _asset(name), media_type=media_type, headers={"Cache-Control": "max-age=86400"}
        )

    return api
