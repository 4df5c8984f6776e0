"""What a data owner fears, against the query checker: each attempt refused with the
rule named (the room tests show the threshold and the budget on real data)."""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from cleanroom.errors import CheckFailed
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sql.rules import (
    QueryError,
    RuleViolation,
    _is_unit,
    check_spec_queries,
    plan_query,
)
from tests.sql.fixtures import (
    AGGREGATION_RULE,
    BY_SEGMENT,
    DP,
    SCHEMAS,
    both_under_dp,
    sql_document,
    sql_spec,
)

SPEC = sql_spec()


def refused(text: str, spec: WorkSpec = SPEC, **kwargs: Any) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        plan_query(spec, name=None, text=text, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        # raw rows under an aggregation rule
        ("SELECT email, spend FROM input_1", "aggregation.dimension_columns"),
        ("SELECT region FROM input_1", "aggregation.aggregation"),
        (
            "SELECT region, spend FROM input_1 GROUP BY region, spend",
            "aggregation.dimension_columns",
        ),
        (
            "SELECT region, COUNT(*) AS n, spend FROM input_1 GROUP BY region",
            "aggregation.dimension_columns",
        ),
        # singling out by a column that is not a dimension
        ("SELECT email, COUNT(*) FROM input_1 GROUP BY email", "aggregation.dimension_columns"),
        (
            "SELECT region, COUNT(*) FROM input_1 WHERE email = 'c1@x' GROUP BY region",
            "aggregation.dimension_columns",
        ),
        # aggregates the owner did not allow (MIN and MAX reveal one row's value)
        ("SELECT region, SUM(email) FROM input_1 GROUP BY region", "aggregation.aggregate_columns"),
        (
            "SELECT region, COUNT(DISTINCT spend) FROM input_1 GROUP BY region",
            "aggregation.aggregate_columns",
        ),
        # joining on a column that is not a join column
        (
            "SELECT a.region, COUNT(*) FROM input_1 a JOIN input_2 b ON a.region = b.segment "
            "GROUP BY a.region",
            "aggregation.join_columns",
        ),
        (
            "SELECT a.region, COUNT(*) FROM input_1 a LEFT JOIN input_2 b ON a.email = b.email "
            "GROUP BY a.region",
            "aggregation.join_operators",
        ),
        (
            "SELECT a.region, COUNT(*) FROM input_1 a, input_2 b GROUP BY a.region",
            "aggregation.join_operators",
        ),
        (
            "SELECT a.region, COUNT(*) FROM input_1 a JOIN input_2 b ON a.email = b.email "
            "OR a.region = b.segment GROUP BY a.region",
            "aggregation.join_operators",
        ),
        # a list is released only for the overlap, and only its list columns
        ("SELECT segment FROM input_2", "list.join_required"),
        (
            "SELECT b.email FROM input_2 b JOIN input_1 a ON a.email = b.email",
            "list.list_columns",
        ),
        # sub-queries, CTEs, window functions and UNIONs hiding a forbidden shape
        (
            "SELECT region, COUNT(*) FROM (SELECT * FROM input_1) t GROUP BY region",
            "aggregation.shape",
        ),
        (
            "WITH t AS (SELECT email AS region FROM input_1) SELECT region, COUNT(*) FROM t "
            "GROUP BY region",
            "aggregation.shape",
        ),
        (
            "SELECT region, COUNT(*) FROM input_1 WHERE region IN (SELECT email FROM input_1) "
            "GROUP BY region",
            "aggregation.shape",
        ),
        (
            "SELECT region, COUNT(*) FROM input_1 WHERE EXISTS (SELECT 1 FROM input_2) "
            "GROUP BY region",
            "aggregation.shape",
        ),
        ("SELECT region, COUNT(*) OVER (PARTITION BY email) FROM input_1", "aggregation.shape"),
        (
            "SELECT region, COUNT(*) FROM input_1 GROUP BY region UNION ALL "
            "SELECT email, 1 FROM input_1",
            "aggregation.shape",
        ),
        (
            "SELECT region, COUNT(*) FROM input_1 GROUP BY region QUALIFY COUNT(*) > 0",
            "aggregation.shape",
        ),
        ("SELECT region, COUNT(*) FROM input_1 GROUP BY ALL", "aggregation.shape"),
        ("SELECT * FROM input_1", "aggregation.shape"),
    ],
)
def test_a_shape_the_rules_forbid_is_refused_naming_the_rule(text: str, rule: str) -> None:
    error = refused(text)
    assert isinstance(error, RuleViolation), error
    assert error.check == rule
    assert "input_" in error.message  # whose rule it is


