"""JSON responses encoded with orjson: several times faster than aiohttp's default
``json.dumps``, which showed up in the submit path's profile.

Submits honour ``Prefer: return=minimal`` (RFC 7240): a producer that only needs the new
jobs' ids is spared the full documents. For a 500-job batch those are most of the api's work
after the insert: building 500 documents, encoding ~250 KB and writing it to the socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

MINIMAL_APPLIED = {"Preference-Applied": "return=minimal"}


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response; ``data`` may hold anything orjson encodes (datetimes, UUIDs...)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def prefers_minimal(request: web.Request) -> bool:
    """Whether the request's ``Prefer`` headers ask for ``return=minimal`` (RFC 7240).

    Preferences are comma-separated, each ``token[=value]`` with optional ``;`` parameters,
    case-insensitive, the value possibly quoted; ``return=representation`` (or none) keeps
    the full documents. A preference the server does not know is ignored, as the RFC asks.
    """
    for header in request.headers.getall("Prefer", ()):
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
                return True
    return False
