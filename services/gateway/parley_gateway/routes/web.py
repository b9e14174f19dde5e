"""The web client: a static single-page app, the page at `/` and its files under `/web/`.

Plain ES modules, no build step. Every file goes out with a Content-Security-Policy that allows
scripts, styles, fonts and connections from this origin only (no inline script, no other
origin), so a message that smuggled markup into the page could still not run anything. The
libraries the client uses (KaTeX, highlight.js) are files in web/vendor/, fetched by
tools/vendor-web.sh at pinned versions and checked by sha256. Images may also come
from the object store's origins (PARLEY_IMAGE_ORIGINS: presigned media URLs point there) and
from `blob:` (previews of a picked file before it is uploaded).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
SERVICE_WORKER = "sw.js"


def content_security_policy(image_origins: Sequence[str] = ()) -> str:
    """The page's policy; `image_origins` (already validated origins) may serve images too."""
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            " ".join(("img-src 'self' blob:", *image_origins)),
            # KaTeX's fonts (web/vendor/katex/fonts/): maths drawn with the system's fonts would
            # misplace its symbols. Its style sheet is a file here and its elements' sizes are
            # set through the CSSOM, which style-src does not restrict: no 'unsafe-inline'.
            "font-src 'self'",
            "connect-src 'self'",
            # The service worker (/web/sw.js) that keeps the app's files for offline use.
            "worker-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(image_origins: Sequence[str] = ()) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(image_origins),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Unhashed file names: revalidate every time (ETag), so a deploy is seen at once.
        "Cache-Control": "no-cache",
    }


def index_route(headers: dict[str, str]) -> APIRouter:
    """`/`: the page, with `headers`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def index() -> FileResponse:
        if not INSTALLED:
            raise NotFound("the web client is not installed with this gateway", code="web_client_missing")
        return FileResponse(INDEX, headers=headers)

    return router


class WebFiles(StaticFiles):
    """The app's scripts, styles and icon, with the same security headers as the page."""

    def __init__(self, headers: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers = headers

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        if Path(full_path).name == SERVICE_WORKER:
            # It lives in /web/ but keeps the page at `/` too.
            response.headers["Service-Worker-Allowed"] = "/"
        return response


def install(app: FastAPI, image_origins: Sequence[str] = ()) -> None:
    """Serve the web client at `/` (and its files at `/web/`)."""
    headers = security_headers(image_origins)
    app.include_router(index_route(headers))
    app.mount("/web", WebFiles(headers, directory=WEB_DIR, check_dir=False), name="web")