@pytest.mark.parametrize(
    ("text", "check"),
    [
        # reading a file, loading an extension, writing, configuring
        ("SELECT * FROM read_csv('/etc/passwd')", "sql-table"),
        ("SELECT region, COUNT(*) FROM '/etc/passwd' GROUP BY region", "sql-table"),
        (
            "SELECT region, COUNT(*) FROM read_parquet('/work/inputs/input_1/x') GROUP BY region",
            "sql-table",
        ),
        ("SELECT region, COUNT(*) FROM glob('/**') GROUP BY region", "sql-table"),
        ("COPY input_1 TO '/tmp/x.csv'", "sql-statement"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "sql-statement"),
        ("INSTALL httpfs", "sql-statement"),
        ("LOAD httpfs", "sql-statement"),
        ("ATTACH '/tmp/x.db'", "sql-statement"),
        ("SET enable_external_access = true", "sql-statement"),
        ("PRAGMA version", "sql-statement"),
        (
            "SELECT region, getenv('HOME') AS h, COUNT(*) FROM input_1 GROUP BY region",
            "sql-function",
        ),
        (
            "SELECT region, COUNT(*) FROM input_1 WHERE region = current_setting('x') "
            "GROUP BY region",
            "sql-function",
        ),
        ("SELECT region, COUNT(*) FROM main.input_1 GROUP BY region", "sql-table"),
        ("SELECT region, COUNT(*) FROM other GROUP BY region", "sql-table"),
        # a table read as something else: an identity renamed as a dimension, a sample,
        # time travel, an ordinality column
        (
            "SELECT a.region, COUNT(*) FROM input_1 AS a(region, email, zip, spend) "
            "GROUP BY a.region",
            "sql-table",
        ),
        ("SELECT region, COUNT(*) FROM input_1 TABLESAMPLE 50% GROUP BY region", "sql-table"),
        ("SELECT region, COUNT(*) FROM input_1 AT (VERSION => 1) GROUP BY region", "sql-table"),
        ("SELECT region, COUNT(*) FROM input_1 WITH ORDINALITY GROUP BY region", "sql-table"),
        ("SELECT region, COUNT(*) AS __cr_k_input_1 FROM input_1 GROUP BY region", "sql-column"),
        ("SELECT region, COUNT(*) FROM input_1 GROUP BY region; SELECT 1", "sql-parse"),
        ("SELECT FROM WHERE (", "sql-parse"),
        ("SELECT region, COUNT(*) FROM input_1 GROUP BY ROLLUP (region)", "sql-syntax"),
    ],
)
def test_files_extensions_and_other_statements_are_refused(text: str, check: str) -> None:
    error = refused(text)
    assert isinstance(error, QueryError), error
    assert error.check == check


