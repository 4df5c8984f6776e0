"""Every query of a SQL room against every owner's analysis rule, with a real SQL parser.

:func:`plan_query` parses the query with sqlglot (DuckDB's dialect), replaces its
``$name`` parameters with literals of their declared types, walks the whole tree
against an allow-list of node types for the shape the rules permit, and checks
each column against the rule of the input it belongs to. What it returns, the
:class:`QueryPlan`, holds the SQL the engine runs: rendered by sqlglot from the
checked tree (never the text the runner wrote), with the columns the Worker needs
to enforce the rules added (distinct identities behind each row, or the
contribution-bounded aggregates that differential privacy adds noise to).

Shapes (docs/privacy.md):

- any input under an ``aggregation`` rule: one SELECT of dimension columns and
  allowed aggregates, inner joins on join columns, WHERE on dimension columns,
  GROUP BY every dimension it selects; no sub-query, CTE, window, set operation;
- else any input under a ``list`` rule: one SELECT of list columns, joined with
  another input on join columns, no aggregate (``COUNT(*)`` included);
- an input under a ``custom`` rule: only the spec's named queries its owner
  allowed, any read-only shape over the inputs, never a table function.

A refusal is a :class:`RuleViolation` naming the rule (``aggregation.dimension_columns``,
``list.join_required``, ``custom.allowed_queries``, …) and the input whose owner set it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cleanroom.errors import CheckFailed
from cleanroom.protocol.query_receipt import query_sha256
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.sql import (
    HIDDEN_PREFIX,
    MAX_QUERY_TEXT,
    AnalysisRule,
    DifferentialPrivacy,
    SpecRuleError,
    check_parameters,
)

DIALECT = "duckdb"


# sqlglot's arguments of a star, as DuckDB writes them.
STAR_MODIFIERS = {"except_": "EXCLUDE", "replace": "REPLACE", "rename": "RENAME", "ilike": "ILIKE"}


class QueryError(CheckFailed):
    """A query that is not one read-only statement over the inputs (it does not parse,
    is not a SELECT, reads a file, calls a function outside the allow-list)."""


class RuleViolation(CheckFailed):
    """A query whose shape an owner's analysis rule forbids; ``check`` names the rule."""


# Scalar functions a query may call on dimensions (AWS Clean Rooms' scalarFunctions,
# narrowed): each pure, none reads anything but its arguments.
SCALAR_FUNCTIONS: tuple[type[exp.Expr], ...] = (
    exp.Lower, exp.Upper, exp.Trim, exp.Substring, exp.Length, exp.Coalesce, exp.Abs,
    exp.Round, exp.Floor, exp.Ceil, exp.DateTrunc, exp.TimestampTrunc, exp.Extract,
    exp.Year, exp.Month, exp.Day, exp.Concat, exp.DPipe, exp.Cast, exp.TryCast,
    exp.Least, exp.Greatest, exp.Left, exp.Right, exp.Nullif, exp.Case, exp.If,
)  # fmt: skip
# The tree of a value: literals, parameters, columns and operators.
VALUE_NODES: tuple[type[exp.Expr], ...] = (
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Neg,
    exp.Not, exp.And, exp.Or, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Is, exp.In, exp.Between,
    exp.Like, exp.ILike, exp.DataType, exp.DataTypeParam, exp.Var, exp.Tuple, exp.When,
    exp.Interval,
)  # fmt: skip
AGGREGATES: dict[type[exp.Expr], str] = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg"}
# The types arithmetic on aggregates may cast to (HAVING, ORDER BY, SELECT).
AGGREGATE_TYPES = (*exp.DataType.NUMERIC_TYPES, *exp.DataType.TEXT_TYPES, exp.DataType.Type.BOOLEAN)
MAX_DP_KEY_CHARS = 256
"""The characters of a released group's key under differential privacy (longer keys are
cut): what a query makes the size of its exact groups depend on is their number only."""
MAX_DP_KEY_BYTES = 256
"""The bytes of a DP group key's JSON text (quotes aside) in the engine's exact groups:
the engine cuts a key of 256 characters further where its UTF-8 and escapes need more
(``KEY_BYTES`` in the engine's handler, which imports nothing from here)."""
MAX_DP_NUMBER_BYTES = 24
"""The JSON text of an aggregate in the exact groups, at most: a count (19 digits), a
sum of doubles (``repr``: -1.2345678901234567e-308), null, NaN, Infinity."""

# Declared types a join may compare: within a kind DuckDB's implicit cast never fails
# (numbers to the wider number); across kinds it casts text to a number, a date or a
# boolean, and fails on the values that are not one. A date is not compared with a
# timestamp: a DATE beyond the TIMESTAMP range (5877642-06-25) fails the cast.
JOIN_KINDS: dict[str, frozenset[str]] = {
    "text": frozenset({"varchar"}),
    "number": frozenset({"integer", "bigint", "double"}),
    "date": frozenset({"date"}),
    "timestamp": frozenset({"timestamp"}),
    "boolean": frozenset({"boolean"}),
}
# A custom rule's named queries may also use these (the owner read and allowed them).
CUSTOM_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order,
    exp.Ordered, exp.Limit, exp.Offset, exp.Distinct, exp.Alias, exp.TableAlias, exp.Table,
    exp.Star, exp.With, exp.CTE, exp.Subquery, exp.Union, exp.Intersect, exp.Except,
    exp.Window, exp.RowNumber, exp.Min, exp.Max, exp.Count, exp.Sum, exp.Avg,
    exp.Qualify, exp.Exists,
)  # fmt: skip
SELECT_CLAUSES = {"expressions", "from_", "from", "joins", "where", "group", "having", "order",
                  "limit", "distinct"}  # fmt: skip
CLAUSE_NAMES = {"with_": "a CTE (WITH)", "with": "a CTE (WITH)", "qualify": "QUALIFY",
                "windows": "a WINDOW clause",
                "sample": "a sample (USING SAMPLE, TABLESAMPLE)", "laterals": "LATERAL",
                "pivots": "PIVOT", "offset": "OFFSET", "into": "INTO"}  # fmt: skip


@dataclass(frozen=True)
class DpAggregate:
    output: str  # the column name the recipient sees
    kind: str  # count_rows | count | sum | avg
    value: str | None  # the hidden column of the (clamped) value, for count | sum | avg
    bound: float  # max |value| after clamping (sums and averages), 1 for counts
    low: float = 0.0
    high: float = 0.0


@dataclass(frozen=True)
class DpPlan:
    """A query under differential privacy: what the Worker adds noise to, and for whom."""

    epsilon: float
    delta: float
    owners: dict[str, DifferentialPrivacy]  # input id -> its owner's DP option
    groups: tuple[str, ...]  # output names of the group columns (__cr_g<i> in the rows)
    aggregates: tuple[DpAggregate, ...]
    minimum: int  # the largest threshold any owner set (applied to the noisy count)
    line_bytes: int = 0  # the longest line of the engine's exact groups (rows.jsonl)

    def most_bytes(self, rows: Mapping[str, int]) -> int:
        """At most how many bytes the engine's exact groups of this query take, whatever
        the data: a group holds at least one of the contribution-bounded rows, of which
        each owner's input gives at most its rows times ``max_contributions`` (``rows``: the
        rows the Worker counted in each input at its upload), and each group's line is
        at most ``line_bytes``, counted here as the next power of two. The power of two
        keeps what a refusal on this bound tells a runner to the binary order of
        magnitude of an input's rows: a query cannot tune the bound to a row count."""
        groups = 1
        if self.groups:
            groups = min(rows[i] * option.max_contributions for i, option in self.owners.items())
        return groups * (1 << max(self.line_bytes - 1, 0).bit_length())


def dp_line_bytes(keys: int, numbers: list[str]) -> int:
    """The longest line the engine writes for a group of ``keys`` keys (``__cr_g<i>``)
    and these numbers, as ``json.dumps`` of one dict per line writes it."""
    fields = [len(f'"{HIDDEN_PREFIX}_g{i}": ') + MAX_DP_KEY_BYTES + 2 for i in range(keys)] + [
        len(f'"{name}": ') + MAX_DP_NUMBER_BYTES for name in numbers
    ]
    return 2 + sum(fields) + 2 * max(len(fields) - 1, 0) + 1


@dataclass(frozen=True)
class QueryPlan:
    sql: str  # what the engine runs: rendered from the checked tree
    text_sha256: str  # of the query text as written (hex)
    name: str | None  # the spec's query, or None for an ad-hoc one
    inputs: tuple[str, ...]  # what it reads
    rules: tuple[str, ...]  # every rule applied, e.g. "input_1: aggregation threshold>=10"
    thresholds: dict[str, int] = field(default_factory=dict)  # hidden column -> minimum
    # The query's groups before HAVING, ORDER BY and LIMIT, with only the hidden
    # threshold columns: the engine counts the suppressed ones from it.
    groups_sql: str | None = None
    # Whether the runner learns how many groups the thresholds suppressed: only where
    # every owner whose threshold applies set report_suppressed (a query under no
    # threshold suppresses nothing, whatever the data: 0). Never under DP.
    report_suppressed: bool = False
    dp: DpPlan | None = None
    output: str = ""
    format: str = "csv"


def parse(text: str) -> exp.Expr:
    """One statement in DuckDB's dialect; QueryError ``sql-parse`` otherwise."""
    try:
        statements = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
    except SqlglotError as error:
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise QueryError("sql-parse", "one SQL statement", "does not parse", first) from error
    if len(statements) != 1:
        raise QueryError("sql-parse", "one SQL statement", len(statements), "one query at a time")
    statement = statements[0]
    if not isinstance(statement, exp.Select | exp.SetOperation) or isinstance(
        statement, exp.Command
    ):
        raise QueryError(
            "sql-statement", "a SELECT", type(statement).__name__.upper(), "only queries run here"
        )
    return statement


