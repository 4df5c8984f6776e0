"""Untrusted text as a reviewer sees it: every string shown determines the string exactly."""

from __future__ import annotations

import ast
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.protocol.text import (
    FoldedPaths,
    clashing,
    collisions,
    folded,
    name_problem,
    quoted,
    shown,
    unsafe_character,
)


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


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["a.csv", "A.csv", "b.csv"], {"a.csv", "A.csv"}),
        (["caf\u00e9", "cafe\u0301"], {"caf\u00e9", "cafe\u0301"}),
        (["a", "A/b", "A/c", "d/e"], {"a", "A/b", "A/c"}),
        (["a/x", "A/y"], set()),  # one directory on such a disk, two files in it
        (["a\uff0fb", "a/b"], set()),  # U+FF0F folds to "/" but is no separator on a disk
        (["x/y", "x/z", "y"], set()),
    ],
)
def test_clashing_finds_every_file_a_folding_disk_holds_as_one_with_another(
    paths: list[str], expected: set[str]
) -> None:
    assert clashing(paths) == expected
    added = FoldedPaths()
    clashes = [path for path in paths if added.add(path) is not None]
    assert bool(clashes) == bool(expected)


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("caf\u00e9 r\u00e9sum\u00e9.csv", None),
        ("a\x1b[31m", "\x1b"),
        ("x\x9b", "\x9b"),
        ("report\u202ecsv.exe", "\u202e"),
        ("a\u200bb", "\u200b"),
        ("\ue000", "\ue000"),
        ("a\u2029", "\u2029"),
    ],
)
def test_unsafe_character_is_the_first_a_terminal_acts_on_or_does_not_show(
    name: str, unsafe: str | None
) -> None:
    assert unsafe_character(name) == unsafe


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("x-y/.gitignore", None),
        ("a\u202eb", "the character \\u202e"),
        ("-rf", "a part that begins with '-' (-rf), read as an option"),
        ("a/--x=1/b", "a part that begins with '-' (--x=1), read as an option"),
        (".GIT/config", "a part named as git's repository (.GIT)"),
        ("a/.git", "a part named as git's repository (.git)"),
        ("CON", "a part named as a Windows device (CON)"),
        ("nul.tar.gz", "a part named as a Windows device (nul.tar.gz)"),
        ("x/AUX .csv", "a part named as a Windows device (AUX .csv)"),
        ("lpt\u00b3.csv", "a part named as a Windows device (lpt\\xb3.csv)"),
        ("ConOut$", "a part named as a Windows device (ConOut$)"),
        ("a.csv:x", "the character :, which Windows reads as more than a name"),
        ('say"hi"', 'the character ", which Windows reads as more than a name'),
        ("a/b.csv.", "a part that ends with '.' or ' ' (b.csv.), which Windows drops"),
        ("a /b.csv", "a part that ends with '.' or ' ' (a\\x20), which Windows drops"),
        ("console.csv", None),
        ("com10.csv", None),
        ("lpt/x", None),
        (".hidden.csv", None),
    ],
)
def test_name_problem_says_why_a_name_may_not_be_written(path: str, problem: str | None) -> None:
    assert name_problem(path) == problem
