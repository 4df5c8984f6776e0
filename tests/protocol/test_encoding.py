"""Canonical JSON: every value RFC 8785 cannot represent is a MessageFormatError,
never another exception (a 500 where it is parsed from a request)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import canonical, loads_unique
from cleanroom.protocol.errors import MessageFormatError


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"\ud800": 1},  # a key with a lone surrogate: JCS sorts keys by UTF-16 code units
        {"a": {"\udfff": 1, "b": 2}},
        {"a": "\udc00"},
        ["x\ud83d"],
        math.nan,
        math.inf,
        2**53 + 1,
        {1: 2},
        b"bytes",
        {"a"},
        nested(100_000),
    ],
    ids=[
        "surrogate-key", "nested-surrogate-key", "surrogate-text", "half-pair", "nan", "inf",
        "big-int", "int-key", "bytes", "set", "deep",
    ],
)  # fmt: skip
def test_what_jcs_cannot_represent_is_a_message_format_error(value: object) -> None:
    with pytest.raises(MessageFormatError) as caught:
        canonical(value)
    assert caught.value.check == "canonical-json"


json_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_anything_json_like_is_canonical_or_refused(value: object) -> None:
    try:
        encoded = canonical(value)
    except MessageFormatError:
        return
    encoded.decode("utf-8")  # JCS output is always UTF-8


def test_a_refusal_that_quotes_a_lone_surrogate_still_renders_as_utf8_json() -> None:
    """What a refusal quotes came from the request: it must render whatever it holds."""
    refusal = CheckFailed("request-fields", ["a"], {"\ud800": 1}, "bad key \udc00")
    document = refusal.to_json()
    assert json.dumps(document, ensure_ascii=False).encode("utf-8")
    assert document["actual"] == {"\\ud800": 1}
    assert document["message"] == "bad key \\udc00"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": NaN}', "NaN is not JSON"),
        ('[Infinity]', "Infinity is not JSON"),
        ('{"a": {"b": -Infinity}}', "-Infinity is not JSON"),
        ('[1e400]', "the number 1e400 is beyond a double"),
        ('[-1E+309]', "the number -1E+309 is beyond a double"),
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "negative-overflow"],
)  # fmt: skip
def test_loads_unique_refuses_numbers_json_has_not(text: str, reason: str) -> None:
    """Python reads NaN and Infinity (and 1e400 as infinity); they are not JSON (RFC 8259
    section 6) and have no canonical form: a saved document holding one is malformed."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        loads_unique(text)
    assert loads_unique('{"a": [1.5, -0.0, 1e308, "NaN"]}') == {"a": [1.5, -0.0, 1e308, "NaN"]}