@pytest.mark.parametrize(
    ("text", "modifier"),
    [
        ("SELECT region, COUNT(* EXCLUDE (email)) AS n FROM input_1 GROUP BY region", "EXCLUDE"),
        ("SELECT region, COUNT(* REPLACE (1 AS email)) AS n FROM input_1 GROUP BY region",
         "REPLACE"),
        ("SELECT region, COUNT(a.* EXCLUDE (email)) AS n FROM input_1 a GROUP BY region",
         "EXCLUDE"),
        ("SELECT region, SUM(* RENAME (spend AS s)) AS n FROM input_1 GROUP BY region",
         "RENAME"),
        ("SELECT region, COUNT(* ILIKE '%e%') AS n FROM input_1 GROUP BY region", "ILIKE"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region "
         "HAVING COUNT(* EXCLUDE (email)) > 3", "EXCLUDE"),
        ("SELECT * EXCLUDE (email) FROM input_2 b JOIN input_1 a ON a.email = b.email",
         "EXCLUDE"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("dp", [False, True])
def test_a_star_with_a_modifier_is_refused_by_name(text: str, modifier: str, dp: bool) -> None:
    """``COUNT(* EXCLUDE (email))`` was refused only by a catch-all (a column in a part of
    the query no rule reads), ``COUNT(* REPLACE (1 AS email))`` passed the checker whole
    (DuckDB's binder refused it): a star's modifiers name or compute columns no rule
    checks, and are refused as such, under a threshold and under DP alike."""
    error = refused(text, sql_spec(dp=dp))
    assert isinstance(error, QueryError), error
    assert error.check == "sql-star"
    assert f"no {modifier} on a star" in error.message


def test_an_allowed_query_is_rendered_with_the_threshold_column() -> None:
    plan = plan_query(SPEC, name="by_segment", parameters={"skip": "x' OR 1=1 --"})
    assert plan.thresholds == {"__cr_k_input_1": 3}
    assert "COUNT(DISTINCT a.email) AS __cr_k_input_1" in plan.sql
    # A parameter is a literal of its type, never text spliced into the query.
    assert "'x'' OR 1=1 --'" in plan.sql
    assert plan.inputs == ("input_1", "input_2")
    assert plan.rules == ("input_1: aggregation, at least 3 distinct email", "input_2: list")


def test_a_parameter_of_the_wrong_type_or_an_unknown_one_is_refused() -> None:
    for parameters in ({"skip": 3}, {}, {"skip": "x", "more": 1}):
        with pytest.raises(QueryError) as caught:
            plan_query(SPEC, name="by_segment", parameters=parameters)
        assert caught.value.check == "sql-parameter"
        assert str(caught.value).count("sql-parameter") == 1, str(caught.value)  # not twice
    assert refused(
        "SELECT region, COUNT(*) FROM input_1 WHERE region = $x GROUP BY region"
    ).check == ("sql-parameter")


@pytest.mark.parametrize(
    "value",
    ["2026-W05-1", "2026W051", "2026-W05", "20260126", "2026-1-26", "2026-01-26 ", "2026-02-30"],
)
def test_a_date_parameter_is_a_calendar_date_and_nothing_else(value: str) -> None:
    """``2026-W05-1`` (an ISO week date, ten characters, which ``fromisoformat`` reads as
    2026-01-26) passed the check, and DuckDB, which casts no week date, answered the
    query with nothing: refused now, as every form but ``YYYY-MM-DD``."""
    document = sql_document()
    document["sql"]["schemas"]["input_1"]["columns"].append({"name": "day", "type": "date"})
    document["sql"]["rules"]["input_1"]["dimension_columns"].append("day")
    document["sql"]["queries"]["since"] = {
        "text": "SELECT region, COUNT(DISTINCT email) AS n FROM input_1 "
        "WHERE day >= $since GROUP BY region",
        "parameters": {"since": "date"},
        "output": "output_1",
    }
    spec = WorkSpec.parse(document)
    plan = plan_query(spec, name="since", parameters={"since": "2026-01-26"})
    assert "CAST('2026-01-26' AS DATE)" in plan.sql
    with pytest.raises(QueryError) as caught:
        plan_query(spec, name="since", parameters={"since": value})
    assert caught.value.check == "sql-parameter"
    assert "YYYY-MM-DD" in caught.value.message


def test_custom_rules_allow_only_the_named_queries_their_owner_allowed() -> None:
    document = sql_document()
    document["sql"]["rules"]["input_2"] = {"kind": "custom", "allowed_queries": ["by_segment"]}
    spec = WorkSpec.parse(document)
    plan_query(spec, name="by_segment", parameters={"skip": "x"})
    error = refused("SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email "
                    "GROUP BY b.segment", spec)  # fmt: skip
    assert error.check == "custom.allowed_queries"


def test_differential_privacy_shapes_and_epsilon() -> None:
    spec = sql_spec(dp=True)
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    plan = plan_query(spec, name=None, text=text)
    assert plan.dp is not None and plan.dp.epsilon == 1.0
    assert "ROW_NUMBER() OVER (PARTITION BY __cr_id_input_1" in plan.sql
    assert refused(text, spec, epsilon=1.5).check == "differential_privacy.epsilon"
    assert (
        refused(text, spec, spent={"input_1": Fraction(3, 2)}).check
        == "differential_privacy.budget"
    )
    # ε that is not a positive number would pass the budget's comparisons and be charged;
    # an integer past any float (JSON holds one) raised OverflowError, not a refusal
    for epsilon in (0.0, -1.0, float("-inf"), float("nan"), 10**400, -(10**400)):
        assert refused(text, spec, epsilon=epsilon).check == "differential_privacy.epsilon"
    for shape in (text + " HAVING COUNT(*) > 5", text + " ORDER BY n", text + " LIMIT 1"):
        assert refused(shape, spec).check == "differential_privacy.shape"


def test_a_spent_budget_refuses_an_epsilon_below_its_ulp() -> None:
    """The budget is compared exactly (h29): with floats and a slack of 1e-12, a budget
    of 2 spent to the last digit took a query of ε 1e-16 (2 + 1e-16 == 2), and the next,
    for ever; 1e-13 passed the slack."""
    spec = sql_spec(dp=True)
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    for epsilon in (1e-16, 1e-13, 5e-324):
        error = refused(text, spec, epsilon=epsilon, spent={"input_1": Fraction(2)})
        assert error.check == "differential_privacy.budget"
    almost = Fraction(2) - Fraction("1e-16")
    assert plan_query(spec, name=None, text=text, epsilon=1e-16, spent={"input_1": almost}).dp
    assert refused(text, spec, epsilon=2e-16, spent={"input_1": almost}).check == (
        "differential_privacy.budget"
    )
    assert (
        refused("SELECT region, COUNT(*) + 1 AS n FROM input_1 GROUP BY region", spec).check
        == "differential_privacy.aggregate"
    )


def test_joins_compare_columns_of_one_type() -> None:
    """DuckDB casts a VARCHAR joined to an INTEGER (or a DATE to a TIMESTAMP) and fails on
    the values that do not cast: ``a.region = b.code WHERE a.zip = '10039'`` failed
    exactly when someone has that zip (tests/sql/test_engine.py measures it), under
    differential privacy at any ε and past any threshold. Join columns are of one type,
    or both numbers."""
    document = sql_document(dp=True)
    document["sql"]["schemas"]["input_2"]["columns"] += [
        {"name": "code", "type": "integer"}, {"name": "day", "type": "date"},
        {"name": "at", "type": "timestamp"}, {"name": "big", "type": "bigint"},
    ]  # fmt: skip
    document["sql"]["schemas"]["input_1"]["columns"] += [
        {"name": "since", "type": "timestamp"}, {"name": "n", "type": "integer"}
    ]  # fmt: skip
    document["sql"]["rules"]["input_1"]["join_columns"] = ["email", "region", "since", "n"]
    document["sql"]["rules"]["input_2"]["join_columns"] = ["email", "code", "day", "at", "big"]
    spec = WorkSpec.parse(document)
    template = (
        "SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b ON {} "
        "WHERE a.zip = '10039' GROUP BY a.region"
    )
    for condition in ("a.region = b.code", "a.since = b.day", "a.region = b.day"):
        caught = refused(template.format(condition), spec)
        assert caught.check == "aggregation.join_operators", (condition, caught)
        assert "one type" in str(caught.expected)
    for condition in ("a.email = b.email", "a.n = b.big", "a.since = b.at", "a.n = b.code"):
        plan_query(spec, name=None, text=template.format(condition))


def test_differential_privacy_spends_delta_in_proportion_to_epsilon() -> None:
    """The budget counts ε only: with the owner's whole δ for any ε, 10,000 queries of ε
    2e-4 (a budget of 2) added up to δ = 10 at 1e-3 each, and a group of one person was
    released in about 9 of 10,000 of them (measured with OpenDP's threshold): almost
    surely once. Each query's δ is the owner's δ * its share of the owner's ε, so the
    δs of all queries add up to at most δ * budget / ε."""
    document = sql_document(dp=True)
    document["sql"]["rules"]["input_1"]["differential_privacy"].update(
        delta=1e-3, epsilon=1.0, budget=2.0
    )
    spec = WorkSpec.parse(document)
    text = "SELECT zip, COUNT(*) AS n FROM input_1 GROUP BY zip"
    full = plan_query(spec, name=None, text=text)
    assert full.dp is not None and full.dp.delta == pytest.approx(1e-3)
    small = plan_query(spec, name=None, text=text, epsilon=2e-4)
    assert small.dp is not None and small.dp.delta == pytest.approx(2e-7)
    assert 10_000 * small.dp.delta <= 1e-3 * 2.0 / 1.0 * (1 + 1e-9)
    # Two owners: each owner's own proportion, the smallest of them.
    rules = both_under_dp()
    rules["input_2"]["differential_privacy"].update(epsilon=0.5, delta=1e-6)
    two = plan_query(sql_spec(rules=rules), name=None, text=JOINED, epsilon=0.25)
    assert two.dp is not None and two.dp.delta == pytest.approx(2.5e-7)  # input_1: 1e-6 * 0.25 / 1


def test_a_threshold_alone_is_not_read_beside_another_owners_differential_privacy() -> None:
    """On the DP path a threshold counts noisy rows, not distinct people: the DP owner
    joined 200 rows of its own to one customer of the thresholded input, and that
    customer's zip was released under a minimum of 3. Such a query is refused; each
    input alone, or both under DP, is planned."""
    both = {"input_1": copy.deepcopy(AGGREGATION_RULE), "input_2": copy.deepcopy(AGGREGATION_RULE)}
    for rule in both.values():
        rule["dimension_columns"] = [c for c in rule["dimension_columns"] if c != "zip"]
    both["input_2"].update(
        dimension_columns=["segment"], aggregate_columns={"email": ["count", "count_distinct"]}
    )
    both["input_2"]["differential_privacy"] = {**copy.deepcopy(DP), "bounds": {}}
    mixed = sql_spec(rules=both)
    joined = ("SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b "
              "ON a.email = b.email GROUP BY a.region")  # fmt: skip
    caught = refused(joined, mixed)
    assert caught.check == "aggregation.threshold", caught
    assert "input_1" in str(caught)
    alone = "SELECT segment, COUNT(*) AS n FROM input_2 GROUP BY segment"
    assert plan_query(mixed, name=None, text=alone).dp is not None
    both["input_1"]["differential_privacy"] = copy.deepcopy(DP)
    assert plan_query(sql_spec(rules=both), name=None, text=joined).dp is not None


JOINED = (
    "SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b "
    "ON a.email = b.email GROUP BY a.region"
)


def test_inputs_under_differential_privacy_are_joined_on_their_identities() -> None:
    """Two owners' contributions are bounded one after the other on the joined rows: with
    identities that differ on a row, one person of one owner moves other people's rows
    (tests/sql/test_dp_bounding.py measures it). Joined on their identities, of one exact
    type, every joined row is one person's."""
    by_segment = sql_spec(rules=both_under_dp(identity_2="segment"))
    caught = refused(JOINED, by_segment)
    assert caught.check == "differential_privacy.identity", caught
    assert caught.expected == (
        "the inputs under differential privacy joined on input_1.email = input_2.segment"
    )
    same = sql_spec(rules=both_under_dp())
    assert plan_query(same, name=None, text=JOINED).dp is not None
    # Each input alone needs no join.
    alone = "SELECT segment, COUNT(*) AS n FROM input_2 GROUP BY segment"
    assert plan_query(by_segment, name=None, text=alone).dp is not None
    schemas = copy.deepcopy(SCHEMAS)
    # integer = bigint: numbers DuckDB compares (aggregation.join_operators lets them
    # through), but not identities of one exact type.
    for kind_1, kind_2 in (("integer", "bigint"), ("double", "double")):
        schemas["input_1"]["columns"][0]["type"] = kind_1
        schemas["input_2"]["columns"][0]["type"] = kind_2
        kind = f"{kind_1} = {kind_2}"
        caught = refused(JOINED, sql_spec(rules=both_under_dp(), schemas=schemas))
        assert caught.check == "differential_privacy.identity", (kind, caught)


def test_differential_privacy_releases_every_group_by_key() -> None:
    """A GROUP BY key left out of the SELECT would merge several groups into one released
    key (the values of whichever the engine returned last: one person can change which)."""
    spec = sql_spec(dp=True)
    for text in (
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region, zip <> '10005'",
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region, zip",
        "SELECT region, region AS r, COUNT(*) AS n FROM input_1 GROUP BY region",
    ):
        assert refused(text, spec).check == "differential_privacy.shape", text
    # Dimensions are released under their names whatever the order of the SELECT.
    plan = plan_query(
        spec, name=None, text="SELECT zip, region, COUNT(*) AS n FROM input_1 GROUP BY region, zip"
    )
    assert plan.dp is not None and plan.dp.groups == ("region", "zip")


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda d: d["sql"]["schemas"]["input_1"]["columns"][1].update(type="text"), "schema-type"),
        (
            lambda d: d["sql"]["schemas"]["input_1"]["columns"][1].update(type="map(varchar,int)"),
            "schema-type",
        ),
        (
            lambda d: d["sql"]["rules"]["input_1"].update(dimension_columns=["region", "spend"]),
            "rule-contradiction",
        ),
        (lambda d: d["sql"]["rules"]["input_1"].update(aggregate_columns={}), "rule-contradiction"),
        (lambda d: d["sql"]["rules"]["input_1"].update(threshold=None), "rule-contradiction"),
        (
            lambda d: d["sql"]["rules"]["input_2"].update(
                threshold={"column": "email", "minimum": 5}
            ),
            "rule-contradiction",
        ),
        (
            lambda d: d["sql"]["rules"]["input_1"].update(
                differential_privacy={"identity": "email", "epsilon": 2.0, "budget": 1.0}
            ),
            "rule-contradiction",
        ),
        (
            lambda d: d["sql"]["rules"]["input_1"].update(
                differential_privacy={"identity": "email", "epsilon": 1.0, "budget": 2.0}
            ),
            "rule-contradiction",
        ),  # spend is summed without bounds
        (
            lambda d: d["sql"]["rules"]["input_1"].update(
                differential_privacy={
                    "identity": "email",
                    "epsilon": 1.0,
                    "budget": 2.0,
                    "bounds": {"spend": [5.0, 1.0]},
                }
            ),
            "rule-contradiction",
        ),
        (
            lambda d: d["sql"]["rules"]["input_1"].update(
                differential_privacy={
                    "identity": "email",
                    "epsilon": 1.0,
                    "budget": 2.0,
                    "bounds": {"spend": [0.0, 1e306]},
                }
            ),
            "rule-contradiction",
        ),  # sums of such values overflow to infinity, depending on the data
        (lambda d: d["sql"]["rules"]["input_1"].update(join_columns=["mail"]), "rule-column"),
        (lambda d: d["sql"]["rules"].pop("input_2"), "rule-inputs"),
        (lambda d: d["sql"]["schemas"].pop("input_2"), "schema-inputs"),
        (lambda d: d["sql"]["queries"]["by_segment"].update(output="output_9"), "query-output"),
        (lambda d: d.update(logs="output_1"), "sql-logs"),
        (lambda d: d.update(handler="handler.main"), "sql-engine"),
        (lambda d: d.update(runtime="python3.11-data"), "sql-runtime"),
    ],
)
def test_a_spec_that_cannot_be_used_is_refused_naming_the_check(change: Any, check: str) -> None:
    document = copy.deepcopy(sql_document())
    change(document)
    with pytest.raises(MessageFormatError) as caught:
        WorkSpec.parse(document)
    assert caught.value.check == check


