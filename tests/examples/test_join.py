"""The join example, run as the Worker runs it, checked against known answers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cleanroom.insecure.demodata import write_join_inputs
from tests.examples.harness import Run, csv_text, run_example, workspace


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def handmade(tmp_path: Path, one: str, two: str, **parameters: str) -> Run:
    work = workspace(
        tmp_path, {"input_1": {"a.csv": one}, "input_2": {"b.csv": two}}, parameters=parameters
    )
    return run_example("join", work)


def test_the_join_equals_the_generators_truth(tmp_path: Path) -> None:
    work = workspace(tmp_path, {})
    truth = write_join_inputs(work / "inputs" / "input_1", work / "inputs" / "input_2", 300)
    run = run_example("join", work)
    assert run.returncode == 0, run.stderr
    header, *rows = rows_of(run.output("output_1", "joined.csv"))
    assert tuple(header) == truth.header
    assert [tuple(row) for row in rows] == list(truth.rows)
    assert len(truth.rows) > truth.matched_keys > 0  # some keys match twice
    summary = run.json("output_1", "summary.json")
    assert summary == {
        "key": "id",
        "inputs": {
            "input_1": {"rows": truth.rows_a, "rows_without_key": 0},
            "input_2": {"rows": truth.rows_b, "rows_without_key": 0},
        },
        "matched_keys": truth.matched_keys,
        "joined_rows": len(truth.rows),
        "columns": list(truth.header),
    }
    # The other party gets the counts, never the rows.
    assert run.files("output_2") == ["summary.json"]
    assert run.json("output_2", "summary.json") == summary


def test_key_parameter_order_prefixes_and_many_to_many(tmp_path: Path) -> None:
    one = csv_text("name,customer_id,note", ["Ann,7,a", "Bob,8,b", "Cy,7,c", "Dee,,d"])
    two = csv_text("customer_id,note,score", ["7,x,1", "9,y,2", "7,z,3", ",w,4"])
    run = handmade(tmp_path, one, two, key="customer_id")
    assert run.returncode == 0, run.stderr
    assert rows_of(run.output("output_1", "joined.csv")) == [
        ["customer_id", "name", "input_1.note", "input_2.note", "score"],
        ["7", "Ann", "a", "x", "1"],
        ["7", "Ann", "a", "z", "3"],
        ["7", "Cy", "c", "x", "1"],
        ["7", "Cy", "c", "z", "3"],
    ]
    summary = run.json("output_1", "summary.json")
    assert summary["matched_keys"] == 1 and summary["joined_rows"] == 4
    assert summary["inputs"]["input_1"] == {"rows": 4, "rows_without_key": 1}
    assert summary["inputs"]["input_2"] == {"rows": 4, "rows_without_key": 1}


def test_keys_match_exactly_and_fields_are_quoted(tmp_path: Path) -> None:
    one = csv_text("id,city", ['A1,"Paris, FR"', "a1,Rome", " A1,Oslo"])
    two = csv_text("id,score", ["A1,5"])
    run = handmade(tmp_path, one, two)
    assert run.returncode == 0, run.stderr
    assert rows_of(run.output("output_1", "joined.csv")) == [
        ["id", "city", "score"],
        ["A1", "Paris, FR", "5"],
    ]


def test_a_missing_key_column_is_refused(tmp_path: Path) -> None:
    run = handmade(tmp_path, csv_text("id,x", ["1,2"]), csv_text("key,y", ["1,2"]))
    assert run.returncode != 0
    assert "join: input_2: b.csv has no key column 'id' in its first line" in run.stderr
    assert run.files("output_1") == []


@pytest.mark.parametrize("key", ["", 3])
def test_a_bad_key_parameter_is_refused(tmp_path: Path, key: object) -> None:
    work = workspace(
        tmp_path,
        {"input_1": {"a.csv": "id\n1\n"}, "input_2": {"b.csv": "id\n1\n"}},
        parameters={"key": key},
    )
    run = run_example("join", work)
    assert run.returncode != 0
    assert "parameter key must be a non-empty column name" in run.stderr


def test_a_missing_input_csv_is_refused(tmp_path: Path) -> None:
    work = workspace(tmp_path, {"input_1": {"a.csv": "id\n1\n"}, "input_2": {"b.txt": "id\n"}})
    run = run_example("join", work)
    assert run.returncode != 0
    assert "join: input input_2 must hold exactly one .csv file, found none" in run.stderr
    assert run.files("output_1") == []


def test_a_short_row_is_refused_without_echoing_it(tmp_path: Path) -> None:
    run = handmade(tmp_path, csv_text("id,secret", ["1,hunter2", "2"]), "id\n1\n")
    assert run.returncode != 0
    assert "input_1: a.csv line 3 has 1 fields, expected 2" in run.stderr
    assert "hunter2" not in run.stderr
