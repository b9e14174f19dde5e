"""The web client: a static single-page app, the page at `/` and its files under `/web/`.

Plain ES modules, no build step. Every file goes out with a Content-Security-Policy that allows
scripts, styles and connections from this origin only (no inline script, no other origin), so a
message that smuggled markup into the page could still not run anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from parley_common.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
INDEX = WEB_DIR / "index.html"
# An install without the package's data files still serves the API.
INSTALLED = INDEX.is_file()

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Unhashed file names: revalidate every time (ETag), so a deploy is seen at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    if not INSTALLED:
        raise NotFound("the web client is not installed with this gateway", code="web_client_missing")
    return FileResponse(INDEX, headers=SECURITY_HEADERS)


class WebFiles(StaticFiles):
    """The app's scripts, styles and icon, with the same security headers as the page."""

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the web client at `/` (and its files at `/web/`)."""
    app.include_router(router)
    app.mount("/web", WebFiles(directory=WEB_DIR, check_dir=False), name="web")
