"""Bearer tokens against sha256 digests, and the token-bucket rate limit."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from taskforge.api import auth, params
from taskforge.config import parse_tokens

DIGESTS = parse_tokens("first-token,sha256:" + hashlib.sha256(b"second-token").hexdigest())


def test_a_listed_token_matches_its_digest():
    assert auth.authenticate("Bearer first-token", DIGESTS) == DIGESTS[0]
    assert auth.authenticate("bearer second-token", DIGESTS) == DIGESTS[1]


def test_missing_malformed_or_unknown_tokens_do_not_match():
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic first-token",
        "first-token",
        "Bearer third-token",
        f"Bearer {DIGESTS[0]}",
    ):
        assert auth.authenticate(header, DIGESTS) is None, header


def test_rate_limiter_allows_the_rate_and_says_how_long_to_wait():
    now = [0.0]
    limiter = auth.RateLimiter(2.0, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a") == 0.5
    assert limiter.take("b") == 0.0  # buckets are per key
    now[0] += 0.5
    assert limiter.take("a") == 0.0


def test_rate_limiter_forgets_full_buckets():
    now = [0.0]
    limiter = auth.RateLimiter(1.0, clock=lambda: now[0])
    for n in range(auth.MAX_BUCKETS + 1):
        limiter.take(str(n))
        now[0] += 0.001
    now[0] += 10.0
    limiter.take("fresh")
    limiter._prune(now[0])
    assert len(limiter._buckets) == 1


def test_cursor_round_trips():
    after = (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4())
    token = params.encode_cursor(after)
    assert token is not None and "=" not in token

    class Request:
        query = {"cursor": token}

    assert params.cursor_param(Request()) == after  # type: ignore[arg-type]
