"""The web dashboard at ``/ui/``: one HTML page, its scripts and styles, and its settings.

The page is hand-written HTML, CSS and JavaScript modules shipped inside the package (no
build step, nothing fetched from elsewhere at run time). It talks to the REST API with the
operator's bearer token, so the page and its assets are served without a token and every
data call is authenticated like any other client's.

Assets live under ``/ui/assets/<version>/`` where the version is the package version plus a
digest of the files: a new release (or an edited file) gets new URLs, so browsers may cache
assets forever, while the page itself is never cached. Relative imports between the modules
resolve under the same versioned folder.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from taskforge import __version__
from taskforge.api.errors import ApiError
from taskforge.api.responses import json_response
from taskforge.resources import SETTINGS

routes = web.RouteTableDef()

STATIC = Path(__file__).with_name("static")
PAGE = "index.html"
POLL_SECONDS = 3.0
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything comes from this origin; scripts and styles only from files (no inline code),
# so injected markup could not run even if an escaping mistake slipped through.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Bundle:
    """The dashboard's files as served: the page (asset URLs filled in) and the assets."""

    version: str
    page: bytes
    assets: dict[str, bytes]


@functools.cache
def bundle() -> Bundle:
    """Read the static folder once; the version names exactly these bytes."""
    files = {
        path.name: path.read_bytes()
        for path in sorted(STATIC.iterdir())
        if path.is_file() and (path.suffix in CONTENT_TYPES or path.name == PAGE)
    }
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    version = f"{__version__}-{digest.hexdigest()[:10]}"
    page = files.pop(PAGE).replace(b"{{assets}}", f"assets/{version}".encode())
    return Bundle(version, page, files)


def _headers(cache: str) -> dict[str, str]:
    return {**SECURITY_HEADERS, "Cache-Control": cache}


@routes.get("/ui")
async def ui_redirect(request: web.Request) -> web.Response:
    """``/ui`` → ``/ui/`` (relative, so it also works behind a path-prefixing proxy)."""
    raise web.HTTPFound("ui/")


@routes.get("/ui/")
async def ui_page(request: web.Request) -> web.Response:
    """The dashboard page; it loads without a token and asks for one when the API does."""
    return web.Response(
        body=bundle().page,
        content_type="text/html",
        charset="utf-8",
        headers=_headers("no-cache"),
    )


@routes.get("/ui/config.json")
async def ui_config(request: web.Request) -> web.Response:
    """What the page needs to know about this deployment (nothing secret: it is served open)."""
    settings = request.app[SETTINGS]
    return json_response(
        {
            "version": __version__,
            "assets": bundle().version,
            "trace_url_template": settings.trace_url_template or None,
            "poll_seconds": POLL_SECONDS,
        },
        headers=_headers("no-cache"),
    )


@routes.get("/ui/assets/{version}/{name}")
async def ui_asset(request: web.Request) -> web.Response:
    """A script, style sheet or icon; cached for good when its version is the current one."""
    current = bundle()
    name = request.match_info["name"]
    data = current.assets.get(name)
    if data is None:
        raise ApiError(404, "not_found", f"no dashboard asset named {name!r}")
    # An old page asking for an old version gets today's file, but must not cache it as old.
    fresh = request.match_info["version"] == current.version
    return web.Response(
        body=data,
        headers={
            **_headers("public, max-age=31536000, immutable" if fresh else "no-cache"),
            "Content-Type": CONTENT_TYPES[Path(name).suffix],
        },
    )
