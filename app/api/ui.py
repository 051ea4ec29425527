"""The browser side: the playground at `/` and the API docs (`/docs`, `/redoc`), all served from local files.

Nothing here loads from a CDN, so the pages work on an air-gapped cluster: the playground's HTML, CSS and
JS are in app/static/playground/, and the Swagger UI and ReDoc bundles come from the `fastapi-offline`
package (its static folder, which holds swagger-ui 5 and redoc 2; swagger-ui 4, as in `swagger-ui-bundle`,
cannot render the OpenAPI 3.1 that FastAPI emits). The playground only talks to the public HTTP API
(/v1/models, /v1/solve/stream), so it needs nothing from the engine.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PLAYGROUND_DIR = Path(__file__).resolve().parent.parent / "static" / "playground"
PLAYGROUND_URL = "/ui"
VENDOR_URL = "/ui/vendor"
# Swagger UI's defaults plus no validator badge: it would send the spec to validator.swagger.io.
SWAGGER_PARAMETERS = {"validatorUrl": None, "tryItOutEnabled": True, "displayRequestDuration": True}
# Content-Security-Policy: the browser itself refuses any request off this server. The playground has no
# inline script or style. The docs pages need inline ones (FastAPI's bootstrap script, React and
# styled-components styles), and ReDoc's bundle always loads a logo from its vendor's CDN: blocked here,
# the image's onError hides it instead of a request leaving an air-gapped cluster.
PLAYGROUND_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                  "connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
            "base-uri 'self'; frame-ancestors 'none'")


def vendor_dir() -> Path:
    """The folder with swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png."""
    return Path(str(files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    """The mount prefix when served behind a path-rewriting proxy (uvicorn --root-path)."""
    return request.scope.get("root_path", "").rstrip("/")


def build_router(openapi_url: str, title: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    oauth2_redirect = "/docs/oauth2-redirect"

    @router.get("/")
    async def playground() -> FileResponse:
        # no-cache: the page is tiny and must match the JS it loads after an upgrade.
        return FileResponse(PLAYGROUND_DIR / "index.html",
                            headers={"Cache-Control": "no-cache", "Content-Security-Policy": PLAYGROUND_CSP})

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}", title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{VENDOR_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{VENDOR_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{PLAYGROUND_URL}/favicon.svg",
            oauth2_redirect_url=f"{root}{oauth2_redirect}", swagger_ui_parameters=SWAGGER_PARAMETERS)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @router.get(oauth2_redirect)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = _root(request)
        page = get_redoc_html(openapi_url=f"{root}{openapi_url}", title=f"{title} - ReDoc",
                              redoc_js_url=f"{root}{VENDOR_URL}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{PLAYGROUND_URL}/favicon.svg", with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    return router


def install(app: FastAPI) -> None:
    """Add the playground and the offline docs to `app`, which must be built with docs_url=None and
    redoc_url=None (FastAPI's own pages load their assets from a CDN)."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the FastAPI app with docs_url=None, redoc_url=None: app.api.ui serves the docs")
    # The vendor mount goes first: /ui/vendor/... must not be looked up in the playground folder.
    app.mount(VENDOR_URL, StaticFiles(directory=vendor_dir()), name="ui-vendor")
    app.mount(PLAYGROUND_URL, StaticFiles(directory=PLAYGROUND_DIR), name="ui")
    app.include_router(build_router(app.openapi_url or "/openapi.json", app.title))
