"""Untrusted text as a reviewer sees it: every string shown determines the string exactly."""

from __future__ import annotations

import ast
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.protocol.text import collisions, folded, quoted, shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("region:email:segment", "region:email:segment"),  # no emoji code is interpreted here
        ("k\u034f", "k\\u034f"),  # combining grapheme joiner: invisible, and printable to Python
        ("\u202e", "\\u202e"),  # right-to-left override
        ("\\u202e", "\\\\u202e"),  # the same six characters typed literally
        ("a\u200bb", "a\\u200bb"),  # zero-width space
        ("h\u0430ndler.py", "h\\u0430ndler.py"),  # Cyrillic a: a confusable
        ("caf\u00e9", "caf\\xe9"),
        ("cafe\u0301", "cafe\\u0301"),
        ("tab\there", "tab\\there"),
        ("line\nbreak\r", "line\\nbreak\\r"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("del\x7f", "del\\x7f"),
        ("\U0001f600", "\\U0001f600"),
        ("bad\udcff", "bad\\udcff"),  # a surrogate-escaped byte of a non-UTF-8 name
        (" padded ", "\\x20padded\\x20"),
        (" ", "\\x20"),
        ("  two  ", "\\x20\\x20two\\x20\\x20"),
        ("a b", "a b"),
        ("[bold]x[/]", "[bold]x[/]"),
        ("", ""),
    ],
)
def test_shown(text: str, expected: str) -> None:
    assert shown(text) == expected
    assert shown(text).isascii() and shown(text).isprintable()


def test_a_line_of_code_keeps_its_indentation() -> None:
    assert shown("    return x  ", leading=False) == "    return x\\x20\\x20"
    assert shown("\treturn x", leading=False) == "\\treturn x"


def test_quoted() -> None:
    assert quoted('say "hi"') == '"say \\"hi\\""'
    assert quoted(" k ") == '" k "'
    assert quoted("k\u034f") == '"k\\u034f"'
    assert quoted("") == '""'


@given(st.text())
def test_quoted_is_a_python_literal_of_the_text(text: str) -> None:
    """So what is shown determines the string: two strings never look alike."""
    assert ast.literal_eval(quoted(text)) == text
    assert quoted(text).isascii()


@given(st.text(), st.text())
def test_shown_is_injective(first: str, second: str) -> None:
    if first != second:
        assert shown(first) != shown(second)


def test_shown_of_other_values() -> None:
    assert shown(42) == "42"
    assert shown(None) == "None"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("k", "k\u034f"),
        ("handler.py", "handler\u200d.py"),
        (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")),
        ("Region", "region"),
        ("\ufb01le", "file"),  # LATIN SMALL LIGATURE FI
        ("\uff2b", "k"),  # FULLWIDTH LATIN CAPITAL LETTER K
        ("straße", "STRASSE"),
    ],
)
def test_names_that_read_alike_fold_alike(first: str, second: str) -> None:
    assert first != second
    assert folded(first) == folded(second)
    assert collisions([first, "other", second]) == [tuple(sorted([first, second]))]


def test_different_names_do_not_collide() -> None:
    assert collisions(["k", "k2", "K_", "handler.py", "handler.pyc"]) == []
    assert collisions(["k", "k"]) == []  # one name, twice, is no collision
