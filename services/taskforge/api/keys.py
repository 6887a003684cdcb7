"""Typed per-request storage keys shared by the api's middlewares and handlers."""

from __future__ import annotations

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)
"""The X-Request-ID of this request (the client's, or generated)."""

TRACEPARENT = web.RequestKey("traceparent", str)
"""W3C traceparent of the context to store with a job created by this request."""

TRACESTATE = web.RequestKey("tracestate", str)
"""W3C tracestate to store with it."""