def _literal(kind: str, value: Any) -> exp.Expr:
    if kind == "boolean":
        return exp.Boolean(this=bool(value))
    if kind in ("integer", "number"):
        return exp.Literal.number(value)
    if kind == "date":
        return exp.Cast(this=exp.Literal.string(value), to=exp.DataType.build("DATE"))
    return exp.Literal.string(value)


def _sample(kind: str) -> Any:
    return {"boolean": True, "integer": 1, "number": 1.5, "date": "2000-01-01", "text": "x"}[kind]


def bind(tree: exp.Expr, types: Mapping[str, str], values: Mapping[str, Any]) -> exp.Expr:
    """Each ``$name`` replaced by a literal of its declared type (never by text)."""

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = node.name
            if not name or name not in types:
                raise QueryError(
                    "sql-parameter", f"one of ${', $'.join(sorted(types))}", f"${name}" if name
                    else "an unnamed placeholder", "a parameter the query does not declare",
                )  # fmt: skip
            return _literal(types[name], values[name])
        return node

    return tree.transform(replace, copy=True)


class _Scope:
    """The inputs a single SELECT reads, by alias, with their rules and schemas."""

    def __init__(self, spec: WorkSpec, select: exp.Select, ctes: set[str]) -> None:
        assert spec.sql is not None
        self.spec, self.sql = spec, spec.sql
        self.aliases: dict[str, str] = {}
        tables = [select.args.get("from_") or select.args.get("from")]
        tables += list(select.args.get("joins") or [])
        for holder in tables:
            if holder is None:
                continue
            table = holder.this
            if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
                raise QueryError(
                    "sql-table", "an input table", table.sql(DIALECT)[:120],
                    "a query reads the room's inputs only (no file, function or sub-query here)",
                )  # fmt: skip
            name = table.this.name
            if (
                table.this.quoted
                or any(table.args.get(k) for k in ("db", "catalog"))
                or (name not in spec.inputs and name not in ctes)
            ):
                raise QueryError(
                    "sql-table", f"one of the inputs {sorted(spec.inputs)}",
                    table.sql(DIALECT)[:120],
                    "a query reads the room's inputs only",
                )  # fmt: skip
            # Nothing but the name and an alias: column aliases (``input_1 AS a(x, y)``)
            # would rename one column as another (an identity as a dimension) past every
            # rule, and a sample, time travel or ordinality changes what is read.
            extra = sorted(k for k, v in table.args.items() if v and k not in ("this", "alias"))
            alias_node = table.args.get("alias")
            if alias_node is not None and alias_node.args.get("columns"):
                extra.append("column aliases")
            if extra:
                raise QueryError(
                    "sql-table", "an input table with at most an alias",
                    table.sql(DIALECT)[:120],
                    f"a table is read as it is ({', '.join(extra)} not allowed)",
                )  # fmt: skip
            alias = table.alias_or_name
            if alias in self.aliases or name in self.aliases.values():
                raise QueryError(
                    "sql-table", "each input once", name, "an input read twice (self-join)"
                )
            self.aliases[alias] = name

    @property
    def inputs(self) -> list[str]:
        return sorted(name for name in self.aliases.values() if name in self.spec.inputs)

    def rule(self, input_id: str) -> AnalysisRule:
        return self.sql.rules[input_id]

    def resolve(self, column: exp.Column) -> tuple[str, str]:
        """(input id, column name) of a column reference; QueryError if none or ambiguous."""
        name = column.name
        if column.args.get("db") or column.args.get("catalog"):
            raise QueryError("sql-column", "table.column", column.sql(DIALECT), "bad reference")
        if column.table:
            input_id = self.aliases.get(column.table)
            if input_id is None or input_id not in self.spec.inputs:
                raise QueryError("sql-column", sorted(self.aliases), column.table, "unknown table")
            if self.sql.schemas[input_id].column(name) is None:
                raise QueryError("sql-column", f"a column of {input_id}", name, "no such column")
            return input_id, name
        owners = [i for i in self.inputs if self.sql.schemas[i].column(name) is not None]
        if len(owners) != 1:
            raise QueryError(
                "sql-column", "a column of exactly one input", name,
                "ambiguous column: name its table" if owners else "no such column",
            )  # fmt: skip
        return owners[0], name


def _violation(input_id: str, rule: AnalysisRule, clause: str, expected: object,
               actual: object, message: str) -> RuleViolation:  # fmt: skip
    return RuleViolation(
        f"{rule.kind}.{clause}", expected, actual, f"{input_id}'s {rule.kind} rule: {message}"
    )


def _hidden_names(tree: exp.Expr) -> None:
    for node in tree.walk():
        if isinstance(node, exp.Identifier) and node.name.lower().startswith(HIDDEN_PREFIX):
            raise QueryError(
                "sql-column", f"no name starting {HIDDEN_PREFIX}", node.name, "reserved"
            )


def _inputs_by_their_names(spec: WorkSpec, tree: exp.Expr) -> None:
    """A table or CTE named like an input in another case is refused (``sql-table``).

    DuckDB folds the case of names and the checker does not: ``WITH INPUT_1 AS (SELECT *
    FROM INPUT_1) SELECT * FROM INPUT_1`` read input_1 row by row for DuckDB, while the
    checker saw no input read (so no rule applied) and a CTE of that name. It ran on
    nothing only because the engine loads just the inputs a plan names."""
    inputs = {name.casefold(): name for name in spec.inputs}
    names: list[tuple[str, exp.Expr]] = [(t.name, t) for t in tree.find_all(exp.Table)]
    names += [(c.alias_or_name, c) for c in tree.find_all(exp.CTE)]
    for name, node in names:
        exact = inputs.get(name.casefold())
        if exact is not None and name != exact:
            raise QueryError(
                "sql-table", exact, node.sql(DIALECT)[:120],
                "an input is named as it is (DuckDB reads names in any case as the same)",
            )  # fmt: skip


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """A name as DuckDB compares it: ASCII letters in lower case, quoted or not (DuckDB
    2.0: ``"CITY"``, ``City`` and ``city`` name one column; ``"É"`` is not ``"é"``)."""
    return name.translate(_ASCII_LOWER)


_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _fold_names(select: exp.Expr) -> None:
    """Every column reference and table alias of a checked shape, in place, as DuckDB
    resolves it: folded (:func:`fold`), and quoted exactly when the folded name is not a
    plain word (sqlglot quotes a keyword, ``"current_date"``, when it renders one), so
    that the checks compare names as DuckDB binds them, whatever the runner quoted.

    Compared as written, ``GROUP BY "city" … ORDER BY city`` was refused as a column not
    grouped by, and ``a.region`` of ``FROM input_1 A`` as an unknown table: the checker
    took one name for two where DuckDB takes them for one. A column's name and its
    input's schema cannot differ only by case either: a schema's names are lower case
    (``schema-column``), and DuckDB refuses two columns of one table differing by case."""
    names: list[exp.Expr] = []
    for column in select.find_all(exp.Column):
        names += [part for part in column.parts if isinstance(part, exp.Identifier)]
    for table in select.find_all(exp.Table):
        alias = table.args.get("alias")
        if alias is not None and isinstance(alias.this, exp.Identifier):
            names.append(alias.this)
    for identifier in names:
        folded = fold(identifier.name)
        identifier.set("this", folded)
        identifier.set("quoted", _PLAIN_NAME.fullmatch(folded) is None)


def _drop_comments(select: exp.Expr) -> None:
    """No comment of the runner's in a checked shape, in place. The checks compare parts
    of the query by their text, and sqlglot keeps a comment with the node it follows:
    ``GROUP BY region /* by region */`` was refused as a selected column not grouped by.
    DuckDB runs the tree as rendered, so what a comment said was never run anyway."""
    for node in select.walk():
        node.comments = None


def _is_unit(node: exp.Var) -> bool:
    """The unit of EXTRACT, INTERVAL or DATE_TRUNC (sqlglot parses those as words)."""
    parent = node.parent
    if isinstance(parent, exp.Extract):
        return node.arg_key == "this"
    units = (exp.Interval, exp.DateTrunc, exp.TimestampTrunc)
    return isinstance(parent, units) and node.arg_key == "unit"


def _forbidden_shape(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Subquery) or (isinstance(node, exp.Select) and node.parent):
        return "a sub-query"
    if isinstance(node, exp.With | exp.CTE):
        return "a CTE (WITH)"
    if isinstance(node, exp.Window):
        return "a window function"
    if isinstance(node, exp.SetOperation):
        return "a set operation (UNION, INTERSECT, EXCEPT)"
    return None