def test_a_named_query_that_does_not_parse_or_breaks_a_rule_is_refused_at_deploy() -> None:
    cases = [
        ("SELECT FROM WHERE (", "sql-parse"),
        ("SELECT email FROM input_1", "aggregation.dimension_columns"),
    ]
    for text, check in cases:
        document = sql_document()
        document["sql"]["queries"]["by_segment"]["text"] = text
        document["sql"]["queries"]["by_segment"]["parameters"] = {}
        with pytest.raises(CheckFailed) as caught:
            check_spec_queries(WorkSpec.parse(document))
        assert caught.value.check == check
        assert "query by_segment" in caught.value.message
    assert BY_SEGMENT  # the fixture's own query passes (the room tests run it)


def test_the_sql_spec_has_a_work_id_and_refuses_a_non_canonical_ad_hoc_runner() -> None:
    assert SPEC.work_id != sql_spec(dp=True).work_id
    document = sql_document()
    document["sql"]["adhoc"]["runners"] = [document["runners"][0][:-1] + "1"]
    with pytest.raises(MessageFormatError):
        WorkSpec.parse(document)


def test_a_bare_word_passes_only_as_a_unit() -> None:
    """sqlglot keeps some bare words as words (exp.Var), not columns: the checker lets
    them through only where DuckDB reads them as a unit, never as a name."""
    units = [
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE EXTRACT(YEAR FROM zip) = 1 "
        "GROUP BY region",
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE zip > INTERVAL 1 DAY GROUP BY region",
        "SELECT DATE_TRUNC('month', zip) AS m, COUNT(*) AS n FROM input_1 "
        "GROUP BY DATE_TRUNC('month', zip)",
    ]
    for text in units:
        tree = sqlglot.parse_one(text, read="duckdb")
        words = list(tree.find_all(exp.Var))
        assert words and all(_is_unit(word) for word in words), text
    tree = sqlglot.parse_one("SELECT 1 FROM t WHERE zip COLLATE nocase = 'x'", read="duckdb")
    assert not any(_is_unit(word) for word in tree.find_all(exp.Var))
    error = refused(
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE zip COLLATE nocase = 'x' GROUP BY region"
    )
    assert error.check == "sql-syntax"
    assert error.actual == "nocase"


