"""``Prefer: return=minimal`` (RFC 7240) as the submit endpoints read it."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from taskforge.api.responses import prefers_minimal

OTHERS = ["respond-async", "wait=10", "handling=lenient", "return=representation", "foo=bar"]


def prefers(*headers: str) -> bool:
    request = make_mocked_request(
        "POST", "/v1/jobs", headers=CIMultiDict(("Prefer", h) for h in headers)
    )
    return prefers_minimal(request)


def test_the_plain_forms():
    assert prefers("return=minimal")
    assert prefers('return="minimal"')
    assert prefers("RETURN = Minimal")
    assert prefers("respond-async, return=minimal; foo=bar")
    assert prefers("wait=5", "return=minimal")  # in a second Prefer header
    assert not prefers()
    assert not prefers("return=representation")
    assert not prefers("return")
    assert not prefers("minimal")
    assert not prefers("returns=minimal")
    assert not prefers("wait=5; return=minimal")  # a parameter of wait, not a preference


def _spell(draw: st.DrawFn, preference: str) -> str:
    """``preference`` with random case, spaces around '=' and a parameter or none."""
    name, _, value = preference.partition("=")
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    if value:
        quote = '"' if draw(st.booleans()) else ""
        cased += draw(st.sampled_from(["=", " = ", "= "])) + quote + value + quote
    if draw(st.booleans()):
        cased += "; " + draw(st.sampled_from(["p=1", "q", "return=minimal"]))
    return draw(st.sampled_from(["", " "])) + cased


@st.composite
def preference_lists(draw: st.DrawFn) -> tuple[list[str], bool]:
    chosen = draw(st.lists(st.sampled_from([*OTHERS, "return=minimal"]), max_size=5))
    spelled = [_spell(draw, p) for p in chosen]
    cut = draw(st.integers(0, len(spelled)))
    headers = [h for h in (", ".join(spelled[:cut]), ", ".join(spelled[cut:])) if h]
    return headers, "return=minimal" in chosen


@given(preference_lists())
def test_minimal_is_seen_wherever_and_however_it_is_written(case):
    headers, expected = case
    assert prefers(*headers) is expected
