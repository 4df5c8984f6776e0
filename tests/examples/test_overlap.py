"""The overlap example, run as the Worker runs it, checked against known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cleanroom.insecure.demodata import write_overlap_inputs
from tests.examples.harness import Run, csv_text, run_example, workspace


def generated(tmp_path: Path, rows: int, k: int, **options: Any) -> tuple[Run, Any]:
    work = workspace(tmp_path, {}, parameters={"k": k})
    truth = write_overlap_inputs(
        work / "inputs" / "input_1", work / "inputs" / "input_2", rows, **options
    )
    return run_example("overlap", work), truth


def crosstab(result: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(c["region"], c["segment"]): c["customers"] for c in result["crosstab"]}


def handmade(tmp_path: Path, one: list[str], two: list[str], **parameters: Any) -> Run:
    work = workspace(
        tmp_path,
        {
            "input_1": {"customers.csv": csv_text("email,region", one)},
            "input_2": {"customers.csv": csv_text("email,segment", two)},
        },
        parameters=parameters,
    )
    return run_example("overlap", work)


def test_counts_and_crosstab_equal_the_generators_truth(tmp_path: Path) -> None:
    run, truth = generated(tmp_path, 3000, k=1, seed=7)
    assert run.returncode == 0, run.stderr
    result = run.json("output_1", "result.json")
    assert result["overlap"] == truth.overlap > 0
    assert result["parties"] == {
        "input_1": {"rows": truth.rows_a, "distinct_customers": truth.distinct_a,
                    "rows_without_email": 0},
        "input_2": {"rows": truth.rows_b, "distinct_customers": truth.distinct_b,
                    "rows_without_email": 0},
    }  # fmt: skip
    assert truth.distinct_b < truth.rows_b  # the generator repeats some customers
    assert crosstab(result) == truth.crosstab
    assert result["suppressed"] == {"cells": 0, "customers": 0}


def test_suppression_matches_the_truth_at_a_larger_k(tmp_path: Path) -> None:
    run, truth = generated(tmp_path, 3000, k=40, seed=3)
    assert run.returncode == 0, run.stderr
    result = run.json("output_1", "result.json")
    kept, suppressed_customers = truth.suppressed(40)
    assert crosstab(result) == kept
    assert result["suppressed"] == {
        "cells": len(truth.crosstab) - len(kept),
        "customers": suppressed_customers,
    }
    assert suppressed_customers > 0 and kept  # both sides of the threshold exercised
    assert result["overlap"] == truth.overlap  # the total is not suppressed


def customers(prefix: str, count: int, attribute: str) -> list[str]:
    return [f"{prefix}{n}@example.com,{attribute}" for n in range(count)]


def test_cells_below_k_are_absent_and_a_cell_of_exactly_k_is_kept(tmp_path: Path) -> None:
    # Shared customers: 10 north/retail, 9 north/premium, 11 south/retail, 1 south/premium.
    one = (customers("nr", 10, "north") + customers("np", 9, "north")
           + customers("sr", 11, "south") + customers("sp", 1, "south")
           + customers("only-one", 5, "north"))  # fmt: skip
    two = (customers("nr", 10, "retail") + customers("np", 9, "premium")
           + customers("sr", 11, "retail") + customers("sp", 1, "premium")
           + customers("only-two", 30, "retail"))  # fmt: skip
    run = handmade(tmp_path, one, two, k=10)
    assert run.returncode == 0, run.stderr
    result = run.json("output_1", "result.json")
    assert result["k"] == 10
    assert result["overlap"] == 31
    assert crosstab(result) == {("north", "retail"): 10, ("south", "retail"): 11}
    assert result["suppressed"] == {"cells": 2, "customers": 10}
    text = run.output("output_1", "result.txt")
    assert "Suppressed: 10 customers in 2 cells." in text
    # Only released labels appear: "premium" exists only in suppressed cells.
    assert "premium" not in text


def test_k_defaults_to_10(tmp_path: Path) -> None:
    run = handmade(tmp_path, customers("a", 9, "north"), customers("a", 9, "retail"))
    assert run.returncode == 0, run.stderr
    result = run.json("output_1", "result.json")
    assert result["k"] == 10
    assert result["crosstab"] == []
    assert result["suppressed"] == {"cells": 1, "customers": 9}
    assert "No cell has 10 or more customers." in run.output("output_1", "result.txt")


@pytest.mark.parametrize("k", [0, -1, "10", 2.5, True, None, [10]])
def test_a_bad_k_is_refused(tmp_path: Path, k: Any) -> None:
    run = handmade(tmp_path, customers("a", 3, "north"), customers("a", 3, "retail"), k=k)
    assert run.returncode != 0
    assert "parameter k must be an integer >= 1" in run.stderr
    assert run.files("output_1") == [] and run.files("output_2") == []


def test_every_output_gets_the_same_result(tmp_path: Path) -> None:
    run = handmade(tmp_path, customers("a", 12, "north"), customers("a", 12, "retail"))
    assert run.returncode == 0, run.stderr
    for name in ("result.json", "result.txt"):
        assert run.output("output_1", name) == run.output("output_2", name)
    assert run.files("output_1") == ["result.json", "result.txt"]


def test_only_the_outputs_present_are_written(tmp_path: Path) -> None:
    work = workspace(
        tmp_path,
        {
            "input_1": {"a.csv": csv_text("email,region", customers("a", 12, "north"))},
            "input_2": {"b.csv": csv_text("email,segment", customers("a", 12, "retail"))},
        },
        outputs=("output_2",),
    )
    run = run_example("overlap", work)
    assert run.returncode == 0, run.stderr
    assert run.json("output_2", "result.json")["overlap"] == 12
    assert not (work / "outputs" / "output_1").exists()


def test_emails_are_normalised_before_matching(tmp_path: Path) -> None:
    one = ["alice@example.com,north", "bob@example.com,north", "carol@example.com,south"]
    two = [
        "  ALICE@Example.COM ,retail",  # case and surrounding whitespace: the same person
        "bob@example.com\t,retail",
        "carol @example.com,retail",  # inner whitespace is part of the address
        "Alice@example.com,premium",  # a repeat: the first row of a customer counts
    ]
    run = handmade(tmp_path, one, two, k=1)
    assert run.returncode == 0, run.stderr
    result = run.json("output_1", "result.json")
    assert result["overlap"] == 2
    assert crosstab(result) == {("north", "retail"): 2}
    assert result["parties"]["input_2"]["rows"] == 4
    assert result["parties"]["input_2"]["distinct_customers"] == 3


def test_no_email_reaches_an_output(tmp_path: Path) -> None:
    run, _ = generated(tmp_path, 500, k=1)
    assert run.returncode == 0, run.stderr
    for output_id in ("output_1", "output_2"):
        for name in run.files(output_id):
            assert "@" not in run.output(output_id, name)


def test_blank_emails_are_counted_not_matched(tmp_path: Path) -> None:
    one = ["a@example.com,north", " ,north", ",north"]
    two = ["a@example.com,retail", ",retail"]
    run = handmade(tmp_path, one, two, k=1)
    assert run.returncode == 0, run.stderr
    parties = run.json("output_1", "result.json")["parties"]
    assert parties["input_1"] == {"rows": 3, "distinct_customers": 1, "rows_without_email": 2}
    assert parties["input_2"] == {"rows": 2, "distinct_customers": 1, "rows_without_email": 1}


def test_header_is_matched_without_case_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    work = workspace(
        tmp_path,
        {
            "input_1": {"c.csv": "\ufeffId,Email,Region\n1,a@example.com,north\n"},
            "input_2": {"c.csv": "SEGMENT,EMAIL\nretail,a@example.com\n"},
        },
        parameters={"k": 1},
    )
    run = run_example("overlap", work)
    assert run.returncode == 0, run.stderr
    assert crosstab(run.json("output_1", "result.json")) == {("north", "retail"): 1}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "must hold exactly one .csv file, found none"),
        ({"notes.txt": "email,region\n"}, "must hold exactly one .csv file, found none"),
        ({"a.csv": "email,region\n", "b.csv": "email,region\n"}, "found ['a.csv', 'b.csv']"),
        ({"a.csv": ""}, "a.csv is empty"),
        ({"a.csv": "mail,region\nx@example.com,north\n"}, "needs exactly one column 'email'"),
        # No header: the first row is data, and must not be echoed.
        ({"a.csv": "a@example.com,north\n"}, "needs exactly one column 'email' in its first"),
        ({"a.csv": "email,region\na@example.com\n"}, "line 2 has 1 fields, expected 2"),
    ],
)
def test_a_bad_input_is_refused_clearly(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    work = workspace(
        tmp_path,
        {"input_1": files, "input_2": {"c.csv": csv_text("email,segment", ["a@x.com,retail"])}},
    )
    run = run_example("overlap", work)
    assert run.returncode != 0
    assert run.stderr.startswith("overlap: ") and "input_1" in run.stderr
    assert message in run.stderr
    assert "a@example.com" not in run.stderr  # errors name positions, not values
    assert run.files("output_1") == []


def test_a_missing_input_directory_is_refused(tmp_path: Path) -> None:
    work = workspace(tmp_path, {"input_1": {"c.csv": "email,region\n"}})
    run = run_example("overlap", work)
    assert run.returncode != 0
    assert "input input_2 is missing" in run.stderr
