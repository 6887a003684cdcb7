"""U+0000 in submitted JSON: the one-scan shortcut never clears a body that holds one."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from taskforge.api.validation import nul_free
from taskforge.jobs import has_nul

# Strings that often hold U+0000, a backslash, or the text "u0000" after one.
TEXT = st.text(alphabet=st.sampled_from(["\x00", "\\", "u", "0", "a", "é", "\n"]), max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_a_body_cleared_by_the_scan_holds_no_nul(value):
    raw = orjson.dumps(value)
    if nul_free(raw):
        assert not has_nul(value)
    if has_nul(value):
        assert not nul_free(raw)


def test_the_scan_is_only_a_shortcut():
    # A backslash followed by "u0000" is no NUL: the scan cannot clear it, the walk does.
    value = {"path": "C:\\u0000"}
    assert not nul_free(orjson.dumps(value)) and not has_nul(value)
    assert nul_free(orjson.dumps({"a": ["b", {"c": 1}]}))