class _Checker:
    """The aggregation and list shapes, one SELECT, against each input's rule."""

    def __init__(self, spec: WorkSpec, select: exp.Select, shape: str, read: list[str]) -> None:
        assert spec.sql is not None
        self.select, self.shape = select, shape
        self.rules_by_input = {i: spec.sql.rules[i] for i in read}
        self.checked: set[int] = set()  # the Column nodes a clause's check has read
        for node in select.walk():  # before the tables: a sub-query in FROM is a shape
            what = _forbidden_shape(node)
            if what is not None and node is not select:
                raise self.fail_shape(what, node)
        self.scope = _Scope(spec, select, set())

    def key(self, node: exp.Expr) -> str:
        """``node``'s text with each bare column named by the input it resolves to, as
        DuckDB binds it: what the checks compare expressions by. ``GROUP BY a.region``
        and ``SELECT region`` over ``FROM input_1 a`` are one expression for DuckDB; as
        texts they were two, and the query was refused as a column not grouped by. A name
        that resolves to no input, or to more than one, stays as it is (and is refused
        where it is checked)."""
        qualified = node.copy()
        for column in qualified.find_all(exp.Column):
            if column.table or not isinstance(column.this, exp.Identifier):
                continue
            try:
                input_id, _name = self.scope.resolve(column)
            except QueryError:
                continue
            alias = next(a for a, i in self.scope.aliases.items() if i == input_id)
            quoted = _PLAIN_NAME.fullmatch(alias) is None  # as _fold_names quotes it
            column.set("table", exp.to_identifier(alias, quoted=quoted))
        return qualified.sql(DIALECT)

    def listed_position(self, key: exp.Expr) -> int | None:
        """The place (from 1) among the query's columns of an ORDER BY ``key``: a position,
        an output column's name, or an expression listed as it is; None for any other."""
        if isinstance(key, exp.Literal) and key.is_int:
            return int(key.name)
        items = self.select.expressions
        if isinstance(key, exp.Column) and not key.table:
            named = [
                p
                for p, i in enumerate(items, 1)
                if isinstance(i, exp.Alias) and fold(i.alias) == key.name
            ]
            if named:
                return named[0]
        text = self.key(key)
        return next((p for p, i in enumerate(items, 1) if self.key(i.unalias()) == text), None)

    def strict_rules(self) -> dict[str, AnalysisRule]:
        return {i: r for i, r in self.rules_by_input.items() if r.kind != "custom"}

    def fail_shape(self, what: str, node: exp.Expr) -> RuleViolation:
        input_id, rule = next(
            (i, r) for i, r in self.rules_by_input.items() if r.kind == self.shape
        )
        return _violation(
            input_id, rule, "shape", f"one SELECT of the {self.shape} shape", what,
            f"{what} is not allowed ({node.sql(DIALECT)[:80]})",
        )  # fmt: skip

    def check(self) -> None:
        for key, value in self.select.args.items():
            if value and key not in SELECT_CLAUSES:
                raise self.fail_shape(CLAUSE_NAMES.get(key, key.upper()), self.select)
        distinct = self.select.args.get("distinct")
        if distinct is not None and any(distinct.args.values()):
            # DISTINCT ON (expression): which rows are released, and how many, would
            # follow any column of any input, through any function DuckDB has.
            raise self.fail_shape("SELECT DISTINCT ON", distinct)
        for node in self.select.find_all(exp.Var):
            # A bare word is a unit (EXTRACT(YEAR FROM d), INTERVAL 1 DAY), never a name
            # DuckDB could resolve to a column the rules did not see.
            if not _is_unit(node):
                raise QueryError(
                    "sql-syntax", "a column, a literal or a unit", node.sql(DIALECT),
                    "a bare word is allowed only as the unit of EXTRACT, INTERVAL or DATE_TRUNC",
                )  # fmt: skip
        for star in self.select.find_all(exp.Star):
            # A star's modifiers name columns (EXCLUDE, RENAME) or compute values (REPLACE)
            # that no rule checks: COUNT(* REPLACE (1 AS email)) passed the checker whole
            # (DuckDB's binder refused it), COUNT(* EXCLUDE (email)) was refused only as a
            # column in a part of the query no rule reads.
            modifiers = [
                STAR_MODIFIERS.get(key, key.upper()) for key, value in star.args.items() if value
            ]
            if modifiers:
                around = star.find_ancestor(*AGGREGATES) or star.parent or star
                raise QueryError(
                    "sql-star", "* alone, as in COUNT(*)", around.sql(DIALECT)[:120],
                    f"no {', '.join(modifiers)} on a star: it names columns no rule checks",
                )  # fmt: skip
        self.check_joins()
        aggregated = False
        for item in self.select.expressions:
            target = item.this if isinstance(item, exp.Alias) else item
            if isinstance(target, exp.Star):
                raise self.violation_everywhere(
                    "shape", "named columns", "SELECT *", "name every column"
                )
            if any(isinstance(n, tuple(AGGREGATES)) for n in target.walk()):
                self.check_aggregate_expression(target)
                aggregated = True
            else:
                self.check_value(target, "select")
        if self.shape == "aggregation" and not aggregated:
            raise self.violation_everywhere(
                "aggregation", "aggregated output", "raw rows",
                "rows are released only as aggregates (COUNT, SUM, AVG)",
            )  # fmt: skip
        where = self.select.args.get("where")
        if where is not None:
            self.check_value(where.this, "where")
        self.check_grouping(aggregated)
        having = self.select.args.get("having")
        if having is not None:
            self.check_aggregate_expression(having.this)
        order = self.select.args.get("order")
        aliases = {fold(i.alias) for i in self.select.expressions if isinstance(i, exp.Alias)}
        for ordered in order.expressions if order is not None else []:
            key = ordered.this
            # DuckDB binds a bare name in ORDER BY to an output column first, in any case.
            if isinstance(key, exp.Column) and not key.table and key.name in aliases:
                self.checked.add(id(key))  # an output column, checked where it is selected
                continue
            if isinstance(key, exp.Literal) and key.is_int:
                # A position: among the query's own columns only. The Worker appends its
                # own (the distinct count of each threshold), and ORDER BY 3 of a query
                # of two ordered the groups by how many people each has, where the rule
                # allowed no count.
                if not 1 <= int(key.name) <= len(self.select.expressions):
                    raise self.fail_shape("ORDER BY a position past the selected columns", ordered)
                continue
            if any(isinstance(n, tuple(AGGREGATES)) for n in key.walk()):
                self.check_aggregate_expression(key)
            else:
                self.check_value(key, "select")
        if self.shape == "list":
            for ordered in order.expressions if order is not None else []:
                if self.listed_position(ordered.this) is None:
                    raise self.fail_shape(
                        "ORDER BY a value not listed (a listing's rows are distinct)", ordered
                    )
        limit = self.select.args.get("limit")
        if limit is not None:
            self.check_limit(limit)
        if self.select.args.get("distinct") and self.shape == "aggregation":
            raise self.fail_shape("SELECT DISTINCT", self.select)
        self.check_nothing_unread()

    def check_limit(self, limit: exp.Expr) -> None:
        """``LIMIT n`` (0 <= n < 2**63) or ``LIMIT p PERCENT`` (0 <= p <= 100), nothing else.

        Either is taken of the groups left after every threshold, in the second SELECT
        (``_groups_first``), so neither decides which groups pass one; under differential
        privacy there is no LIMIT at all. ``WITH TIES``, ``ROWS ONLY``, ``LIMIT … BY`` and a
        number DuckDB refuses (``LIMIT 150 PERCENT``, a count past BIGINT) are refused here,
        by name, rather than in the engine."""
        options = limit.args.get("limit_options")
        percent = options is not None and bool(options.args.get("percent"))
        extra = sorted(
            k for k, v in limit.args.items() if v and k not in ("expression", "limit_options")
        )
        if options is not None:
            extra += sorted(k.upper() for k, v in options.args.items() if v and k != "percent")
        value = limit.expression
        most = 100 if percent else 2**63 - 1
        if extra or not (
            isinstance(value, exp.Literal) and value.is_int and 0 <= int(value.name) <= most
        ):
            raise self.fail_shape(
                f"a LIMIT other than a number of rows (at most {2**63 - 1}) or a percentage "
                f"(at most 100){' (' + ', '.join(extra) + ')' if extra else ''}",
                limit,
            )  # fmt: skip

    def check_nothing_unread(self) -> None:
        """Every column and function of the SELECT was read by the check of its clause.

        The checks above read the parts of each clause they know; DuckDB runs the whole
        tree. A part no check reads (the list of ``DISTINCT ON (…)``, a second argument
        of ``COUNT``) would put any column, through any DuckDB function, into what is
        released: refused (``sql-syntax``), whatever it is."""
        functions = (*VALUE_NODES, *SCALAR_FUNCTIONS, *AGGREGATES)  # AND, OR are Funcs too
        for node in self.select.walk():
            if isinstance(node, exp.Column) and id(node) not in self.checked:
                raise QueryError(
                    "sql-syntax", "columns only where a rule checks them",
                    node.sql(DIALECT)[:120], "a column in a part of the query no rule reads",
                )  # fmt: skip
            if isinstance(node, exp.Func) and not isinstance(node, functions):
                raise self.unknown(node)

    def violation_everywhere(self, clause: str, expected: object, actual: object,
                             message: str) -> RuleViolation:  # fmt: skip
        input_id, rule = next(
            (i, r) for i, r in self.rules_by_input.items() if r.kind == self.shape
        )
        return _violation(input_id, rule, clause, expected, actual, message)

    def check_joins(self) -> None:
        joined: set[str] = set()
        for join in self.select.args.get("joins") or []:
            extra = {k for k, v in join.args.items() if v and k not in ("this", "on", "kind")}
            kind = (join.args.get("kind") or "").upper()
            if extra or kind not in ("", "INNER") or join.args.get("on") is None:
                what = (
                    " ".join(
                        str(join.args.get(k) or "") for k in ("method", "side", "kind")
                    ).strip()
                    or "a join without ON"
                )
                if "using" in extra:
                    what = "JOIN … USING"
                if join.args.get("on") is None and not extra:
                    what = "a cross join (no ON)"
                raise self.violation_everywhere(
                    "join_operators", "INNER JOIN … ON a = b [AND …]", what,
                    "inner joins on join columns only",
                )  # fmt: skip
            for condition in _conjuncts(join.args["on"]):
                if not (
                    isinstance(condition, exp.EQ)
                    and isinstance(condition.this, exp.Column)
                    and isinstance(condition.expression, exp.Column)
                ):
                    raise self.violation_everywhere(
                        "join_operators", "a = b of two columns, joined by AND",
                        condition.sql(DIALECT)[:120], "join conditions compare join columns only",
                    )  # fmt: skip
                sides = [self.scope.resolve(c) for c in (condition.this, condition.expression)]
                self.checked.update((id(condition.this), id(condition.expression)))
                if sides[0][0] == sides[1][0]:
                    raise self.violation_everywhere(
                        "join_operators", "columns of two inputs", condition.sql(DIALECT),
                        "a join compares two inputs",
                    )  # fmt: skip
                self.check_join_types(condition, sides)
                for input_id, column in sides:
                    rule = self.rules_by_input[input_id]
                    if rule.kind != "custom" and column not in rule.join_columns:
                        raise _violation(
                            input_id, rule, "join_columns", rule.join_columns, column,
                            f"{column} may not be joined on",
                        )  # fmt: skip
                    joined.add(input_id)
            # The ON of a join names the input it joins: ``JOIN input_3 c ON a.email =
            # b.email`` compared the two inputs before it and joined input_3 to every row.
            table = join.this
            this_input = self.scope.aliases[table.alias_or_name]
            named = {
                self.scope.resolve(side)[0]
                for condition in _conjuncts(join.args["on"])
                for side in (condition.this, condition.expression)
            }
            if this_input not in named:
                raise self.violation_everywhere(
                    "join_operators", f"a condition on {this_input}, the input joined",
                    join.args["on"].sql(DIALECT)[:120], "a join without a condition on what it"
                    " joins is a cross join",
                )  # fmt: skip
        for input_id, rule in self.rules_by_input.items():
            if rule.kind == "list" and input_id not in joined:
                raise _violation(
                    input_id, rule, "join_required", "a join with another input", "no join",
                    "a list is released only for the overlap with another input",
                )  # fmt: skip

    def check_join_types(self, condition: exp.Expr, sides: list[tuple[str, str]]) -> None:
        """Both sides of a join condition of one kind of type, which DuckDB compares
        without a cast that could fail. ``a.region = b.code`` (VARCHAR, INTEGER) casts
        every joined value of ``region`` to an integer, and the run failed exactly when
        a row passed the WHERE (``WHERE zip = '10039'``: is anyone there?), outside
        any threshold or ε; a condition is not wrapped in TRY, which would turn the
        hash join into a filtered cross join."""
        types = []
        for input_id, column in sides:
            declared = self.scope.sql.schemas[input_id].column(column)
            assert declared is not None  # resolved above
            types.append(declared.type)
        kinds = {next(k for k, members in JOIN_KINDS.items() if t in members) for t in types}
        if len(kinds) != 1:
            raise self.violation_everywhere(
                "join_operators", "join columns of one type (or both numbers)",
                f"{condition.sql(DIALECT)} ({' = '.join(types)})",
                "DuckDB would cast one side to the other's type, and fail on some values",
            )  # fmt: skip

    def check_value(self, tree: exp.Expr, where: str) -> None:
        for node in tree.walk():
            if isinstance(node, tuple(AGGREGATES)):
                raise self.violation_everywhere(
                    "shape", "no aggregate here", node.sql(DIALECT), f"an aggregate in {where}"
                )
            if not isinstance(node, VALUE_NODES + SCALAR_FUNCTIONS):
                raise self.unknown(node)
            if isinstance(node, exp.Column):
                self.check_dimension(node)

    def check_dimension(self, column: exp.Column) -> None:
        input_id, name = self.scope.resolve(column)
        self.checked.add(id(column))
        rule = self.rules_by_input[input_id]
        if rule.kind == "aggregation" and name not in rule.dimension_columns:
            raise _violation(
                input_id, rule, "dimension_columns", rule.dimension_columns, name,
                f"{name} may not be selected, grouped or filtered on",
            )  # fmt: skip
        if rule.kind == "list" and name not in rule.list_columns:
            raise _violation(
                input_id, rule, "list_columns", rule.list_columns, name,
                f"{name} may not be listed or filtered on",
            )  # fmt: skip

    def unknown(self, node: exp.Expr) -> CheckFailed:
        name = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
        if isinstance(node, exp.Anonymous):
            name = node.name.upper()  # a function sqlglot does not know, by its name
        what = _forbidden_shape(node)
        if what is not None:
            return self.fail_shape(what, node)
        return QueryError(
            "sql-function" if isinstance(node, exp.Func) else "sql-syntax",
            "the functions and operators of docs/privacy.md", name,
            f"{name} is not allowed in a query",
        )  # fmt: skip

    def check_aggregate_expression(self, tree: exp.Expr) -> None:
        """Aggregates of plain columns, combined by arithmetic with literals."""
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, tuple(AGGREGATES)):
                self.check_aggregate(node)
            elif isinstance(node, exp.Column):
                raise self.violation_everywhere(
                    "shape", "aggregates of columns", node.sql(DIALECT),
                    "a column outside an aggregate here",
                )  # fmt: skip
            elif isinstance(node, exp.Interval) or (
                isinstance(node, exp.DataType) and not node.is_type(*AGGREGATE_TYPES)
            ):
                # Arithmetic on aggregates stays in numbers (in DOUBLE, never failing): an
                # interval or a time made of them fails on some values, and TRY cannot
                # hold an aggregate. (TIMESTAMP '…' - TIMESTAMP '…') * SUM(spend) failed
                # ("Overflow in multiplication of INTERVAL") exactly on large sums.
                raise QueryError(
                    "sql-syntax", "numbers, text or booleans in arithmetic on aggregates",
                    node.sql(DIALECT)[:80], "no interval, date or time beside an aggregate",
                )  # fmt: skip
            elif isinstance(node, (*VALUE_NODES, exp.Round, exp.Abs, exp.Cast, exp.Coalesce)):
                stack.extend(node.iter_expressions())
            else:
                raise self.unknown(node)

    def check_aggregate(self, node: exp.Expr) -> None:
        if self.shape == "list":
            # A listing releases distinct rows and nothing about how many joined rows
            # gave them. COUNT(*) names no column, so no list rule refused it: under list
            # rules alone, SELECT b.segment, COUNT(*) … GROUP BY b.segment released, under
            # no threshold, the multiplicities SELECT DISTINCT had closed (customer i's
            # key uploaded 2^i times: each segment's count named, in binary, who has it;
            # red team h36).
            raise self.fail_shape("an aggregate (a listing releases distinct rows, no counts)",
                                  node)  # fmt: skip
        function = AGGREGATES[type(node)]
        argument = node.this
        if isinstance(argument, exp.Distinct):
            if len(argument.expressions) != 1:
                raise self.unknown(argument)
            argument, function = argument.expressions[0], f"{function}_distinct"
        if isinstance(argument, exp.Star) and function == "count":
            for input_id, rule in self.strict_rules().items():
                allowed = any("count" in fs for fs in rule.aggregate_columns.values())
                if rule.kind == "aggregation" and not allowed:
                    raise _violation(
                        input_id, rule, "aggregate_columns", "count on some column",
                        "COUNT(*)", "no column may be counted",
                    )  # fmt: skip
            return
        if not isinstance(argument, exp.Column) or function == "avg_distinct":
            raise self.violation_everywhere(
                "aggregate_columns", "COUNT, SUM or AVG of one column", node.sql(DIALECT)[:120],
                "aggregate plain columns only",
            )  # fmt: skip
        input_id, name = self.scope.resolve(argument)
        self.checked.add(id(argument))
        rule = self.rules_by_input[input_id]
        if rule.kind == "list":
            raise _violation(
                input_id, rule, "list_columns", "no aggregate over a list rule's columns",
                node.sql(DIALECT)[:120], f"{name} may only be listed",
            )  # fmt: skip
        if rule.kind == "aggregation" and function not in rule.aggregate_columns.get(name, []):
            raise _violation(
                input_id, rule, "aggregate_columns", rule.aggregate_columns.get(name, []),
                function, f"{function} of {name} is not allowed",
            )  # fmt: skip

    def check_grouping(self, aggregated: bool) -> None:
        group = self.select.args.get("group")
        grouped = [] if group is None else list(group.expressions)
        if group is not None and any(v for k, v in group.args.items() if k != "expressions"):
            raise self.fail_shape("GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS", group)
        for key in grouped:
            if isinstance(key, exp.Literal):
                raise self.fail_shape("GROUP BY a position", key)
            self.check_value(key, "group by")
        if not aggregated:
            if grouped:
                raise self.fail_shape("GROUP BY without an aggregate", group or self.select)
            return
        keys = {self.key(key) for key in grouped}
        for item in self.select.expressions:
            target = item.this if isinstance(item, exp.Alias) else item
            if any(isinstance(n, tuple(AGGREGATES)) for n in target.walk()):
                continue
            if self.key(target) not in keys:
                raise self.violation_everywhere(
                    "shape", "every selected dimension in GROUP BY", target.sql(DIALECT),
                    "a selected column that is not grouped by",
                )  # fmt: skip


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    if isinstance(condition, exp.And):
        return [*_conjuncts(condition.this), *_conjuncts(condition.expression)]
    if isinstance(condition, exp.Paren):
        return _conjuncts(condition.this)
    return [condition]


