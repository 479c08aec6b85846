"""``/docs``: Swagger UI from files shipped in the package, so the API's documentation works offline.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, which a server without internet access
(and the browsers of its users, often) cannot reach: the page stays blank. The two files it needs
(swagger-ui-dist 5.35.0, Apache-2.0: see ``swagger_ui/LICENSE`` and ``NOTICE``) are served here
under ``/docs/`` instead, with the same page around them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = Path(__file__).with_name("swagger_ui")
SWAGGER_JS, SWAGGER_CSS = "swagger-ui-bundle.js", "swagger-ui.css"
MEDIA_TYPES = {SWAGGER_JS: "text/javascript; charset=utf-8", SWAGGER_CSS: "text/css; charset=utf-8"}
DOCS_PATH = "/docs"
PATHS = frozenset({DOCS_PATH, *(f"{DOCS_PATH}/{name}" for name in MEDIA_TYPES)})
# A blank icon: the default one would be fetched from the internet.
NO_FAVICON = "data:image/x-icon;base64,AA=="
# As the service's own page: never framed (its Authorize box takes the API key), no type sniffing,
# no referrer. Its scripts are Swagger UI's (the bundle and an inline start), so no script policy.
DOCS_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (create the app with ``docs_url=None``) and its two asset files."""

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - API documentation",
            swagger_js_url=f"{root}{DOCS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{root}{DOCS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=NO_FAVICON,
        )
        page.headers.update(DOCS_HEADERS)
        return page

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
    for name, media_type in MEDIA_TYPES.items():
        app.add_api_route(f"{DOCS_PATH}/{name}", _asset(name, media_type), methods=["GET"], include_in_schema=False)


def _asset(name: str, media_type: str):
    body = (ASSETS / name).read_bytes()  # read once, when the app is built

    async def serve() -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=86400",
                                                              "X-Content-Type-Options": "nosniff"})

    return serve