def list_room() -> WorkSpec:
    """Both inputs under list rules: input_1 lists only ``region`` (its email, zip and
    spend are hidden), input_2 its ``segment``."""
    document = sql_document(queries={})
    document["sql"]["rules"]["input_1"] = {
        "kind": "list", "join_columns": ["email"], "list_columns": ["region"],
    }  # fmt: skip
    return WorkSpec.parse(document)


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        # DISTINCT ON a hidden column: the number of rows released says whether c39's
        # spend is above 40 (a binary search gave it to 0.01 in 14 queries) ...
        pytest.param(
            list_room(), "SELECT DISTINCT ON (CASE WHEN a.email = 'c39@x' AND a.spend > 40 "
            "THEN 1 ELSE 0 END) a.region FROM input_1 a JOIN input_2 b ON a.email = b.email",
            id="distinct-on-hidden-value",
        ),
        # ... and through any DuckDB function: the run fails exactly when c39 is there
        pytest.param(
            list_room(), "SELECT DISTINCT ON (CASE WHEN a.email = 'c39@x' THEN error('x') END) "
            "a.region FROM input_1 a JOIN input_2 b ON a.email = b.email",
            id="distinct-on-error",
        ),
        pytest.param(
            list_room(), "SELECT DISTINCT ON (b.segment) b.segment FROM input_1 a "
            "JOIN input_2 b ON a.email = b.email",
            id="distinct-on-list-column",
        ),
        # a second argument of COUNT, which no check read
        pytest.param(
            SPEC, "SELECT region, COUNT(email, spend) AS n FROM input_1 GROUP BY region",
            id="count-second-argument",
        ),
    ],
)  # fmt: skip
def test_no_part_of_a_query_escapes_the_checks(spec: WorkSpec, text: str) -> None:
    """Each clause's check reads the parts of it it knows; DuckDB runs the whole tree.
    DISTINCT ON's list was read by none (list shape), so any column of any input went,
    through any function, into which rows were released and whether the run failed."""
    error = refused(text, spec)
    assert error.check in ("list.shape", "sql-syntax", "sql-function"), error
    assert "DISTINCT ON" in str(error) or "no rule reads" in str(error), error