def _check_custom(spec: WorkSpec, tree: exp.Expr) -> list[str]:
    """A custom rule's allowed query: read-only, inputs and its own CTEs only, no table
    function, functions from the allow-lists. The inputs it reads, sorted."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    read: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Table):
            holder = node.this
            if (
                not isinstance(holder, exp.Identifier)
                or holder.quoted
                or any(node.args.get(k) for k in ("db", "catalog"))
            ):
                raise QueryError(
                    "sql-table", "an input table", node.sql(DIALECT)[:120],
                    "a query reads the room's inputs only (no file or table function)",
                )  # fmt: skip
            if holder.name in spec.inputs:
                read.add(holder.name)
            elif holder.name not in ctes:
                raise QueryError(
                    "sql-table", f"one of the inputs {sorted(spec.inputs)}", holder.name,
                    "a query reads the room's inputs only",
                )  # fmt: skip
        elif not isinstance(node, VALUE_NODES + SCALAR_FUNCTIONS + CUSTOM_NODES):
            name = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
            raise QueryError(
                "sql-function" if isinstance(node, exp.Func) else "sql-syntax",
                "the functions and operators of docs/privacy.md", name,
                f"{name} is not allowed in a query",
            )  # fmt: skip
    return sorted(read)


def _inputs_read(spec: WorkSpec, tree: exp.Expr) -> list[str]:
    return sorted({t.name for t in tree.find_all(exp.Table) if t.name in spec.inputs})


def exact_epsilon(value: float) -> Fraction:
    """ε (or a budget) as written: the shortest decimal that reads back as ``value``, as
    an exact fraction. Budgets are charged and compared in these, never in floats: a
    float total did not move for an ε below half its ulp (``1.0 + 1e-16 == 1.0``), and
    with the slack its comparison needed, a spent budget took such queries for ever
    (h23, left open; h29). The decimal, not the float's binary value: ten queries of
    ε 0.1 spend a budget of 1 exactly (the float 0.1 is above 1/10). The float the
    noise is calibrated with differs from it by less than 2^-53 of ε, far inside the
    relative tolerance OpenDP's privacy map is confirmed with (privacy._TOLERANCE)."""
    if isinstance(value, int):
        return Fraction(value)
    return Fraction(repr(float(value)))


