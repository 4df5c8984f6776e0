"""Differential privacy's contribution bounding, measured in the engine's DuckDB: how far
one person moves the exact, bounded count that the noise is calibrated for."""

from __future__ import annotations

import json
import subprocess

import pytest
import sqlglot
from sqlglot import exp

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import installed_runtime
from cleanroom.sql import rules
from cleanroom.sql.rules import plan_query
from tests.sql.fixtures import both_under_dp, sql_spec


def engine_rows(
    sql: str, input_1: list[tuple[str, float | None]], input_2: list[tuple[str, str]]
) -> list[list[object]]:
    """The rows of a DP plan's ``sql`` (the engine's exact, bounded aggregates, before
    noise) in the data runtime's DuckDB, on input_1 rows (email, spend) of region "r"
    and input_2 rows (email, segment)."""
    try:
        runtime = installed_runtime("python3.11-data")
    except RunError as error:
        pytest.skip(f"the data runtime is not installed: {error}")
    script = (
        "import duckdb, json, sys\n"
        "sql, one, two = json.load(sys.stdin)\n"
        "con = duckdb.connect()\n"
        "con.execute('CREATE TABLE input_1 (email VARCHAR, region VARCHAR, zip VARCHAR,"
        " spend DOUBLE)')\n"
        "con.execute('CREATE TABLE input_2 (email VARCHAR, segment VARCHAR)')\n"
        "con.executemany(\"INSERT INTO input_1 VALUES (?, 'r', '1', ?)\", one)\n"
        "con.executemany('INSERT INTO input_2 VALUES (?, ?)', two)\n"
        "print(json.dumps([list(row) for row in con.execute(sql).fetchall()]))\n"
    )
    result = subprocess.run(
        [str(runtime.interpreter), "-I", "-c", script],
        input=json.dumps([sql, input_1, input_2]), capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    rows: list[list[object]] = json.loads(result.stdout)
    return rows


def bounded_count(sql: str, input_1: list[str], input_2: list[tuple[str, str]]) -> int:
    """The contribution-bounded row count of a DP plan's ``sql`` on these people."""
    rows = engine_rows(sql, [(email, 1.0) for email in input_1], input_2)
    return sum(int(str(row[-1])) for row in rows)


PEOPLE = [f"e{n}" for n in range(100)]
JOINED = (
    "SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b "
    "ON a.email = b.email GROUP BY a.region"
)


def test_one_person_moves_a_dp_count_by_its_contributions_at_most() -> None:
    """Two owners under DP, joined on their identities, one row per person: each person
    of either owner (here one with 100 rows of input_2) moves the bounded count by 1."""
    plan = plan_query(sql_spec(rules=both_under_dp()), name=None, text=JOINED)
    two = [(e, "s") for e in PEOPLE] + [("e0", f"s{n}") for n in range(100)]
    for _ in range(3):
        full = bounded_count(plan.sql, PEOPLE, two)
        assert full == 100
        assert full - bounded_count(plan.sql, PEOPLE, [r for r in two if r[0] != "e0"]) == 1
        assert full - bounded_count(plan.sql, PEOPLE[1:], two) == 1


def test_without_the_identity_join_one_person_moves_everyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why ``differential_privacy.identity`` refuses other joins (tests/sql/test_rules.py):
    with input_2's identity ``segment``, one segment joined to every customer changes
    which of their rows the first bounding keeps, and the count moves by about half the
    customers, against a bound of 1."""
    monkeypatch.setattr(rules, "_joined_on_identities", lambda checker, owners: None)
    # The bound after the join alone (each input's own bound before it hides the harm here).
    monkeypatch.setattr(rules, "_bound_before_joins", lambda *args: [])
    plan = plan_query(sql_spec(rules=both_under_dp(identity_2="segment")), name=None, text=JOINED)
    own = [(e, f"s{n}") for n, e in enumerate(PEOPLE)]
    with_b = bounded_count(plan.sql, PEOPLE, own + [(e, "b") for e in PEOPLE])
    without_b = bounded_count(plan.sql, PEOPLE, own)
    assert without_b == 100 and without_b - with_b > 10


def test_a_missing_value_is_neither_summed_nor_counted() -> None:
    """SUM and AVG skip a NULL, and so do their bounded forms: GREATEST skips a NULL
    argument, so a missing value was summed as the lower bound (here 10) and counted in
    AVG's divisor (found by the DP red team; accuracy, not privacy)."""
    rules = both_under_dp()
    rules["input_1"]["differential_privacy"]["bounds"] = {"spend": [10.0, 100.0]}
    text = "SELECT region, SUM(spend) AS s FROM input_1 GROUP BY region"
    plan = plan_query(sql_spec(rules=rules), name=None, text=text)
    rows = engine_rows(plan.sql, [("e0", 50.0), ("e1", None), ("e2", 1_000.0)], [("e0", "s")])
    # (group, rows, the bounded sum, how many values it adds up)
    assert rows == [["r", 3, 150.0, 2]]


def joined_rows(sql: str, input_1: list[str], input_2: list[tuple[str, str]]) -> int:
    """How many rows a DP plan's joins make (its ``__cr_rows``, before the bound after
    them) on these people."""
    probe = sqlglot.parse_one(sql, read="duckdb")
    probe.set("expressions", [exp.Count(this=exp.Star())])
    probe.set(
        "from_" if "from_" in probe.args else "from", exp.From(this=exp.to_table("__cr_rows"))
    )
    probe.set("group", None)
    rows = engine_rows(probe.sql("duckdb"), [(email, 1.0) for email in input_1], input_2)
    return int(str(rows[0][0]))


def test_another_owners_rows_of_one_person_do_not_grow_the_join() -> None:
    """Each input is bounded before the joins too (its identity's rows, or a list
    input's rows per join key), so another owner's many rows for one email do not make
    the join, and its time, depend on whether that person is in the first input: with
    20,000,000 rows of input_2 for 'target', the query took 4.4 s with her in input_1
    and 0.35 s without (DP red team 2, F5); now 1.3-1.9 s either way (rt/f5.py). Here
    10,000 such rows made 10,000 more joined rows; now one, and the count is the same."""
    plan = plan_query(sql_spec(rules=both_under_dp()), name=None, text=JOINED)
    two = [(e, "s") for e in PEOPLE] + [("target", f"s{n}") for n in range(10_000)]
    assert joined_rows(plan.sql, PEOPLE, two) == 100
    assert joined_rows(plan.sql, [*PEOPLE, "target"], two) == 101
    assert bounded_count(plan.sql, [*PEOPLE, "target"], two) == 101
    # A list input (no identity) is bounded per value of its join columns.
    listed = plan_query(
        sql_spec(dp=True), name=None,
        text="SELECT b.segment, COUNT(*) AS n FROM input_1 a JOIN input_2 b "
        "ON a.email = b.email GROUP BY b.segment",
    )  # fmt: skip
    assert joined_rows(listed.sql, [*PEOPLE, "target"], two) == 101
