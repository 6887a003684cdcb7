"""The HTTP SERVER span of each API request (OpenTelemetry HTTP server conventions).

The outermost middleware, so the span covers every other one and sees the final status,
including JSON errors. A client's ``traceparent`` (or whatever ``OTEL_PROPAGATORS`` names)
makes the request join the client's trace. It also fills the request's TRACEPARENT and
TRACESTATE keys: the context a route stores with the jobs it creates when it makes no
``create`` span of its own (see :func:`taskforge.spans.create`). With tracing off, those keys
pass a client's valid W3C context through unchanged.
"""

from __future__ import annotations

from aiohttp import web
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode

from taskforge import spans, telemetry
from taskforge.api.errors import Handler
from taskforge.api.keys import TRACEPARENT, TRACESTATE

# Probes and scrapes answer here too; a span each would bury the requests that matter.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the request inside a SERVER span named ``<method> <route template>``."""
    if not telemetry.ENABLED:
        incoming = request.headers.get("traceparent")
        if incoming and spans.valid_traceparent(incoming):
            request[TRACEPARENT] = incoming
            state = request.headers.get("tracestate")
            if state and len(state) <= spans.MAX_TRACESTATE:
                request[TRACESTATE] = state
        return await handler(request)
    if request.path in UNTRACED:
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    attributes: dict[str, str | int] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if route is not None:
        attributes["http.route"] = route
    if request.host:
        attributes["server.address"] = request.host.rsplit(":", 1)[0]
    if request.remote:
        attributes["client.address"] = request.remote
    if agent := request.headers.get("User-Agent"):
        attributes["user_agent.original"] = agent
    with telemetry.tracer().start_as_current_span(
        f"{request.method} {route}" if route else request.method,
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        set_status_on_exception=False,
    ) as span:
        traceparent, state = spans.header_values(span.get_span_context())
        request[TRACEPARENT] = traceparent
        if state:
            request[TRACESTATE] = state
        status: int | None = None  # stays None when the client went away (cancelled)
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:  # redirects and the like escape the JSON errors
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:  # a 4xx is the client's error, not this server's
                    span.set_status(StatusCode.ERROR)
        return response