def plan_query(
    spec: WorkSpec,
    *,
    name: str | None,
    text: str | None = None,
    parameters: dict[str, Any] | None = None,
    epsilon: float | None = None,
    spent: Mapping[str, Fraction] | None = None,
) -> QueryPlan:
    """Check one query against the strictest combination of every owner's rule; the plan.

    A named query takes its text from the spec and ``parameters`` of its declared
    types; an ad-hoc one (``name=None``) is ``text``, without parameters. ``spent``
    (input id -> ε spent so far) is checked against every differential privacy
    budget the query touches."""
    try:
        return _plan(
            spec, name=name, text=text, parameters=parameters, epsilon=epsilon, spent=spent
        )
    except RecursionError:
        # sqlglot parses, copies and renders recursively: NOT NOT … or (((…))) a few
        # thousand deep raised out of the checker (not a refusal: no sealed answer).
        raise QueryError(
            "sql-parse", "a query nested less deeply", "nested too deep",
            "the query nests too deep to be checked",
        ) from None  # fmt: skip


def _plan(
    spec: WorkSpec,
    *,
    name: str | None,
    text: str | None,
    parameters: dict[str, Any] | None,
    epsilon: float | None,
    spent: Mapping[str, Fraction] | None,
) -> QueryPlan:
    assert spec.sql is not None, "a SQL room"
    if name is not None:
        query = spec.sql.queries.get(name)
        if query is None:
            raise QueryError("sql-query", sorted(spec.sql.queries), name, "no such query")
        try:
            values = check_parameters(query, name, parameters or {})
        except SpecRuleError as error:  # its text begins with its check, as a QueryError's
            message = str(error).removeprefix(f"{error.check}: ")
            raise QueryError(error.check, dict(query.parameters), parameters, message) from None
        text, types, output, form = query.text, dict(query.parameters), query.output, query.format
        epsilon = query.epsilon if epsilon is None else epsilon
    else:
        if spec.sql.adhoc is None:
            raise QueryError("adhoc", "a named query", "ad-hoc sql", "no ad-hoc queries here")
        if text is None or parameters:
            raise QueryError("sql-parameter", "no parameters", parameters, "ad-hoc text only")
        if len(text) > MAX_QUERY_TEXT:
            # As long as a named query at most: the Worker checks queries in turn, and a
            # text of 750 KB (what a request holds) took 97 s (measured).
            raise QueryError(
                "sql-text", f"at most {MAX_QUERY_TEXT} characters", len(text),
                "an ad-hoc query is no longer than a named one",
            )  # fmt: skip
        values, types = {}, {}
        output, form = spec.sql.adhoc.output, spec.sql.adhoc.format
    tree = bind(parse(text), types, values)
    _hidden_names(tree)
    _inputs_by_their_names(spec, tree)
    read = _inputs_read(spec, tree)
    rules = {input_id: spec.sql.rules[input_id] for input_id in read}
    kinds = {rule.kind for rule in rules.values()}
    applied: list[str] = []
    for input_id, rule in sorted(rules.items()):
        if rule.kind == "custom":
            allowed = rule.allowed_queries
            if name is None or (allowed is not None and name not in allowed):
                raise _violation(
                    input_id, rule, "allowed_queries",
                    sorted(spec.sql.queries) if allowed is None else allowed,
                    name or "an ad-hoc query", "only the named queries its owner allowed",
                )  # fmt: skip
    shape = "aggregation" if "aggregation" in kinds else "list" if "list" in kinds else "custom"
    thresholds: dict[str, int] = {}
    groups_sql: str | None = None
    dp: DpPlan | None = None
    if shape == "custom":
        _check_custom(spec, tree)
        assert isinstance(tree, exp.Query), "parse() takes a SELECT or a set operation"
        _custom_orders_its_choices(tree, rules)
        executed = _custom_in_order(tree.copy(), rules)
    else:
        if not isinstance(tree, exp.Select):
            input_id, rule = next((i, r) for i, r in sorted(rules.items()) if r.kind == shape)
            raise _violation(
                input_id, rule, "shape", f"one SELECT of the {shape} shape",
                _forbidden_shape(tree) or type(tree).__name__, "no set operation",
            )  # fmt: skip
        _drop_comments(tree)
        _fold_names(tree)
        checker = _Checker(spec, tree, shape, read)
        checker.check()
        owners = {
            i: r.differential_privacy
            for i, r in rules.items()
            if r.differential_privacy is not None
        }
        if owners:
            _no_threshold_alone(rules, owners)
            dp, executed = _dp_plan(spec, checker, owners, epsilon, spent or {})
        else:
            executed = tree.copy()
            assert isinstance(executed, exp.Select)
            counts: list[tuple[str, exp.Expr, int]] = []
            for input_id, rule in sorted(rules.items()):
                if rule.threshold is None:
                    continue
                alias = next(a for a, i in checker.scope.aliases.items() if i == input_id)
                hidden = f"{HIDDEN_PREFIX}_k_{input_id}"
                count = exp.Count(
                    this=exp.Distinct(expressions=[exp.column(rule.threshold.column, alias)])
                )
                counts.append((hidden, count, rule.threshold.minimum))
                thresholds[hidden] = rule.threshold.minimum
            if any(isinstance(n, tuple(AGGREGATES)) for n in executed.walk()):
                executed, groups_sql = _groups_first(executed, counts, checker.key)
            else:
                # The list shape: no aggregate, no group, no threshold (a list rule has none).
                assert not counts, "a threshold is an aggregation rule's"
                _listed_once(executed, checker)
                _never_fails(executed)
            _released_in_order(executed, len(tree.expressions))
    for input_id, rule in sorted(rules.items()):
        text_rule = f"{input_id}: {rule.kind}"
        if dp is not None and input_id in dp.owners:
            option = dp.owners[input_id]
            text_rule += (
                f", differential privacy ε={dp.epsilon:g} of {option.budget:g}, δ={dp.delta:g},"
                f" {option.max_contributions} row(s) per {option.identity}"
            )
        if rule.threshold is not None:
            text_rule += f", at least {rule.threshold.minimum} distinct {rule.threshold.column}"
            if dp is not None:
                text_rule += " (on the noisy count)"
            elif rule.report_suppressed:
                text_rule += ", groups under it counted for the runner"
        applied.append(text_rule)
    return QueryPlan(
        sql=executed.sql(DIALECT),
        text_sha256=query_sha256(text),
        name=name,
        inputs=tuple(read),
        rules=tuple(applied),
        thresholds=thresholds,
        groups_sql=groups_sql,
        report_suppressed=dp is None
        and all(rule.report_suppressed for rule in rules.values() if rule.threshold is not None),
        dp=dp,
        output=output,
        format=form,
    )


def _listed_once(select: exp.Select, checker: _Checker) -> None:
    """Release a list query's rows as a set (``SELECT DISTINCT``, as AWS Clean Rooms'
    list rule requires it), its ORDER BY by the places of the columns it names: one row
    came out once per joined row, so the owner of a joined input who repeated person
    i's join key 2^i times read, from how many times each segment was listed, which
    people have it, in binary (16 people from one listing of 65,535 uploaded rows,
    whatever the rows' order: h29's red team)."""
    order = select.args.get("order")
    for ordered in order.expressions if order is not None else []:
        place = checker.listed_position(ordered.this)
        assert place is not None, "the checker refuses an ORDER BY of a value not listed"
        ordered.set("this", exp.Literal.number(place))
    select.set("distinct", exp.Distinct())


def _released_in_order(select: exp.Query, columns: int) -> None:
    """Order the rows a query releases by its own ORDER BY, then by every one of its
    ``columns`` (by position, ``NULL`` last), so that their order, and which rows a LIMIT
    keeps, depend only on the rows: DuckDB keeps the order of the input it probes a join
    with, and a list query's rows came in the order of the runner's own upload, each
    listed segment next to the customer she had put there (red team h23)."""
    order = select.args.get("order")
    keys = list(order.expressions) if order is not None else []
    keys += [
        exp.Ordered(this=exp.Literal.number(place), desc=False, nulls_first=False)
        for place in range(1, columns + 1)
    ]
    select.set("order", exp.Order(expressions=keys))


def _is_star(column: exp.Expr) -> bool:
    """A select-list item that stands for several columns: ``*``, ``t.*`` (any modifier)."""
    bare = column.unalias()
    return isinstance(bare, exp.Star) or (
        isinstance(bare, exp.Column) and isinstance(bare.this, exp.Star)
    )


def _custom_orders_its_choices(query: exp.Expr, rules: Mapping[str, AnalysisRule]) -> None:
    """A custom query's own order-dependent parts each name an order (``custom.order``):
    ``ROW_NUMBER()`` over a window without ``ORDER BY``, and a ``LIMIT`` or ``OFFSET`` of a
    sub-query, CTE or set operation's member without one, number or choose rows in
    DuckDB's order, which follows the runner's upload (h23), and sorting the released
    rows cannot reach them (h29, left open). A window frame is not in the allow-list, and
    every other window function allowed reads its whole partition or its peers, whatever
    the order. What stays the owner's to read: an ``ORDER BY`` with ties among its keys."""
    found: exp.Expr | None = None
    for window in query.find_all(exp.Window):
        order = window.args.get("order")
        keys = [] if order is None else order.expressions
        # A window's ORDER BY 1 is a constant, not a position: every row ties.
        if isinstance(window.this, exp.RowNumber) and not any(k.find(exp.Column) for k in keys):
            found = window
    for part in query.find_all(exp.Select, exp.SetOperation):
        chooses = part.args.get("limit") or part.args.get("offset")
        if part is not query and chooses and not part.args.get("order"):
            found = part
    if found is not None:
        input_id, rule = sorted(rules.items())[0]
        raise _violation(
            input_id, rule, "order", "an ORDER BY of columns for each ROW_NUMBER() and inner"
            " LIMIT or OFFSET", found.sql(DIALECT)[:120],
            "rows numbered or chosen in the engine's order follow the runner's upload",
        )  # fmt: skip


