"""The api application factory."""

from __future__ import annotations

from aiohttp import web

from taskforge import resources
from taskforge.api import actions, auth, dlq, jobs, listing, openapi, queues, schedules, ui
from taskforge.api.errors import error_middleware, request_id_middleware
from taskforge.api.notifier import notifier_ctx
from taskforge.api.submitter import submitter_ctx
from taskforge.api.tracing import tracing_middleware
from taskforge.config import Settings
from taskforge.ops import add_ops_routes


def create_app(settings: Settings) -> web.Application:
    """The REST API with its stores; health and readiness also answer on the API port."""
    app = resources.base_app(
        settings,
        client_max_size=settings.max_body_bytes,
        # Tracing is outermost: its span covers the others and sees the final status.
        middlewares=[
            tracing_middleware,
            request_id_middleware,
            error_middleware,
            auth.middleware(settings),
        ],
    )
    app[resources.BATCH_STATEMENTS] = False
    app.cleanup_ctx.append(resources.postgres_ctx)
    app.cleanup_ctx.append(resources.redis_ctx)
    app.cleanup_ctx.append(notifier_ctx)
    app.cleanup_ctx.append(submitter_ctx)
    app.router.add_routes(jobs.routes)
    for module in (actions, listing, dlq, queues, schedules, openapi, ui):
        app.router.add_routes(module.routes)
    checks = app[resources.CHECKS]
    add_ops_routes(app, checks)
    return app