@pytest.mark.parametrize(
    "text",
    [
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE region = 'a' OR (zip = '1' AND "
        "NOT region LIKE 'b%') GROUP BY region HAVING COUNT(*) > 1 AND SUM(spend) < 9 "
        "ORDER BY n DESC, region LIMIT 5",
        "SELECT LOWER(a.region) AS r, b.segment, COUNT(DISTINCT a.email) AS n, AVG(a.spend) "
        "FROM input_1 a JOIN input_2 b ON a.email = b.email WHERE COALESCE(a.zip, '') <> '' "
        "GROUP BY LOWER(a.region), b.segment ORDER BY ROUND(AVG(a.spend), 1)",
    ],
)
def test_every_part_a_check_reads_still_passes(text: str) -> None:
    plan_query(SPEC, name=None, text=text)
    plan_query(list_room(), name=None, text="SELECT DISTINCT a.region, b.segment FROM input_1 a "
               "JOIN input_2 b ON a.email = b.email WHERE a.region = 'x' OR b.segment = 'y' "
               "ORDER BY a.region LIMIT 3")  # fmt: skip


def test_an_ad_hoc_query_is_no_longer_nor_deeper_than_the_checker_takes() -> None:
    """The Worker checks a query under the room's lock: an ad-hoc text of 750 KB (what
    a request holds) held it 97 s (measured), and one nested a few thousand deep raised
    out of the checker, not as a refusal."""
    long = (
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE region = '"
        + "x" * 70_000
        + "' GROUP BY region"
    )
    error = refused(long)
    assert isinstance(error, QueryError)
    assert (error.check, error.actual) == ("sql-text", len(long))
    deep = (
        "SELECT region, COUNT(*) AS n FROM input_1 WHERE "
        + "NOT " * 5000
        + "region = 'a' GROUP BY region"
    )
    error = refused(deep)
    assert isinstance(error, QueryError)
    assert error.check == "sql-parse"
    assert error.actual == "nested too deep"


def test_an_order_by_position_is_one_of_the_querys_own_columns() -> None:
    """The Worker appends a column per threshold (its distinct count) to the query it
    renders: ORDER BY 3 of a query of two columns ordered the released groups by how
    many people each has (measured: 10 people spending 10 in all before 3 spending 300,
    where ORDER BY s DESC puts them the other way), under a rule that allows no count."""
    document = sql_document(queries={})
    document["sql"]["rules"]["input_1"]["aggregate_columns"] = {"spend": ["sum"]}
    spec = WorkSpec.parse(document)
    text = "SELECT region, SUM(spend) AS s FROM input_1 GROUP BY region ORDER BY {} DESC LIMIT 1"
    error = refused(text.format(3), spec)
    assert isinstance(error, RuleViolation)
    assert error.check == "aggregation.shape"
    assert "position" in error.message
    plan = plan_query(spec, name=None, text=text.format(2))
    # Then every column of the query's own, so that ties depend on nothing but the rows.
    assert plan.sql.endswith("ORDER BY 2 DESC, 1 ASC, 2 ASC LIMIT 1")


def test_a_join_names_the_input_it_joins() -> None:
    """``JOIN input_3 c ON a.email = b.email`` compared the two inputs before it and
    joined input_3 to every row, a cross join the rules refuse when written as one."""
    document = sql_document(queries={})
    document["inputs"]["input_3"] = document["inputs"]["input_2"]
    document["sql"]["schemas"]["input_3"] = copy.deepcopy(SCHEMAS["input_1"])
    document["sql"]["rules"]["input_3"] = copy.deepcopy(AGGREGATION_RULE)
    spec = WorkSpec.parse(document)
    text = (
        "SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b ON a.email = b.email "
        "JOIN input_3 c ON {} GROUP BY a.region"
    )
    error = refused(text.format("a.email = b.email"), spec)
    assert isinstance(error, RuleViolation)
    assert (error.check, error.actual) == ("aggregation.join_operators", "a.email = b.email")
    plan_query(spec, name=None, text=text.format("c.email = b.email"))


@pytest.mark.parametrize(
    "text",
    [
        # an interval made of an aggregate: DuckDB casts it to INT32 and fails past 2^31
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region "
        "HAVING INTERVAL (SUM(spend) * 1e7) DAY > INTERVAL 1 DAY",
        # an interval times an aggregate: "Overflow in multiplication of INTERVAL"
        "SELECT region, (TIMESTAMP '2020-01-01' - TIMESTAMP '1000-01-01') * SUM(spend) AS x "
        "FROM input_1 GROUP BY region",
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region "
        "ORDER BY DATE '2020-01-01' + CAST(SUM(spend) AS INTEGER)",
    ],
)
def test_arithmetic_on_aggregates_stays_in_numbers(text: str) -> None:
    """Whether a query runs must not depend on the data, and TRY cannot hold an
    aggregate: an interval or a time made of aggregates failed the run exactly when a
    sum was large (measured: east's 865 x 1e7 past INT32, the run failed)."""
    error = refused(text)
    assert isinstance(error, QueryError)
    assert error.check == "sql-syntax"
    for allowed in (
        "SELECT region, ROUND(AVG(spend), 1) AS a FROM input_1 GROUP BY region "
        "HAVING CAST(SUM(spend) AS VARCHAR) LIKE '8%' AND CAST(COUNT(*) AS DECIMAL(9, 2)) > 1",
    ):
        plan_query(SPEC, name=None, text=allowed)


@pytest.mark.parametrize(
    "text",
    [
        "WITH INPUT_1 AS (SELECT * FROM INPUT_1) SELECT * FROM INPUT_1",
        "SELECT * FROM INPUT_1, (WITH INPUT_1 AS (SELECT 1 AS x) SELECT * FROM INPUT_1) AS s",
        "SELECT region, COUNT(*) AS n FROM Input_1 GROUP BY region",
    ],
)
def test_an_input_is_read_by_its_own_name_only(text: str) -> None:
    """DuckDB folds the case of names, the checker did not: the first query read input_1
    row by row for DuckDB while the checker saw no input read, so no rule applied (it
    ran on nothing only because the engine loads just the inputs a plan names)."""
    error = refused(text)
    assert error.check == "sql-table"
    assert error.expected == "input_1"


@pytest.mark.parametrize(
    ("text", "check", "says"),
    [
        # DuckDB refuses these whatever the data: refused here, by name
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT 150 PERCENT",
         "aggregation.shape", "percentage"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT 9223372036854775808",
         "aggregation.shape", "number of rows"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region ORDER BY n LIMIT 1 WITH TIES",
         "aggregation.shape", "WITH_TIES"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT 1 ROWS",
         "aggregation.shape", "ROWS"),
        # a sample is taken before the groups, so before the threshold: refused by name
        # (it was refused only because of its method, a bare word: SYSTEM)
        ("SELECT region, COUNT(*) AS n FROM input_1 USING SAMPLE 50% GROUP BY region",
         "aggregation.shape", "sample"),
        ("SELECT region, COUNT(*) AS n FROM input_1 USING SAMPLE 10 ROWS GROUP BY region",
         "aggregation.shape", "sample"),
        ("SELECT region, COUNT(*) AS n FROM input_1 TABLESAMPLE 50% GROUP BY region",
         "sql-table", "sample"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT 1 OFFSET 1",
         "aggregation.shape", "OFFSET"),
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region QUALIFY n > 3",
         "aggregation.shape", "QUALIFY"),
    ],
)  # fmt: skip
def test_a_limit_is_a_count_or_a_percentage_of_groups_and_no_sample_is_taken(
    text: str, check: str, says: str
) -> None:
    """``LIMIT n`` and ``LIMIT p PERCENT`` are taken of the groups left after every
    threshold (tests/sql/test_engine.py); anything else of the kind is refused by name."""
    error = refused(text)
    assert error.check == check
    assert says in error.message
    grouped = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT {}"
    for allowed in ("50 PERCENT", "50%", "0", "9223372036854775807"):
        plan_query(SPEC, name=None, text=grouped.format(allowed))
    dp = refused(
        "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region LIMIT 50 PERCENT",
        sql_spec(dp=True),
    )
    assert dp.check == "differential_privacy.shape"