def _custom_in_order(query: exp.Query, rules: Mapping[str, AnalysisRule]) -> exp.Expr:
    """A custom rule's query, its released rows ordered as the other shapes' are: by its
    own ORDER BY, then by each of its columns (or, without an ORDER BY, by all of them:
    DuckDB's ``ORDER BY ALL``), before its LIMIT. Its rows came in DuckDB's order, which
    follows the order of a runner's own upload, as a list query's did (h23, left to the
    owner; h29). Sorted rather than refused without a total ORDER BY: whether an ORDER
    BY is total depends on the data (a key may repeat), so no check of the text can
    tell, and every column after the query's own keys orders any rows by what they
    hold alone. A query with an ORDER BY and a star among its columns is refused: its
    columns cannot be counted from its text to break the ties."""
    order = query.args.get("order")
    if order is None:
        every = exp.Ordered(this=exp.Var(this="ALL"), desc=False, nulls_first=False)
        query.set("order", exp.Order(expressions=[every]))
        return query
    if any(
        isinstance(key.this, exp.Var) and key.this.name.upper() == "ALL"
        for key in order.expressions
    ):
        return query  # ORDER BY ALL: every column already
    columns = query.selects
    star = next((column for column in columns if _is_star(column)), None)
    if star is not None or not columns:
        input_id, rule = sorted(rules.items())[0]
        raise _violation(
            input_id, rule, "order", "a query that orders its rows names each of its columns",
            (star or query).sql(DIALECT)[:120],
            "the Worker breaks the ties of its ORDER BY by each column",
        )  # fmt: skip
    _released_in_order(query, len(columns))
    return query


def _row_safe(node: exp.Expr) -> exp.Expr:
    """A row-level expression that no value can make fail: wrapped in DuckDB's TRY (an
    error becomes NULL), unless it is a plain column or literal (which cannot fail)."""
    if isinstance(node, exp.Column | exp.Literal | exp.Boolean | exp.Null):
        return node
    return exp.Try(this=node)


def _aggregate_safe(node: exp.Expr) -> exp.Expr:
    """Arithmetic on aggregates that no value can make fail: every aggregate under it in
    DOUBLE (an overflow is infinity, not an error), CAST as TRY_CAST, ``a // b`` as
    ``FLOOR(a / b)`` (a division by zero is infinity). A bare aggregate cannot fail."""
    if isinstance(node, tuple(AGGREGATES)):
        return node
    holder = exp.Paren(this=node)  # so that the top node too can be replaced in place
    for aggregate in list(holder.find_all(*AGGREGATES)):
        aggregate.replace(exp.Cast(this=aggregate.copy(), to=exp.DataType.build("DOUBLE")))
    # The innermost first: a cast replaced holds a copy of what it casts, so an outer cast
    # replaced first left the cast inside it as CAST (CAST(CAST(x AS BIGINT) AS DOUBLE)).
    for cast in reversed([n for n in holder.find_all(exp.Cast, bfs=False) if type(n) is exp.Cast]):
        if not isinstance(cast.this, tuple(AGGREGATES)):
            cast.replace(exp.TryCast(this=cast.this.copy(), to=cast.args["to"].copy()))
    for division in list(holder.find_all(exp.IntDiv)):
        quotient = exp.Div(this=division.this.copy(), expression=division.expression.copy())
        division.replace(exp.Floor(this=quotient))
    safe: exp.Expr = holder.this
    return safe


def _safe(node: exp.Expr) -> exp.Expr:
    if any(isinstance(n, tuple(AGGREGATES)) for n in node.walk()):
        return _aggregate_safe(node)
    return _row_safe(node)


def _never_fails(select: exp.Select) -> None:
    """Rewrite a checked SELECT (aggregation or list shape) in place so that whether it
    runs does not depend on the data: a query that failed on one row (a CAST, a
    division by zero, an overflow) or in one group under the threshold would tell
    the runner what the rules hide, and under differential privacy outside any ε."""
    items: list[exp.Expr] = []
    for item in list(select.expressions):
        if isinstance(item, exp.Alias):
            item.set("this", _safe(item.this))
            items.append(item)
        else:
            name = item.sql(DIALECT)
            safe = _safe(item)
            items.append(safe if safe is item else exp.alias_(safe, name, quoted=True))
    select.set("expressions", items)
    where = select.args.get("where")
    if where is not None:
        where.set("this", _row_safe(where.this))
    group = select.args.get("group")
    if group is not None:
        group.set("expressions", [_row_safe(key) for key in list(group.expressions)])
    having = select.args.get("having")
    if having is not None:
        having.set("this", _aggregate_safe(having.this))
    order = select.args.get("order")
    for ordered in order.expressions if order is not None else []:
        ordered.set("this", _safe(ordered.this))


def _groups_first(
    select: exp.Select, counts: list[tuple[str, exp.Expr, int]], text_of: Callable[[exp.Expr], str]
) -> tuple[exp.Select, str | None]:
    """A checked aggregation query (no differential privacy) as two SELECTs: the groups,
    their aggregates and each threshold's distinct count, with the groups under a
    threshold dropped there; then, over those groups only, the query's own columns,
    ``HAVING`` (as ``WHERE``), ``ORDER BY`` and ``LIMIT``, every expression over the
    groups in DuckDB's ``TRY(…)`` (an error becomes ``NULL``; a ``NULL`` condition drops
    the group). Also the query that counts the groups before any threshold (the
    suppressed ones are counted from it). ``text_of`` gives the text expressions are compared
    by (:meth:`_Checker.key`).

    In one SELECT, ``HAVING`` was the threshold ``AND`` the runner's condition, and
    DuckDB, which evaluates a conjunction in no promised order, evaluated ``1 %
    CAST(SUM(spend) > 41 AS BIGINT) = 0 OR COUNT(*) > 0`` on a group of one person
    under a minimum of 3: the run failed ("Division by zero") exactly when her spend was
    at most 41, a binary search for one person's value. TRY could not hold an aggregate
    there, and DOUBLE arithmetic does not cover what DuckDB fails on (an integer cast,
    a modulo by zero, an overflow of integers, text compared with a number); over the
    groups' columns TRY holds anything."""
    group = select.args.get("group")
    keys = list(group.expressions) if group is not None else []
    key_columns: dict[str, str] = {}  # a key's text -> its column among the groups'
    for key in keys:
        key_columns.setdefault(text_of(key), f"{HIDDEN_PREFIX}_d{len(key_columns)}")
    aggregates: dict[str, tuple[str, exp.Expr]] = {}

    def aggregate_column(node: exp.Expr) -> exp.Expr:
        name, _node = aggregates.setdefault(
            node.sql(DIALECT), (f"{HIDDEN_PREFIX}_a{len(aggregates)}", node.copy())
        )
        return exp.column(name)

    def over_groups(node: exp.Expr) -> exp.Expr:
        """``node`` (of the query's SELECT, HAVING or ORDER BY) over the groups' columns."""
        if isinstance(node, tuple(AGGREGATES)):
            return aggregate_column(node)
        if any(isinstance(n, tuple(AGGREGATES)) for n in node.walk()):
            holder = exp.Paren(this=_aggregate_safe(node.copy()))
            for found in list(holder.find_all(*AGGREGATES)):
                found.replace(aggregate_column(found))
            return exp.Try(this=holder.this)

        def by_key(part: exp.Expr) -> exp.Expr:
            name = key_columns.get(text_of(part))
            return part if name is None else exp.column(name)

        value = node.copy().transform(by_key)
        for column in value.find_all(exp.Column):
            if not column.name.startswith(f"{HIDDEN_PREFIX}_d"):
                # DuckDB refuses it as well ("must appear in the GROUP BY clause").
                raise QueryError(
                    "sql-syntax", "a value of the grouped keys or of aggregates",
                    node.sql(DIALECT)[:120], "a column that is not grouped by",
                )  # fmt: skip
        return _row_safe(value)

    items: list[exp.Expr] = []
    for item in select.expressions:
        if isinstance(item, exp.Alias):
            items.append(exp.Alias(this=over_groups(item.this), alias=item.args["alias"].copy()))
        else:
            name = item.name if isinstance(item, exp.Column) else item.sql(DIALECT)
            items.append(exp.alias_(over_groups(item), name, quoted=True))
    having = select.args.get("having")
    condition = None if having is None else over_groups(having.this)
    order = select.args.get("order")
    ordered: list[exp.Expr] = []
    aliases = {fold(item.alias) for item in select.expressions if isinstance(item, exp.Alias)}
    for key in order.expressions if order is not None else []:
        target = key.this
        position = isinstance(target, exp.Literal) and target.is_int
        alias = isinstance(target, exp.Column) and not target.table and target.name in aliases
        replaced = key.copy()
        if not (position or alias):  # an output column by its name or place stays as it is
            replaced.set("this", over_groups(target))
        ordered.append(replaced)
    inner = select.copy()
    for clause in ("having", "order", "limit"):
        inner.set(clause, None)
    where = inner.args.get("where")
    if where is not None:
        where.set("this", _row_safe(where.this))
    if group is not None:
        inner.set("group", exp.Group(expressions=[_row_safe(key.copy()) for key in keys]))
    firsts: dict[str, exp.Expr] = {}  # each key's column, of its first place in GROUP BY
    for key in keys:
        firsts.setdefault(key_columns[text_of(key)], key)
    counted = [exp.alias_(count.copy(), hidden) for hidden, count, _minimum in counts]
    groups_sql = None
    if counts:
        groups_select = inner.copy()
        groups_select.set("expressions", [c.copy() for c in counted])
        groups_sql = groups_select.sql(DIALECT)
    inner.set(
        "expressions",
        [exp.alias_(_row_safe(key.copy()), name) for name, key in firsts.items()]
        + [exp.alias_(node, name) for name, node in aggregates.values()]
        + counted,
    )
    if counts:
        inner.set("having", exp.Having(this=exp.and_(*(
            exp.GTE(this=count.copy(), expression=exp.Literal.number(minimum))
            for _hidden, count, minimum in counts
        ))))  # fmt: skip
    outer = exp.select(*items, *(exp.column(hidden) for hidden, _c, _m in counts)).from_(
        exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(
            f"{HIDDEN_PREFIX}_groups")))
    )  # fmt: skip
    if condition is not None:
        outer = outer.where(condition, copy=False)
    if ordered:
        outer.set("order", exp.Order(expressions=ordered))
    limit = select.args.get("limit")
    if limit is not None:
        outer.set("limit", limit.copy())
    return outer, groups_sql


