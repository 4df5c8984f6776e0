"""The SQL engine of a SQL clean room: DuckDB in the function sandbox, locked down.

This file is the whole "function" of every SQL room (its bundle is what the spec's
function ID names; the Worker refuses any other). It runs in the data runtime, in
the same sandbox as any function (no network, read-only inputs, the room's own
uid, cgroup limits), and does one of two things, as ``/work/parameters.json`` (the
Worker's plan) says:

- ``check``: an upload against its declared schema. Header names, the number of
  fields, each value's type and nullability; a refusal names the file, the column
  and the row, never a value. Writes ``result/stats.json``.
- ``query``: loads the inputs the query reads as tables of their declared types,
  then locks DuckDB down (no file system, no extension loading or installing, the
  configuration locked), runs the query the Worker checked and rendered, drops the
  rows under the owners' thresholds (counting them), and writes the rows with
  Python (DuckDB itself can no longer write a file) as ``result/data.csv`` or
  ``result/data.parquet``, or, under differential privacy, the exact
  contribution-bounded aggregates as ``result/rows.jsonl`` for the Worker to add
  noise to. Writes ``result/stats.json``.

Before either, DuckDB is given the run's limits from the plan (``limits``: its memory,
threads, and spill space in the sandbox's ``/tmp``), so that it spills rather than
meets the sandbox's memory limit; and each input file under a name the engine chose
(DuckDB expands glob characters in a path it reads).

It imports nothing from cleanroom: only the standard library, duckdb and pyarrow.
"""

import csv
import datetime
import decimal
import json
import os
import sys
import tempfile
from typing import Any

import duckdb  # type: ignore[import-not-found,unused-ignore]

WORK = os.environ.get("WORK_DIR", "/work")
RESULT = os.path.join(WORK, "outputs", "result")
TYPES = {"bigint": "BIGINT", "boolean": "BOOLEAN", "date": "DATE", "double": "DOUBLE",
         "integer": "INTEGER", "timestamp": "TIMESTAMP", "varchar": "VARCHAR"}  # fmt: skip
