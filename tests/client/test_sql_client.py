"""The client side of a SQL room without servers: the files a room is deployed from,
and how a schema refusal is shown to the uploader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleanroom.client.access import AccessFileError
from cleanroom.client.sqlfiles import load_schema, parse_queries, sql_section

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sql" / "overlap"


def test_the_example_queries_and_schemas_load() -> None:
    from cleanroom.client.sqlfiles import load_queries

    queries = load_queries(EXAMPLE / "queries.sql")
    assert sorted(queries) == ["crosstab", "crosstab_in", "overlap"]
    assert queries["crosstab_in"]["parameters"] == {"region": "text"}
    assert queries["overlap"]["output"] == "output_1"
    assert not queries["overlap"]["text"].endswith(";")
    assert load_schema(EXAMPLE / "input_1.yaml")["columns"][0]["name"] == "email_sha256"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("SELECT 1", "'-- query: NAME' first"),
        ("-- query: a\n-- output: o\n", "no SQL text"),
        ("-- query: a\nSELECT 1;\n-- query: a\nSELECT 2", "query a twice"),
        ("-- query: a\n-- parameters: k\nSELECT 1", "a parameter is NAME TYPE"),
        ("-- query: a\n-- epsilon: lots\nSELECT 1", "epsilon must be a number"),
        ("", "no query"),
    ],
)
def test_a_queries_file_that_cannot_be_used_is_refused_naming_the_line(
    text: str, problem: str
) -> None:
    with pytest.raises(AccessFileError) as caught:
        parse_queries(text)
    assert problem in str(caught.value)


def test_numbers_written_as_yaml_text_become_numbers() -> None:
    section = sql_section(
        rules={"input_1": {"differential_privacy": {"delta": "1e-6", "identity": "e1"}}},
        adhoc=None, schemas={}, queries={},
    )  # fmt: skip
    assert section["rules"]["input_1"]["differential_privacy"] == {"delta": 1e-6, "identity": "e1"}


def test_a_schema_refusal_names_the_file_for_the_uploader_alone() -> None:
    """The Worker names a refused file by its place among the input's files, in the
    refusal it seals to the uploader; the uploader's client puts the name back, and only
    for a place that is one of its files."""
    from cleanroom.client.rooms import _with_file_named
    from cleanroom.protocol.acks import UploadRefused

    def refusal(file: object, files: object) -> UploadRefused:
        return UploadRefused(
            "schema-null", "not null",
            {"file": file, "files": files, "column": "email", "row": 2},
            f"input_2 does not match its schema: a null (file {file} of {files}, "
            "column email, row 2)",
        )  # fmt: skip

    named = _with_file_named(refusal(2, 2), ["z_tokyo.csv", "a.csv"])
    assert isinstance(named.actual, dict) and named.actual["file"] == "z_tokyo.csv"
    assert "(file z_tokyo.csv, column email, row 2)" in str(named)
    for file, files in ((3, 2), (0, 2), (True, 2), (1, 3), ("a.csv", 2)):
        untouched = refusal(file, files)
        assert _with_file_named(untouched, ["z_tokyo.csv", "a.csv"]) is untouched