def _no_threshold_alone(
    rules: Mapping[str, AnalysisRule], owners: Mapping[str, DifferentialPrivacy]
) -> None:
    """A query under one owner's differential privacy may not read an aggregation input
    whose owner relies on a threshold alone (``aggregation.threshold``): on the DP path
    the threshold applies to the noisy count of joined rows, not to distinct people, so
    another owner who joins many rows of its own to one person of this input released
    that person's group (one customer behind a row, under a minimum of 3)."""
    for input_id, rule in sorted(rules.items()):
        if rule.kind == "aggregation" and rule.threshold is not None and input_id not in owners:
            raise _violation(
                input_id, rule, "threshold",
                "differential privacy on every thresholded input the query reads",
                f"{', '.join(sorted(owners))} under differential privacy, {input_id} under a "
                "threshold alone",
                "beside another owner's differential privacy its minimum would count noisy "
                "rows, not distinct people: give it differential privacy too, or query it "
                "without the other input",
            )  # fmt: skip


def _joined_on_identities(checker: _Checker, owners: dict[str, DifferentialPrivacy]) -> None:
    """Inputs under differential privacy are joined on their identities, or not at all.

    Each owner's contributions are bounded by its identity on the joined rows, one owner
    after the other. When two identities differ on a row, one person of the second owner
    changes which rows the first bounding keeps for everyone (measured: one identity
    with 100 joined rows moved a count by 50 under a bound of 1), and one person of the
    first displaces others' rows in the second: the noise would no longer cover one
    person. Joined on their identities (``a.id = b.id`` in the ON clauses, of one
    exactly comparable type), every joined row has one identity and both boundings cut
    the same partitions, as the analysis in ``release`` assumes. The same rule as
    ZetaSQL's for joins of two tables with privacy units.
    """
    if len(owners) < 2:
        return
    schemas = checker.scope.sql.schemas
    parent = {input_id: input_id for input_id in owners}

    def root(input_id: str) -> str:
        while parent[input_id] != input_id:
            input_id = parent[input_id]
        return input_id

    for join in checker.select.args.get("joins") or []:
        for condition in _conjuncts(join.args["on"]):  # checked: a = b of two columns
            sides = [checker.scope.resolve(c) for c in (condition.this, condition.expression)]
            if all(i in owners and c == owners[i].identity for i, c in sides):
                parent[root(sides[0][0])] = root(sides[1][0])
    identities = {i: f"{i}.{o.identity}" for i, o in sorted(owners.items())}
    first_input = min(owners)

    def refuse(expected: object, actual: object, message: str) -> RuleViolation:
        return RuleViolation(
            "differential_privacy.identity", expected, actual,
            f"{first_input}'s aggregation rule (differential privacy): {message}",
        )  # fmt: skip

    if len({root(input_id) for input_id in owners}) > 1:
        raise refuse(
            f"the inputs under differential privacy joined on {' = '.join(identities.values())}",
            "a join on other columns",
            "inputs under differential privacy are joined on their identities (one person "
            "per joined row), else one person could move other people's rows",
        )
    types = {
        input_id: column.type
        for input_id, option in owners.items()
        if (column := schemas[input_id].column(option.identity)) is not None
    }
    if len(set(types.values())) != 1 or "double" in types.values():
        raise refuse(
            "identities of one type, not double", types,
            "identities joined across inputs compare exactly only within one exact type",
        )  # fmt: skip


def _bound_before_joins(
    checker: _Checker,
    inner: exp.Select,
    owners: Mapping[str, DifferentialPrivacy],
    where: exp.Expr | None,
) -> list[tuple[str, exp.Expr]]:
    """Each input of a joined DP query read as a bounded table: an input under DP keeps
    at most ``max_contributions`` rows per identity, any other input as many per value
    of its join columns (the largest ``max_contributions``), each after the conditions
    of ``WHERE`` that read it alone, before the joins (in ``inner``, in place). The
    bound after the joins stays, and is what the noise is calibrated for; this one
    keeps the joins from growing with one person's rows: another owner's 20 million
    rows for one email made the query's time depend on whether that person was in the
    first input (DP red team 2, F5). Counts of bounded rows do not change: a person's
    rows keep at least one joined row each, up to ``max_contributions`` in all.

    The bounded tables are materialized CTEs (returned, by name): inline, DuckDB pushed
    the join's filter on the identity through the bound into the other input's scan,
    and skipped its rows of identities the first input lacked, so the time still told
    whether the person was there (1.2 s with her, 0.35 s without)."""
    ctes: list[tuple[str, exp.Expr]] = []
    joins = list(inner.args.get("joins") or [])
    if not joins:
        return ctes
    most = max(option.max_contributions for option in owners.values())
    joined: dict[str, list[str]] = {}  # input id -> its columns in the ON conditions
    for join in joins:
        for node in join.args["on"].find_all(exp.Column):
            input_id, column = checker.scope.resolve(node)
            if column not in joined.setdefault(input_id, []):
                joined[input_id].append(column)
    conditions = [] if where is None else _conjuncts(where.this)
    for holder in [inner.args.get("from_") or inner.args["from"], *joins]:
        table = holder.this
        input_id = checker.scope.aliases[table.alias_or_name]
        option = owners.get(input_id)
        keys = [option.identity] if option is not None else joined.get(input_id, [])
        if not keys:
            continue
        alias = table.alias_or_name
        mine = [
            _row_safe(c.copy()) for c in conditions
            if all(checker.scope.resolve(n)[0] == input_id for n in c.find_all(exp.Column))
        ]  # fmt: skip
        order = f"{HIDDEN_PREFIX}_pre_{input_id}"
        read = exp.select(exp.Star(), exp.alias_(exp.func("random"), order)).from_(
            exp.Table(this=exp.to_identifier(input_id), alias=exp.TableAlias(
                this=exp.to_identifier(alias)))
        )  # fmt: skip
        if mine:
            read = read.where(exp.and_(*mine), copy=False)
        rank = exp.Window(
            this=exp.RowNumber(),
            partition_by=[exp.column(key) for key in keys],
            order=exp.Order(expressions=[exp.Ordered(this=exp.column(order))]),
        )
        limit = most if option is None else option.max_contributions
        bounded = (
            exp.select(exp.Star())
            .from_(exp.Subquery(this=read, alias=exp.TableAlias(this=exp.to_identifier(alias))))
            .qualify(exp.LTE(this=rank, expression=exp.Literal.number(limit)))
        )
        name = f"{HIDDEN_PREFIX}_input_{input_id}"
        ctes.append((name, bounded))
        holder.set(
            "this",
            exp.Table(this=exp.to_identifier(name), alias=exp.TableAlias(
                this=exp.to_identifier(alias))),
        )  # fmt: skip
    return ctes


