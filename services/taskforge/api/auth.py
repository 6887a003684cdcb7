"""Bearer-token authentication and the optional per-token rate limit.

``TASKFORGE_API_TOKENS`` holds the accepted tokens as ``sha256:<hex>`` digests (several, for
rotation); a presented token is hashed and compared with every digest in constant time, so
neither the tokens nor timing reveal anything. With no tokens configured the API is open.
Health, readiness, metrics and the OpenAPI document are always open. Tokens are never
logged: only whether one matched.

``TASKFORGE_RATE_LIMIT`` (requests per second, 0 = off) is a token bucket per API token (per
client address when auth is off), holding at most one second's worth of burst; past it the
answer is 429 with ``Retry-After``. Buckets live in each api process, so N replicas allow N
times the rate.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from taskforge.api.errors import Handler, error_response
from taskforge.config import Settings

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
MAX_BUCKETS = 10_000


def authenticate(header: str | None, digests: Sequence[str]) -> str | None:
    """The digest matching an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    presented = hashlib.sha256(token.encode()).hexdigest()
    matched = None
    for digest in digests:  # no early exit: the time taken says nothing about which matched
        if hmac.compare_digest(presented, digest):
            matched = digest
    return matched


class RateLimiter:
    """Token buckets: ``rate`` per second, bursts of up to ``max(rate, 1)`` requests."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket: 0 when allowed, else seconds to wait."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket: forget it.
        full_after = self.capacity / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


def middleware(settings: Settings) -> Middleware:
    """The auth (and rate limit) middleware for an app with these settings."""
    digests = settings.api_tokens
    limiter = RateLimiter(settings.rate_limit) if settings.rate_limit > 0 else None

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The dashboard (/ui/: page, assets, config) loads open; its data calls carry a token.
        if request.path in OPEN_PATHS or request.path == "/ui" or request.path.startswith("/ui/"):
            return await handler(request)
        key = request.remote or "unknown"
        if digests:
            matched = authenticate(request.headers.get("Authorization"), digests)
            if matched is None:
                return error_response(
                    401,
                    "unauthorized",
                    "missing or unknown API token; send 'Authorization: Bearer <token>' "
                    "with a token listed (as its sha256 digest) in TASKFORGE_API_TOKENS",
                    headers={"WWW-Authenticate": 'Bearer realm="taskforge"'},
                )
            key = matched
        if limiter is not None:
            wait = limiter.take(key)
            if wait > 0:
                return error_response(
                    429,
                    "rate_limited",
                    f"too many requests; this token may make {settings.rate_limit:g} per "
                    "second (TASKFORGE_RATE_LIMIT)",
                    {"retry_after_seconds": round(wait, 3)},
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return auth_middleware