# Parquet column types that hold each declared type exactly.
COMPATIBLE = {
    "BIGINT": {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UINTEGER", "USMALLINT", "UTINYINT"},
    "INTEGER": {"INTEGER", "SMALLINT", "TINYINT", "USMALLINT", "UTINYINT"},
    "DOUBLE": {"DOUBLE", "FLOAT", "INTEGER", "SMALLINT", "TINYINT"},
    "VARCHAR": {"VARCHAR"},
    "BOOLEAN": {"BOOLEAN"},
    "DATE": {"DATE"},
    "TIMESTAMP": {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S"},
}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def files_of(input_id: str) -> list[tuple[str, str]]:
    """Each file of an input, sorted by path: (its path, the name DuckDB reads it by).

    DuckDB expands a path it is given to read (``*``, ``?``, ``[...]``, ``**``; and it
    picks a compression by the name's extension): a file named ``*.csv`` read every
    file of its input. So DuckDB reads each file by a symbolic link the engine made,
    named by digits alone, in a directory of its own under the sandbox's ``/tmp``."""
    root = os.path.join(WORK, "inputs", input_id)
    found: list[str] = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            found.append(os.path.join(directory, name))
    links = tempfile.mkdtemp(prefix="cleanroom-inputs-")
    named: list[tuple[str, str]] = []
    for index, path in enumerate(sorted(found)):
        link = os.path.join(links, str(index))
        os.symlink(path, link)
        named.append((path, link))
    return named


def write_stats(stats: dict[str, Any]) -> None:
    os.makedirs(RESULT, exist_ok=True)
    with open(os.path.join(RESULT, "stats.json"), "w") as handle:
        json.dump(stats, handle)


def refuse(
    check: str, input_id: str, path: str, column: str | None, row: int | None,
    expected: object, message: str,
) -> None:  # fmt: skip
    write_stats({"refused": {
        "check": check, "file": os.path.relpath(path, os.path.join(WORK, "inputs", input_id)),
        "column": column, "row": row, "expected": expected, "message": message,
    }})  # fmt: skip


def csv_row(path: str, record: int) -> int:
    """The row of a CSV file's ``record``-th record after its header (1 = the first),
    numbered as DuckDB numbers a row it rejects (``schema-row``): a blank line is a row,
    a line break inside quotes is not. DuckDB's table of the file skips blank lines, so
    a record's place in it (``rowid``) undercounted the row by the blank lines before
    it, and a bad value and a short row of one file were numbered two ways."""
    with open(path, newline="", encoding="utf-8", errors="strict") as handle:
        reader = csv.reader(handle)
        seen = 0
        try:
            next(reader, None)
            for row, fields in enumerate(reader, start=1):
                seen += bool(fields)  # csv gives a blank line as no fields at all
                if seen == record:
                    return row
        except (csv.Error, UnicodeDecodeError):
            pass
    return record  # not found as DuckDB found it: its own count


def csv_source(paths: list[str], columns: list[dict[str, Any]], all_varchar: bool) -> str:
    spec = ", ".join(
        f"{literal(c['name'])}: {literal('VARCHAR' if all_varchar else TYPES[c['type']])}"
        for c in columns
    )
    listed = ", ".join(literal(p) for p in paths)
    return (
        f"read_csv([{listed}], header = true, delim = ',', quote = '\"', escape = '\"', "
        f"auto_detect = false, columns = {{{spec}}}"
    )


def check(plan: dict[str, Any]) -> None:
    """One input against its schema; stops at the first mismatch (no value is written)."""
    input_id, schema = plan["input"], plan["schema"]
    columns = schema["columns"]
    names = [c["name"] for c in columns]
    con = duckdb.connect(":memory:")
    configure(con, plan["limits"])
    rows = 0
    for path, link in files_of(input_id):
        if schema["format"] == "csv":
            with open(path, newline="", encoding="utf-8", errors="strict") as handle:
                try:
                    header = next(csv.reader(handle), [])
                except (csv.Error, UnicodeDecodeError):
                    header = None
            if header != names:
                found = "not CSV text" if header is None else f"{len(header)} columns"
                if header is not None and len(header) == len(names):
                    wrong = next(
                        i for i, (a, b) in enumerate(zip(header, names, strict=True)) if a != b
                    )
                    found = f"another name in position {wrong + 1}"
                refuse("schema-header", input_id, path, None, 0, names, f"header: {found}")
                return
            con.execute(
                "CREATE OR REPLACE TABLE raw AS SELECT * FROM "
                + csv_source([link], columns, True)
                + ", store_rejects = true)"
            )
            reject = con.execute(
                "SELECT line, column_name, error_type FROM reject_errors ORDER BY line LIMIT 1"
            ).fetchone()
            if reject is not None:
                line, column, kind = reject
                refuse(
                    "schema-row",
                    input_id,
                    path,
                    column,
                    int(line) - 1,
                    len(names),
                    f"a row that is not {len(names)} fields of CSV ({str(kind).lower()})",
                )
                return
            source = "raw"
        else:
            try:
                described = con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({literal(link)})"
                ).fetchall()
            except duckdb.Error:
                refuse("schema-format", input_id, path, None, None, "Parquet", "not a Parquet file")
                return
            found_names = [row[0] for row in described]
            if found_names != names:
                refuse(
                    "schema-header",
                    input_id,
                    path,
                    None,
                    None,
                    names,
                    f"columns: {len(found_names)} named otherwise or in another order",
                )
                return
            for (name, found_type, *_rest), column in zip(described, columns, strict=True):
                wanted = TYPES[column["type"]]
                if str(found_type) not in COMPATIBLE[wanted]:
                    refuse(
                        "schema-type",
                        input_id,
                        path,
                        name,
                        None,
                        wanted,
                        f"column {name} is {found_type} in the file",
                    )
                    return
            con.execute(
                f"CREATE OR REPLACE TABLE raw AS SELECT * FROM read_parquet({literal(link)})"
            )
            source = "raw"
        for column in columns:
            name, wanted = quote(column["name"]), TYPES[column["type"]]
            if schema["format"] == "csv":
                bad = con.execute(
                    f"SELECT min(rowid) FROM {source} WHERE {name} IS NOT NULL AND "
                    f"TRY_CAST({name} AS {wanted}) IS NULL"
                ).fetchone()[0]
                if bad is not None:
                    refuse(
                        "schema-value",
                        input_id,
                        path,
                        column["name"],
                        csv_row(path, int(bad) + 1),
                        column["type"],
                        f"a value that is not {column['type']}",
                    )
                    return
            if not column.get("nullable", True):
                empty = con.execute(
                    f"SELECT min(rowid) FROM {source} WHERE {name} IS NULL"
                ).fetchone()[0]
                if empty is not None:
                    row = int(empty) + 1
                    refuse(
                        "schema-null",
                        input_id,
                        path,
                        column["name"],
                        csv_row(path, row) if schema["format"] == "csv" else row,
                        "a value",
                        "an empty value in a column declared not nullable",
                    )
                    return
        rows += con.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
    write_stats({"rows": rows})


def load(con: Any, inputs: dict[str, Any]) -> None:
    for input_id, schema in sorted(inputs.items()):
        paths = [link for _path, link in files_of(input_id)]
        columns = schema["columns"]
        if schema["format"] == "csv":
            source = csv_source(paths, columns, False) + ")"
        else:
            listed = ", ".join(literal(p) for p in paths)
            source = f"read_parquet([{listed}])"
        cast = ", ".join(
            f"CAST({quote(c['name'])} AS {TYPES[c['type']]}) AS {quote(c['name'])}" for c in columns
        )
        con.execute(f"CREATE TABLE {quote(input_id)} AS SELECT {cast} FROM {source}")


def configure(con: Any, limits: dict[str, int]) -> None:
    """DuckDB within the run's limits, which it cannot see from the sandbox (it took the
    host's memory and cores for its own): a memory limit under the run's, so that it
    spills to the sandbox's ``/tmp`` before the sandbox's memory limit ends the run, at
    most so much spilled (``/tmp`` shares the run's disk with its outputs), and a few
    threads. Set before the inputs are loaded; ``lock_down`` then locks them."""
    spill = tempfile.mkdtemp(prefix="cleanroom-duckdb-")
    for statement in (
        f"SET memory_limit = '{int(limits['memory_mib'])}MiB'",
        f"SET max_temp_directory_size = '{int(limits['spill_mib'])}MiB'",
        f"SET threads = {int(limits['threads'])}",
        f"SET temp_directory = {literal(spill)}",
    ):
        con.execute(statement)


def lock_down(con: Any) -> None:
    """After this, the query can reach nothing but the tables in memory."""
    for statement in (
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(statement)


KEY_BYTES = 256  # cleanroom.sql.rules.MAX_DP_KEY_BYTES (tests/sql/test_engine.py checks)
SHORT = KEY_BYTES // 6


def cut_key(value: object) -> object:
    """A DP group key whose JSON text (quotes aside) takes at most KEY_BYTES bytes: the
    Worker bounds the size of the exact groups before the query runs, from their number
    and this. Groups whose keys are cut alike are added up here, in SQL (query)."""
    if not isinstance(value, str):
        return value

    def fits(end: int) -> bool:
        return len(json.dumps(value[:end], ensure_ascii=False).encode()) <= KEY_BYTES + 2

    if fits(len(value)):
        return value
    low, high = 0, len(value)  # fits(low), not fits(high): the longest prefix that fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return value[:low]


def jsonable(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    return value


def query(plan: dict[str, Any]) -> None:
    con = duckdb.connect(":memory:")
    configure(con, plan["limits"])
    load(con, plan["inputs"])
    con.create_function("__cr_cut", cut_key, ["VARCHAR"], "VARCHAR")
    lock_down(con)
    con.execute(f"CREATE TEMP TABLE __cr_result AS {plan['sql']}")
    os.makedirs(RESULT, exist_ok=True)
    if plan.get("dp"):
        # One line a released group: the query's groups with their keys cut (cut_key), the
        # groups cut alike added up, ordered by their cut keys (NULL last). The Worker
        # releases them in this order, chunk by chunk, without holding them all.
        names = [d[0] for d in con.execute("SELECT * FROM __cr_result LIMIT 0").description]
        keys = [n for n in names if n.startswith("__cr_g")]
        source = "SELECT * FROM __cr_result"
        if keys:
            places = ", ".join(str(i + 1) for i in range(len(keys)))
            # A key of at most SHORT bytes fits whatever its characters (6 bytes of JSON
            # a character at most: \u0001): only longer ones go through Python.
            columns = [
                f"CASE WHEN strlen({quote(n)}) <= {SHORT} THEN {quote(n)} "
                f"ELSE __cr_cut({quote(n)}) END AS {quote(n)}"
                for n in keys
            ] + [f"SUM({quote(n)}) AS {quote(n)}" for n in names if n not in keys]
            source = (
                f"SELECT {', '.join(columns)} FROM __cr_result GROUP BY {places} "
                f"ORDER BY {', '.join(f'{i + 1} ASC NULLS LAST' for i in range(len(keys)))}"
            )
        cursor = con.execute(source)
        names = [d[0] for d in cursor.description]
        count = 0
        with open(os.path.join(RESULT, "rows.jsonl"), "w", encoding="utf-8") as handle:
            while batch := cursor.fetchmany(10000):
                for row in batch:
                    line = {n: jsonable(v) for n, v in zip(names, row, strict=True)}
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    count += 1
        write_stats({"rows": count, "suppressed": None})
        return
    keep = plan["keep"]
    condition = " AND ".join(f"{quote(c)} >= {int(m)}" for c, m in sorted(keep.items())) or "true"
    hidden = ", ".join(quote(c) for c in sorted(keep))
    chosen = f"* EXCLUDE ({hidden})" if hidden else "*"
    # The rows under a threshold are dropped in the query itself (before HAVING, ORDER
    # BY and LIMIT) and counted from its groups alone; the filter below stays as a check.
    groups = plan.get("groups")
    counted = f"({groups}) AS __cr_groups" if groups else "__cr_result"
    suppressed = None  # withheld unless every owner whose threshold applies reports it
    if plan.get("count_suppressed") is True:
        count_sql = f"SELECT count(*) FROM {counted} WHERE NOT ({condition})"
        suppressed = int(con.execute(count_sql).fetchone()[0])
    table = con.execute(f"SELECT {chosen} FROM __cr_result WHERE {condition}").to_arrow_table()
    if plan["format"] == "parquet":
        import pyarrow.parquet as parquet  # type: ignore[import-not-found,unused-ignore]

        parquet.write_table(table, os.path.join(RESULT, "data.parquet"))
    else:
        import pyarrow.csv as arrow_csv  # type: ignore[import-not-found,unused-ignore]

        arrow_csv.write_csv(table, os.path.join(RESULT, "data.csv"))
    write_stats({"rows": table.num_rows, "suppressed": suppressed})


def run() -> None:
    with open(os.path.join(WORK, "parameters.json")) as handle:
        plan = json.load(handle)
    if plan["mode"] == "check":
        check(plan)
    elif plan["mode"] == "query":
        query(plan)
    else:
        sys.exit(2)