def _dp_plan(
    spec: WorkSpec,
    checker: _Checker,
    owners: dict[str, DifferentialPrivacy],
    epsilon: float | None,
    spent: Mapping[str, Fraction],
) -> tuple[DpPlan, exp.Expr]:
    """The contribution-bounded rewrite of an aggregation query, and what gets noise."""
    select = checker.select
    first_input, first_rule = sorted(owners.items())[0]

    def refuse(clause: str, expected: object, actual: object, message: str) -> RuleViolation:
        return RuleViolation(
            f"differential_privacy.{clause}", expected, actual,
            f"{first_input}'s aggregation rule (differential privacy): {message}",
        )  # fmt: skip

    cap = min(option.epsilon for option in owners.values())
    chosen = cap if epsilon is None else epsilon
    if isinstance(chosen, int) and not -(2**1023) < chosen < 2**1023:
        # An integer past any float (a request's JSON may hold 10**400) raised
        # OverflowError out of the check: no refusal, the runner's session spent.
        raise refuse("epsilon", f"0 < ε <= {cap:g}", "an integer past any float",
                     "ε is a positive number")  # fmt: skip
    if not (math.isfinite(chosen) and chosen > 0):
        # A charge of 0, a negative or a NaN ε passes every "does it fit" comparison: the
        # ledger would record it (and refuse to verify ever after, stopping the room).
        raise refuse("epsilon", f"0 < ε <= {cap:g}", chosen, "ε is a positive number")
    if chosen > cap:
        raise refuse("epsilon", f"<= {cap:g}", chosen, "more ε than one query may spend")
    for input_id, option in sorted(owners.items()):
        # Exactly, as the ledger charges (exact_epsilon): with floats and a slack of
        # 1e-12, an ε below half an ulp of the total fitted a spent budget for ever.
        left = exact_epsilon(option.budget) - spent.get(input_id, Fraction(0))
        if exact_epsilon(chosen) > left:
            raise RuleViolation(
                "differential_privacy.budget", f"<= {float(max(left, Fraction(0))):g} left", chosen,
                f"{input_id}'s privacy budget of ε={option.budget:g} is spent",
            )  # fmt: skip
    for clause in ("having", "order", "limit", "distinct"):
        if select.args.get(clause):
            raise refuse("shape", "SELECT … GROUP BY …", clause.upper(),
                         f"no {clause.upper()} under differential privacy")  # fmt: skip
    _joined_on_identities(checker, owners)
    group = select.args.get("group")
    keys = list(group.expressions) if group is not None else []
    rows: list[exp.Expr] = []
    groups: list[str] = []
    aggregates: list[DpAggregate] = []
    outer: list[exp.Expr] = []
    position = {checker.key(key): index for index, key in enumerate(keys)}
    carried: dict[str, tuple[str, exp.Expr]] = {}  # a key's column -> (its name, it)
    grouped: list[exp.Expr] = []  # each key, of the carried columns, as text, cut
    for index, key in enumerate(keys):
        # Grouped as text: what the engine groups is exactly what the Worker keys the
        # released groups by. A DECIMAL group read back as a float merged two groups
        # into one released key (1.00000000000000000001 and 1.0: the one a person's
        # row added replaced the other's count), and a BLOB, TIME or INTERVAL group
        # could not be written at all: the run failed whenever such a group existed.
        # And cut to MAX_DP_KEY_CHARS: the exact groups go to the Worker, which refused more than 64
        # MiB of them (now: their bound, DpPlan.most_bytes), and a runner who made each key long (a
        # literal of 30,000 characters in CONCAT) moved that limit to where one person's group
        # decided whether the run failed. Groups cut to one key merge, which the engine adds up. And
        # computed after the contribution bound, from the columns it reads carried as they are:
        # computed before, every joined and filtered row held its keys, as long as a literal made
        # them, so the memory of the bounding grew by rows times a length the runner chose to the
        # byte (a knob to bring the count of any WHERE to the sandbox's memory limit).
        def carry(node: exp.Expr) -> exp.Expr:
            if not isinstance(node, exp.Column):
                return node
            name, _column = carried.setdefault(
                node.sql(DIALECT), (f"{HIDDEN_PREFIX}_c{len(carried)}", node.copy())
            )
            return exp.column(name)

        late = key.copy().transform(carry)
        as_text = exp.Cast(this=late, to=exp.DataType.build("VARCHAR"))
        cut = exp.func("LEFT", exp.Try(this=as_text), exp.Literal.number(MAX_DP_KEY_CHARS))
        grouped.append(cut)
        outer.append(exp.alias_(cut.copy(), f"{HIDDEN_PREFIX}_g{index}"))
    for carried_name, carried_column in carried.values():
        rows.append(exp.alias_(carried_column, carried_name))
    outer.append(exp.alias_(exp.Count(this=exp.Star()), f"{HIDDEN_PREFIX}_n"))
    value_index = 0
    selected: list[tuple[int, str]] = []  # (GROUP BY position, output name) of each dimension
    for item in select.expressions:
        target = item.this if isinstance(item, exp.Alias) else item
        output = item.alias_or_name
        if not any(isinstance(n, tuple(AGGREGATES)) for n in target.walk()):
            if checker.key(target) not in position:
                raise refuse("shape", "grouped dimensions", target.sql(DIALECT), "not grouped")
            selected.append((position[checker.key(target)], output))
            continue
        if not isinstance(target, exp.Count | exp.Sum | exp.Avg):
            raise refuse("aggregate", "COUNT, SUM or AVG alone", target.sql(DIALECT)[:80],
                         "no arithmetic on noisy aggregates in the query")  # fmt: skip
        argument = target.this
        kind = AGGREGATES[type(target)]
        if isinstance(argument, exp.Distinct):
            raise refuse("aggregate", "COUNT, SUM or AVG", target.sql(DIALECT)[:80],
                         "no DISTINCT aggregate under differential privacy")  # fmt: skip
        if isinstance(argument, exp.Star):
            aggregates.append(DpAggregate(output, "count_rows", None, 1.0))
            continue
        assert isinstance(argument, exp.Column)
        input_id, column = checker.scope.resolve(argument)
        hidden = f"{HIDDEN_PREFIX}_v{value_index}"
        value_index += 1
        if kind == "count":
            rows.append(exp.alias_(argument.copy(), hidden))
            outer.append(exp.alias_(exp.Count(this=exp.column(hidden)), hidden))
            aggregates.append(DpAggregate(output, "count", hidden, 1.0))
            continue
        owner = owners.get(input_id)
        bounds = None if owner is None else owner.bounds.get(column)
        if bounds is None:
            raise refuse("bounds", f"bounds for {column} in {input_id}'s rule", "none",
                         f"{kind} of {column} needs its owner's bounds")  # fmt: skip
        low, high = bounds
        value = exp.TryCast(this=argument.copy(), to=exp.DataType.build("DOUBLE"))
        clamped = exp.func(
            "LEAST",
            exp.func("GREATEST", value, exp.Literal.number(low)),
            exp.Literal.number(high),
        )
        # A NULL stays NULL, as SUM and AVG take it (GREATEST skips a NULL argument: a
        # missing value was summed as the lower bound and counted in AVG's divisor).
        kept = exp.Case(ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()),
                                     true=exp.Null())], default=clamped)  # fmt: skip
        rows.append(exp.alias_(kept, hidden))
        outer.append(exp.alias_(exp.Sum(this=exp.column(hidden)), f"{hidden}_sum"))
        outer.append(exp.alias_(exp.Count(this=exp.column(hidden)), f"{hidden}_count"))
        aggregates.append(
            DpAggregate(output, kind, hidden, max(abs(low), abs(high)), float(low), float(high))
        )
    # Released groups are keyed by their dimensions: each GROUP BY key selected exactly
    # once, named in GROUP BY order. A key left out would merge several groups into one
    # released key (one group's values, whichever the engine returned last: one person
    # can change which), so a group's count and sums would no longer have the
    # sensitivity the noise is calibrated for.
    if sorted(index for index, _name in selected) != list(range(len(keys))):
        raise refuse("shape", "every GROUP BY key selected once",
                     [key.sql(DIALECT) for key in keys],
                     "select each grouped dimension once")  # fmt: skip
    groups = [name for _index, name in sorted(selected)]
    if len(set(groups + [a.output for a in aggregates])) != len(groups) + len(aggregates):
        raise refuse("shape", "distinct output names", [*groups, *(a.output for a in aggregates)],
                     "name every column once (AS …)")  # fmt: skip
    for input_id, option in sorted(owners.items()):
        alias = next(a for a, i in checker.scope.aliases.items() if i == input_id)
        rows.append(
            exp.alias_(exp.column(option.identity, alias), f"{HIDDEN_PREFIX}_id_{input_id}")
        )
    # Which rows of an identity are kept is random (DuckDB refuses a volatile window order).
    rows.append(exp.alias_(exp.func("random"), f"{HIDDEN_PREFIX}_random"))
    inner = exp.select(*rows).from_(select.args.get("from_") or select.args["from"], copy=True)
    for join in select.args.get("joins") or []:
        inner = inner.join(join.copy(), copy=False)
    where = select.args.get("where")
    before = _bound_before_joins(checker, inner, owners, where)
    if where is not None:
        inner = inner.where(_row_safe(where.this.copy()), copy=False)
    source = f"{HIDDEN_PREFIX}_rows"
    query = exp.select(*outer)
    ctes: list[tuple[str, exp.Expr]] = [(source, inner)]
    for input_id, option in sorted(owners.items()):
        bounded = f"{HIDDEN_PREFIX}_bounded_{input_id}"
        rank = exp.Window(
            this=exp.RowNumber(),
            partition_by=[exp.column(f"{HIDDEN_PREFIX}_id_{input_id}")],
            order=exp.Order(expressions=[exp.Ordered(this=exp.column(f"{HIDDEN_PREFIX}_random"))]),
        )
        keep = (
            exp.select(exp.Star())
            .from_(source)
            .qualify(exp.LTE(this=rank, expression=exp.Literal.number(option.max_contributions)))
        )
        ctes.append((bounded, keep))
        source = bounded
    query = query.from_(source)
    for cte_name, body in before:
        query = query.with_(cte_name, as_=body, materialized=True, copy=False)
    for cte_name, body in ctes:
        query = query.with_(cte_name, as_=body, copy=False)
    if keys:
        query = query.group_by(*[cut.copy() for cut in grouped])
    minimum = max((rules.threshold.minimum for rules in checker.rules_by_input.values()
                   if rules.threshold is not None), default=0)  # fmt: skip
    plan = DpPlan(
        epsilon=chosen,
        # δ in proportion to the ε spent: a query of a tenth of an owner's ε gets a tenth
        # of its δ. Else the ε budget would not bound the δs: queries of a tiny ε, each
        # with the whole δ, add up to any δ (10,000 queries of ε 2e-4 within a budget of
        # 2, δ 1e-3 each: a group of one person released in 9 of 10,000 queries, almost
        # surely in one). So an owner's δs add up to at most its δ * budget / ε.
        delta=min(option.delta * chosen / option.epsilon for option in owners.values()),
        owners=dict(sorted(owners.items())),
        groups=tuple(groups),
        aggregates=tuple(aggregates),
        minimum=minimum,
        line_bytes=dp_line_bytes(
            len(keys),
            [e.alias for e in outer[len(keys) :] if isinstance(e, exp.Alias)],  # the numbers
        ),
    )
    del first_rule
    return plan, query


def check_spec_queries(spec: WorkSpec) -> None:
    """Every named query parses and passes every rule (sample values for its parameters):
    a spec whose query could never run is refused at deploy, before any data moves."""
    assert spec.sql is not None
    for name, query in sorted(spec.sql.queries.items()):
        samples = {key: _sample(kind) for key, kind in query.parameters.items()}
        try:
            plan_query(spec, name=name, parameters=samples)
        except CheckFailed as error:
            raise type(error)(
                error.check, error.expected, error.actual, f"query {name}: {error.message}"
            ) from None
