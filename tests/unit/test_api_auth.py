"""Bearer tokens against sha256 digests, and the token-bucket rate limit."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from taskforge.api import auth, params
from taskforge.api.errors import ApiError
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


class _Request:
    def __init__(self, cursor: str) -> None:
        self.query = {"cursor": cursor}


def test_cursor_round_trips():
    after = uuid.uuid4()
    token = params.encode_cursor(after)
    assert token is not None and "=" not in token
    assert params.cursor_param(_Request(token)) == after  # type: ignore[arg-type]


def test_a_cursor_from_before_id_paging_still_names_its_row():
    after = uuid.uuid4()
    old = base64.urlsafe_b64encode(
        orjson.dumps([datetime(2026, 1, 2, tzinfo=UTC).isoformat(), str(after)])
    )
    assert params.cursor_param(_Request(old.decode().rstrip("="))) == after  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"{}", b"[]", b'["a", "b", "c"]', b'["not-a-uuid"]', b"[5]"])
def test_a_bad_cursor_is_a_400_naming_it(raw):
    token = base64.urlsafe_b64encode(raw).decode()
    with pytest.raises(ApiError) as caught:
        params.cursor_param(_Request(token))  # type: ignore[arg-type]
    assert caught.value.status == 400 and "cursor" in caught.value.message