@pytest.mark.parametrize(
    "text",
    [
        'SELECT "region", COUNT(*) AS n FROM input_1 GROUP BY "region" ORDER BY region',
        'SELECT region, COUNT(*) AS n FROM input_1 GROUP BY "REGION" ORDER BY "Region"',
        "SELECT A.Region, COUNT(*) AS N FROM input_1 a GROUP BY a.REGION ORDER BY n DESC",
        'SELECT LOWER("Zip") AS z, SUM(Spend) AS s FROM input_1 GROUP BY lower(zip) '
        "HAVING SUM(SPEND) > 1 ORDER BY Z",
        # a comment stays with the node it follows, and made "region" another text
        "SELECT region /* where */, COUNT(*) AS n -- how many\n"
        "FROM input_1 GROUP BY region /* by region */ ORDER BY region -- sorted",
        # a column named by its input or not: one column for DuckDB
        "SELECT region, COUNT(*) AS n FROM input_1 a GROUP BY a.region ORDER BY A.Region",
        "SELECT LOWER(a.region) AS r, COUNT(*) AS n FROM input_1 a GROUP BY LOWER(region) "
        "ORDER BY LOWER(a.region)",
        'SELECT "Aé".region, COUNT(*) AS n FROM input_1 AS "Aé" GROUP BY region',
    ],
)
def test_names_are_compared_as_duckdb_resolves_them(text: str) -> None:
    """DuckDB compares names in any case, quoted or not: ``GROUP BY "region" ORDER BY
    region`` was refused as a column not grouped by, ``A.Region`` of ``FROM input_1 a`` as
    an unknown table (an honest analyst's query); so was a ``GROUP BY region /* … */``."""
    plan = plan_query(SPEC, name=None, text=text)
    assert "__cr_d0" in plan.sql
    assert "/*" not in plan.sql
    dp = plan_query(
        sql_spec(dp=True), name=None, text=text.split(" HAVING ")[0].split(" ORDER ")[0]
    )
    assert dp.dp is not None


@pytest.mark.parametrize(
    ("text", "check"),
    [
        # a hidden column is still hidden in any case or quoting
        ('SELECT "EMAIL", COUNT(*) AS n FROM input_1 GROUP BY "EMAIL"',
         "aggregation.dimension_columns"),
        ("SELECT region, COUNT(*) AS n FROM input_1 WHERE Email = 'c1@x' GROUP BY region",
         "aggregation.dimension_columns"),
        ('SELECT region, MAX("Spend") AS m FROM input_1 GROUP BY region', "sql-function"),
        ('SELECT region, SUM("EMAIL") AS m FROM input_1 GROUP BY region',
         "aggregation.aggregate_columns"),
        # DuckDB folds ASCII letters only: "É" is not "é", the Kelvin sign is not "k"
        ('SELECT "REGİON", COUNT(*) AS n FROM input_1 GROUP BY "REGİON"', "sql-column"),
        # two aliases of one input in two cases are one alias twice
        ("SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 A ON a.email = A.email "
         "GROUP BY a.region", "sql-table"),
    ],
)  # fmt: skip
def test_a_name_in_another_case_is_checked_as_the_column_it_names(text: str, check: str) -> None:
    error = refused(text)
    assert error.check == check
