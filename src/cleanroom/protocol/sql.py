"""The SQL part of a work spec: input schemas, analysis rules, queries (``runtime: sql``).

In a SQL clean room every input declares its schema, and its owner attaches an
analysis rule to it (after AWS Clean Rooms' analysis rules: ``aggregation``,
``list`` or ``custom``), optionally with differential privacy. The queries that
may run are named in the spec with typed parameters, and ad-hoc queries are
allowed only where the spec names who may send them. All of it is part of the
Work-ID, so every party approves every rule, and the Worker enforces the strictest
combination of them on every query (docs/privacy.md).

This module only describes and checks the spec: a rule that contradicts itself, a
column no schema declares, an unknown type are refused here, before any data
moves. The query checker itself runs in the Worker (:mod:`cleanroom.sql.rules`).
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cleanroom.errors import EXIT_USAGE, Error

SQL_RUNTIME = "sql"
SQL_HANDLER = "handler.run"
# The runtime whose DuckDB runs a SQL room's queries, in the function sandbox.
ENGINE_RUNTIME = "python3.11-data"

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
QueryName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")]
ObjectId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]

# Column types as DuckDB names them; nothing else is accepted (no nested types).
COLUMN_TYPES = ("bigint", "boolean", "date", "double", "integer", "timestamp", "varchar")
ColumnType = Literal["bigint", "boolean", "date", "double", "integer", "timestamp", "varchar"]
PARAMETER_TYPES = ("boolean", "date", "integer", "number", "text")
ParameterType = Literal["boolean", "date", "integer", "number", "text"]
AGGREGATE_FUNCTIONS = ("avg", "count", "count_distinct", "sum", "sum_distinct")
AggregateFunction = Literal["avg", "count", "count_distinct", "sum", "sum_distinct"]
OutputFormat = Literal["csv", "parquet"]
MAX_QUERY_TEXT = 1 << 16
HIDDEN_PREFIX = "__cr"  # columns the Worker adds to a query; no query may name one


class SpecRuleError(Error, ValueError):
    """A SQL part of the spec that cannot be used; the message names the check.

    Also a ``ValueError``: raised inside pydantic validators, which turn only that (and
    AssertionError) into a validation error; WorkSpec.parse then names its check.
    """

    exit_code = EXIT_USAGE

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"{check}: {message}")


_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


class Column(BaseModel):
    model_config = _STRICT
    name: Identifier
    type: ColumnType
    nullable: bool = True

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> object:
        if value not in COLUMN_TYPES:
            raise SpecRuleError(
                "schema-type", f"type {value!r} is not one of {', '.join(COLUMN_TYPES)}"
            )
        return value


class InputSchema(BaseModel):
    """An input's declared table: its file format and its columns, in order."""

    model_config = _STRICT
    format: Literal["csv", "parquet"]
    columns: list[Column] = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _unique(self) -> InputSchema:
        names = [column.name for column in self.columns]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SpecRuleError("schema-column", f"columns declared twice: {repeated}")
        if any(name.startswith(HIDDEN_PREFIX) for name in names):
            raise SpecRuleError("schema-column", f"no column may start with {HIDDEN_PREFIX}")
        return self

    def column(self, name: str) -> Column | None:
        return next((column for column in self.columns if column.name == name), None)


class Threshold(BaseModel):
    """At least ``minimum`` distinct values of ``column`` behind every released row."""

    model_config = _STRICT
    column: Identifier
    minimum: int = Field(ge=2, le=1_000_000)


MAX_DP_BOUND = 1e15
"""The largest |bound| of a summed column under differential privacy: sums of many such
values stay finite (and exact to the cent), whatever the data."""


