"""The synthetic data generators: reproducible, and their truth is what they wrote."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cleanroom.insecure.demodata import OverlapTruth, write_join_inputs, write_overlap_inputs


def read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_overlap_inputs_are_reproducible(tmp_path: Path) -> None:
    first = write_overlap_inputs(tmp_path / "1a", tmp_path / "1b", 2000, seed=5)
    second = write_overlap_inputs(tmp_path / "2a", tmp_path / "2b", 2000, seed=5)
    other = write_overlap_inputs(tmp_path / "3a", tmp_path / "3b", 2000, seed=6)
    assert first == second
    for side in ("a", "b"):
        data = (tmp_path / f"1{side}" / "customers.csv").read_bytes()
        assert data == (tmp_path / f"2{side}" / "customers.csv").read_bytes()
    assert (tmp_path / "1b" / "customers.csv").read_bytes() != (
        tmp_path / "3b" / "customers.csv"
    ).read_bytes()
    assert other != first


def test_overlap_truth_is_what_the_files_say(tmp_path: Path) -> None:
    # Spans several write chunks, so the chunking cannot drop or repeat rows.
    rows = 25_000
    truth = write_overlap_inputs(tmp_path / "a", tmp_path / "b", rows, overlap=0.4)
    header_a, *rows_a = read(tmp_path / "a" / "customers.csv")
    header_b, *rows_b = read(tmp_path / "b" / "customers.csv")
    assert (header_a, header_b) == (["email", "region"], ["email", "segment"])
    assert len(rows_a) == truth.rows_a == rows and len(rows_b) == truth.rows_b == rows
    region = dict(rows_a)  # A's emails are distinct and canonical
    segment: dict[str, str] = {}
    for email, value in rows_b:
        segment.setdefault(email.strip().lower(), value)
    assert len(region) == truth.distinct_a and len(segment) == truth.distinct_b
    expected: dict[tuple[str, str], int] = {}
    for email in region.keys() & segment.keys():
        cell = (region[email], segment[email])
        expected[cell] = expected.get(cell, 0) + 1
    assert expected == truth.crosstab
    assert sum(expected.values()) == truth.overlap
    assert abs(truth.overlap - 0.4 * rows) < 0.02 * rows
    # Some of B's addresses need normalising before they match.
    assert any(email != email.strip().lower() for email, _ in rows_b)


def test_overlap_truth_suppression() -> None:
    truth = OverlapTruth(1, 1, 1, 1, 16, {("n", "r"): 10, ("n", "p"): 9, ("s", "r"): 1})
    assert truth.suppressed(10) == ({("n", "r"): 10}, 10)


def test_no_rows_gives_headers_only(tmp_path: Path) -> None:
    truth = write_overlap_inputs(tmp_path / "a", tmp_path / "b", 0)
    assert read(tmp_path / "a" / "customers.csv") == [["email", "region"]]
    assert truth.overlap == 0 and truth.crosstab == {}


@pytest.mark.parametrize(("rows", "overlap"), [(-1, 0.3), (10, 1.5), (10, -0.1)])
def test_bad_arguments_are_refused(tmp_path: Path, rows: int, overlap: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        write_overlap_inputs(tmp_path / "a", tmp_path / "b", rows, overlap=overlap)
    with pytest.raises(ValueError, match="must be"):
        write_join_inputs(tmp_path / "a", tmp_path / "b", rows, overlap=overlap)


def test_join_inputs_are_reproducible(tmp_path: Path) -> None:
    first = write_join_inputs(tmp_path / "1a", tmp_path / "1b", 100, seed=2)
    second = write_join_inputs(tmp_path / "2a", tmp_path / "2b", 100, seed=2)
    assert first == second
    assert read(tmp_path / "1b" / "scores.csv") == read(tmp_path / "2b" / "scores.csv")
    assert read(tmp_path / "1a" / "accounts.csv")[0] == ["id", "name", "city"]
