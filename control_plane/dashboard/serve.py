"""Serve the dashboard's three files, and nothing else, under /dashboard.

The files are listed by name rather than served from a directory, so no request path ever
reaches the filesystem, and their content types do not depend on the host's mime.types.
The content security policy allows only this origin's scripts, styles and API: the page
makes no inline script or style, and an injected one would not run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"

# URL path -> (file, media type)
ASSETS: dict[str, tuple[str, str]] = {
    PREFIX: ("index.html", "text/html; charset=utf-8"),
    f"{PREFIX}/app.js": ("app.js", "text/javascript; charset=utf-8"),
    f"{PREFIX}/app.css": ("app.css", "text/css; charset=utf-8"),
}

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Add GET routes for the dashboard's files (hidden from the OpenAPI docs)."""
    for path, (name, media_type) in ASSETS.items():
        app.add_api_route(
            path, _responder(STATIC / name, media_type), methods=["GET"], include_in_schema=False
        )


def _responder(file: Path, media_type: str) -> Callable[[], FileResponse]:
    def respond() -> FileResponse:
        return FileResponse(file, media_type=media_type, headers=HEADERS)

    return respond