class DifferentialPrivacy(BaseModel):
    """Noise calibrated by OpenDP on every aggregate; a total ε per room for this owner."""

    model_config = _STRICT
    identity: Identifier  # the privacy unit: one value of this column is one person
    epsilon: float = Field(gt=0, le=10)  # the most one query may spend
    budget: float = Field(gt=0, le=100)  # the most all queries together may spend
    delta: float = Field(default=1e-7, gt=0, le=1e-3)  # per query, for releasing groups
    max_contributions: int = Field(default=1, ge=1, le=1000)  # rows per identity
    # sums and averages are clamped to [low, high]
    bounds: dict[Identifier, Annotated[list[float], Field(min_length=2, max_length=2)]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> DifferentialPrivacy:
        if self.budget < self.epsilon:
            raise SpecRuleError(
                "rule-contradiction",
                f"budget {self.budget} is smaller than the ε of one query ({self.epsilon}):"
                " no query could ever run",
            )
        for column, (low, high) in self.bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise SpecRuleError(
                    "rule-contradiction", f"bounds of {column}: [{low}, {high}] is not a range"
                )
            if max(abs(low), abs(high)) > MAX_DP_BOUND:
                # Sums of values near 1e306 overflow to infinity, and whether the release
                # failed then depended on the data (found by the DP red team).
                raise SpecRuleError(
                    "rule-contradiction",
                    f"bounds of {column}: [{low}, {high}] go past ±{MAX_DP_BOUND:g}",
                )
        return self


class AnalysisRule(BaseModel):
    """One input owner's rule on what may be asked of its data (docs/privacy.md)."""

    model_config = _STRICT
    kind: Literal["aggregation", "list", "custom"]
    join_columns: list[Identifier] = []
    dimension_columns: list[Identifier] = []
    list_columns: list[Identifier] = []
    aggregate_columns: dict[Identifier, list[AggregateFunction]] = {}
    threshold: Threshold | None = None
    differential_privacy: DifferentialPrivacy | None = None
    allowed_queries: list[QueryName] | None = None  # custom: the spec's queries allowed
    # aggregation with a threshold: whether the runner learns how many groups fell under
    # it. Absent (or false) withholds the count: "WHERE region = 'tiny' AND zip = …"
    # suppressed 1 or 0 told whether a person with those values is in the data. Absent
    # is left out of the hashed JSON, so a spec that does not name it keeps its Work-ID.
    report_suppressed: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisRule:
        def contradiction(message: str) -> SpecRuleError:
            return SpecRuleError("rule-contradiction", f"{self.kind} rule: {message}")

        for name, columns in (
            ("join_columns", self.join_columns),
            ("dimension_columns", self.dimension_columns),
            ("list_columns", self.list_columns),
        ):
            if len(set(columns)) != len(columns):
                raise contradiction(f"{name} repeats a column")
        for column, functions in self.aggregate_columns.items():
            if not functions or len(set(functions)) != len(functions):
                raise contradiction(f"aggregate_columns.{column}: name each function once")
        if self.kind != "aggregation" and self.report_suppressed is not None:
            raise contradiction("report_suppressed belongs to an aggregation rule")
        if self.kind == "aggregation":
            if not self.aggregate_columns:
                raise contradiction("no aggregate_columns: no query could ever run")
            if self.threshold is None and self.differential_privacy is None:
                raise contradiction("needs a threshold or differential_privacy")
            if self.list_columns:
                raise contradiction("list_columns belong to a list rule")
            both = sorted(set(self.aggregate_columns) & set(self.dimension_columns))
            if both:
                raise contradiction(f"{both} are both dimension and aggregate columns")
            if self.allowed_queries is not None:
                raise contradiction("allowed_queries belong to a custom rule")
            if self.report_suppressed and self.threshold is None:
                raise contradiction("report_suppressed counts groups under a threshold: none")
            if self.report_suppressed and self.differential_privacy is not None:
                raise contradiction(
                    "report_suppressed: under differential privacy the count is never reported"
                )
        elif self.kind == "list":
            if not self.list_columns or not self.join_columns:
                raise contradiction("needs list_columns and join_columns")
            if self.aggregate_columns or self.dimension_columns:
                raise contradiction("aggregate or dimension columns belong to an aggregation rule")
            if self.threshold is not None or self.differential_privacy is not None:
                raise contradiction("a list releases rows: no threshold or noise applies")
            if self.allowed_queries is not None:
                raise contradiction("allowed_queries belong to a custom rule")
        else:
            if (
                self.join_columns
                or self.dimension_columns
                or self.list_columns
                or self.aggregate_columns
                or self.threshold is not None
            ):
                raise contradiction("a custom rule allows named queries only, no column lists")
            if self.differential_privacy is not None:
                raise contradiction("differential privacy needs the aggregation shape")
        return self

    def columns(self) -> set[str]:
        """Every column this rule names."""
        named = {*self.join_columns, *self.dimension_columns, *self.list_columns}
        named |= set(self.aggregate_columns)
        if self.threshold is not None:
            named.add(self.threshold.column)
        if self.differential_privacy is not None:
            named.add(self.differential_privacy.identity)
            named |= set(self.differential_privacy.bounds)
        return named


class Query(BaseModel):
    """A named query of the spec: its text, its typed parameters, where its rows go."""

    model_config = _STRICT
    text: str = Field(min_length=1, max_length=MAX_QUERY_TEXT)
    parameters: dict[Identifier, ParameterType] = {}
    output: ObjectId
    format: OutputFormat = "csv"
    epsilon: float | None = Field(default=None, gt=0, le=10)  # spent where DP applies


class AdHoc(BaseModel):
    """Ad-hoc queries: who may send them, where their rows go (under every rule)."""

    model_config = _STRICT
    runners: list[UserId] = Field(min_length=1)
    output: ObjectId
    format: OutputFormat = "csv"


class SqlSpec(BaseModel):
    """The ``sql`` object of a work spec whose runtime is ``sql``."""

    model_config = _STRICT
    schemas: dict[ObjectId, InputSchema]
    rules: dict[ObjectId, AnalysisRule]
    queries: dict[QueryName, Query] = {}
    adhoc: AdHoc | None = None

    def check(self, inputs: set[str], outputs: set[str]) -> None:
        """Cross-checks with the rest of the spec; SpecRuleError names the first failure."""
        if set(self.schemas) != inputs:
            raise SpecRuleError(
                "schema-inputs",
                f"one schema per input: {sorted(inputs)}, got {sorted(self.schemas)}",
            )
        if set(self.rules) != inputs:
            raise SpecRuleError(
                "rule-inputs",
                f"one analysis rule per input: {sorted(inputs)}, got {sorted(self.rules)}",
            )
        if not self.queries and self.adhoc is None:
            raise SpecRuleError("sql-queries", "no query and no ad-hoc runner: nothing could run")
        for input_id, rule in self.rules.items():
            schema = self.schemas[input_id]
            unknown = sorted(rule.columns() - {column.name for column in schema.columns})
            if unknown:
                raise SpecRuleError(
                    "rule-column", f"{input_id}'s rule names columns its schema lacks: {unknown}"
                )
            privacy = rule.differential_privacy
            for column in [] if privacy is None else privacy.bounds:
                declared = schema.column(column)
                if declared is None or declared.type not in ("bigint", "double", "integer"):
                    raise SpecRuleError(
                        "rule-contradiction", f"{input_id}: bounds for non-numeric {column}"
                    )
            for column, functions in rule.aggregate_columns.items():
                numeric = schema.column(column)
                if (
                    numeric is not None
                    and numeric.type not in ("bigint", "double", "integer")
                    and {"sum", "sum_distinct", "avg"} & set(functions)
                ):
                    raise SpecRuleError(
                        "rule-contradiction", f"{input_id}: sum or avg over non-numeric {column}"
                    )
                if (
                    privacy is not None
                    and {"sum", "avg"} & set(functions)
                    and column not in privacy.bounds
                ):
                    raise SpecRuleError(
                        "rule-contradiction",
                        f"{input_id}: {column} is summed under differential privacy without bounds",
                    )
            for name in rule.allowed_queries or []:
                if name not in self.queries:
                    raise SpecRuleError(
                        "rule-queries", f"{input_id}'s rule allows {name}, which is no query"
                    )
        for name, query in self.queries.items():
            if query.output not in outputs:
                raise SpecRuleError("query-output", f"query {name} writes to no output")
        if self.adhoc is not None and self.adhoc.output not in outputs:
            raise SpecRuleError("query-output", "ad-hoc queries write to no output")


_CALENDAR_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def check_parameters(query: Query, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values of a query's parameters, each of its declared type; SpecRuleError else."""
    if set(values) != set(query.parameters):
        raise SpecRuleError(
            "sql-parameter",
            f"query {name} takes parameters {sorted(query.parameters)}, got {sorted(values)}",
        )
    for key, value in values.items():
        expected = query.parameters[key]
        valid = {
            "integer": type(value) is int and abs(value) < 2**53,
            "number": (type(value) is int and abs(value) < 2**53)
            or (type(value) is float and math.isfinite(value)),
            "text": isinstance(value, str) and len(value) <= 4096,
            "boolean": type(value) is bool,
            "date": isinstance(value, str) and _is_date(value),
        }[expected]
        if not valid:
            raise SpecRuleError(
                "sql-parameter",
                f"parameter {key} of query {name} must be "
                f"{'a date (YYYY-MM-DD)' if expected == 'date' else expected}, "
                f"got {type(value).__name__}",
            )
    return values


def _is_date(value: str) -> bool:
    """A calendar date written ``YYYY-MM-DD``, and nothing else ``fromisoformat`` takes:
    an ISO week date of ten characters (``2026-W05-1``) passed, and DuckDB, which
    casts only calendar dates, made the query's answer empty."""
    if _CALENDAR_DATE.fullmatch(value) is None:
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True
