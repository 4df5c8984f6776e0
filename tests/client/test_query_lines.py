"""A SQL room's query is shown in the lines its SQL parser reads, nothing else.

``inspect`` printed a named query's text one line per ``str.splitlines()`` part, which
also breaks at VT, FF, FS, GS, RS, NEL, U+2028 and U+2029. The engine's parser
(sqlglot, which renders the SQL DuckDB runs) ends a ``--`` comment only at LF or CR:
``… -- note<U+2028>WHERE consent`` was reviewed as a live ``WHERE consent`` line,
and ran without it. Lines now break where the parser's do, and every other
character is escaped where it stands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlglot

from cleanroom.cli.main import main
from cleanroom.sql import engine_bundle
from cleanroom.sql.rules import DIALECT
from tests.client.hostile_http import (
    configure_against,
    deployed_room,
    hostile_server,
    manager_of_room,
)
from tests.sql.fixtures import BY_SEGMENT, sql_document

FILTER = "AND a.region <> 'north'"
BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _inspected(
    home: Path, capsys: pytest.CaptureFixture[str], text: str, rule_2: Any = None
) -> str:
    document = sql_document()
    document["sql"]["queries"]["by_segment"]["text"] = text
    if rule_2 is not None:
        document["sql"]["rules"]["input_2"] = rule_2
    room = deployed_room(document)
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        capsys.readouterr()
        assert main(["inspect", room["name"]]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("separator", BREAKS)
def test_a_line_break_the_parser_does_not_see_is_not_shown_as_one(
    home: Path, capsys: pytest.CaptureFixture[str], separator: str
) -> None:
    where = BY_SEGMENT.index(" GROUP BY")
    text = f"{BY_SEGMENT[:where]} -- keep the north out{separator}{FILTER}\n{BY_SEGMENT[where:]}"
    # What runs: the filter is in the comment; the GROUP BY on the next line is not.
    runs = sqlglot.parse_one(text, read=DIALECT).sql(dialect=DIALECT, comments=False)
    assert FILTER not in runs and "GROUP BY" in runs
    out = _inspected(home, capsys, text)
    shown = [line for line in out.splitlines() if FILTER in line]
    assert len(shown) == 1, out
    assert "-- keep the north out" in shown[0]  # in the comment, where it is read
    escaped = separator.encode("unicode_escape").decode()
    assert escaped in shown[0]


def test_the_line_breaks_the_parser_sees_are_shown_as_lines(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cleanroom.cli.user import _query_lines

    assert _query_lines("a -- x\rb\r\nc\nd\u2028e\r\n") == ["a -- x", "b", "c", "d\u2028e"]
    for end in ("\r", "\n", "\r\n"):
        text = f"SELECT 1 AS a -- x{end}, 2 AS b"
        assert "2 AS b" in sqlglot.parse_one(text, read=DIALECT).sql(dialect=DIALECT)


def test_the_query_is_also_shown_as_the_engine_parses_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nested comment (DuckDB's, and so sqlglot's, ``/* … /* … */ … */``) hides code
    that a reader takes for live: the review says what the parser keeps."""
    where = BY_SEGMENT.index(" GROUP BY")
    text = f"{BY_SEGMENT[:where]} /* keep /* the north */ {FILTER} */{BY_SEGMENT[where:]}"
    out = _inspected(home, capsys, text)
    parsed = [line for line in out.splitlines() if line.startswith("  parsed as: ")]
    assert len(parsed) == 1, out
    assert FILTER not in parsed[0] and "GROUP BY" in parsed[0] and "keep" not in parsed[0]
    assert "WHERE a.region <> $skip" in parsed[0]


def test_a_custom_rule_says_which_queries_may_read_its_input(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A custom rule without ``allowed_queries`` lets every named query read the input,
    one with ``[]`` none: the review left both out, and showed the two rules alike."""
    shown = {}
    for allowed in (None, [], ["by_segment"]):
        rule = (
            {"kind": "custom"}
            if allowed is None
            else {"kind": "custom", "allowed_queries": allowed}
        )
        out = _inspected(home, capsys, BY_SEGMENT, rule)
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("rule of input_2"))
        shown[str(allowed)] = lines[start + 1]
    assert shown == {
        "None": "  allowed_queries: every named query (none listed)",
        "[]": "  allowed_queries: none (no query may read it)",
        "['by_segment']": "  allowed_queries: by_segment",
    }
