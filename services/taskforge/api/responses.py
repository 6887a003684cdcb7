"""JSON responses encoded with orjson: several times faster than aiohttp's default
``json.dumps``, which showed up in the submit path's profile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response; ``data`` may hold anything orjson encodes (datetimes, UUIDs...)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )
