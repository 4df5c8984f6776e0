"""The engine's own lock-down, below the checker: SQL that reaches DuckDB despite the
checker still cannot read or write a file, load an extension or unlock the settings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import installed_runtime
from cleanroom.enclave.sqlroom import engine_limits
from cleanroom.protocol.spec import Resources
from cleanroom.sql import ENGINE_DIRECTORY
from cleanroom.sql.privacy import Releaser, release
from cleanroom.sql.rules import MAX_DP_KEY_BYTES, MAX_DP_KEY_CHARS, dp_line_bytes, plan_query
from tests.sql.fixtures import SCHEMAS, alice_csv, sql_spec


def run_engine(
    tmp_path: Path,
    sql: str,
    *,
    direct: bool = False,
    keep: dict[str, int] | None = None,
    groups: str | None = None,
    dp: bool = False,
    limits: dict[str, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The engine on Alice's data: its query mode, or (``direct``) its limits, tables
    and lock-down, then ``sql`` as one statement on the connection. Its /tmp is
    ``tmp_path``."""
    limits = limits or engine_limits(Resources())
    try:
        runtime = installed_runtime("python3.11-data")
    except RunError as error:
        pytest.skip(f"the data runtime is not installed: {error}")
    work = tmp_path / "work"
    (work / "inputs" / "input_1").mkdir(parents=True)
    (work / "outputs").mkdir()
    (work / "inputs" / "input_1" / "data.csv").write_bytes(alice_csv())
    # The engine counts the groups under a threshold (the Worker withholds the count
    # unless every owner reports it): the count is what these tests check.
    plan = {"mode": "query", "sql": sql, "keep": keep or {}, "groups": groups, "dp": dp,
            "count_suppressed": True,
            "format": "csv", "inputs": {"input_1": SCHEMAS["input_1"]},
            "limits": limits}  # fmt: skip
    (work / "parameters.json").write_text(json.dumps(plan))
    bootstrap = f"import sys\nsys.path.insert(0, {str(ENGINE_DIRECTORY)!r})\nimport handler\n"
    if direct:
        bootstrap += (
            "import duckdb\ncon = duckdb.connect(':memory:')\n"
            f"handler.configure(con, {limits!r})\n"
            f"handler.load(con, {{'input_1': {SCHEMAS['input_1']!r}}})\nhandler.lock_down(con)\n"
            f"print(con.execute({sql!r}).fetchall())\n"
        )
    else:
        bootstrap += "handler.run()\n"
    return subprocess.run(
        [str(runtime.interpreter), "-I", "-c", bootstrap],
        env={"WORK_DIR": str(work), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_engine_runs_a_query_on_its_tables(tmp_path: Path) -> None:
    result = run_engine(tmp_path, "SELECT region, count(*) AS n FROM input_1 GROUP BY region")
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "work" / "outputs" / "result" / "data.csv").read_text()
    assert '"east",30' in data


FILES = "file system operations are disabled by configuration"
EXTENSIONS = "Loading external extensions is disabled through configuration"
LOCKED = "the configuration has been locked"


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        # reading a file, by every reader and replacement scan
        ("SELECT * FROM read_csv('/etc/passwd')", FILES),
        ("SELECT * FROM read_csv_auto(['/etc/passwd'])", FILES),
        ("SELECT * FROM read_parquet('/etc/passwd')", FILES),
        ("SELECT * FROM parquet_metadata('/etc/passwd')", FILES),
        ("SELECT * FROM read_json_auto('/etc/passwd')", FILES),
        ("SELECT * FROM read_ndjson('/etc/passwd')", FILES),
        ("SELECT * FROM read_text('/etc/hostname')", FILES),
        ("SELECT * FROM read_blob('/etc/hostname')", FILES),
        ("SELECT * FROM sniff_csv('/etc/passwd')", FILES),
        ("SELECT * FROM glob('/*')", FILES),
        ("SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", FILES),
        ("COPY input_1 FROM '/etc/passwd'", FILES),
        ("IMPORT DATABASE '/tmp'", FILES),
        # writing a file
        ("COPY input_1 TO '/tmp/cleanroom-engine-leak.csv'", FILES),
        ("COPY (SELECT 1) TO '/tmp/cleanroom-engine-leak.csv' (FORMAT parquet)", FILES),
        ("EXPORT DATABASE '/tmp/cleanroom-engine-leak.csv'", FILES),
        ("ATTACH '/tmp/cleanroom-engine-leak.csv' AS other", FILES),
        ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", FILES),
        # installing or loading an extension
        ("INSTALL httpfs", FILES),
        ("FORCE INSTALL httpfs FROM 'http://127.0.0.1:9/'", FILES),
        ("LOAD httpfs", EXTENSIONS),
        ("LOAD '/tmp/cleanroom-engine.duckdb_extension'", EXTENSIONS),
        # reaching the network
        ("SELECT * FROM read_csv('https://example.com/x.csv')", FILES),
        ("SELECT * FROM read_parquet('s3://bucket/x.parquet')", FILES),
        ("SELECT * FROM read_text('http://127.0.0.1:9/')", FILES),
        # changing the configuration back, or any other of it
        ("SET enable_external_access = true", LOCKED),
        ("RESET enable_external_access", LOCKED),
        ("SET GLOBAL enable_external_access = true", LOCKED),
        ("SET lock_configuration = false", LOCKED),
        ("RESET lock_configuration", LOCKED),
        ("SET allow_unsigned_extensions = true", LOCKED),
        ("SET autoload_known_extensions = true", LOCKED),
        ("SET autoinstall_known_extensions = true", LOCKED),
        ("SET allow_community_extensions = true", LOCKED),
        ("SET extension_directory = '/tmp'", LOCKED),
        ("SET custom_extension_repository = 'http://127.0.0.1:9'", LOCKED),
        ("SET temp_directory = '/tmp'", LOCKED),
        ("SET memory_limit = '100GB'", LOCKED),
        ("SET threads = 64", LOCKED),
        ("PRAGMA enable_profiling", LOCKED),
        ("SET profiling_output = '/tmp/cleanroom-engine-leak.csv'", LOCKED),
        ("CALL enable_logging()", LOCKED),
    ],
)
def test_sql_that_slipped_past_the_checker_still_reaches_nothing(
    tmp_path: Path, sql: str, refusal: str
) -> None:
    result = run_engine(tmp_path, sql, direct=True)
    assert result.returncode != 0
    assert refusal in result.stderr, result.stderr[-500:]
    assert not Path("/tmp/cleanroom-engine-leak.csv").exists()


def test_the_engine_runs_nothing_before_it_is_locked_down(tmp_path: Path) -> None:
    """The query mode itself: a statement the checker would never render still fails."""
    result = run_engine(tmp_path, "SELECT * FROM read_text('/etc/hostname')")
    assert result.returncode != 0
    assert FILES in result.stderr, result.stderr[-500:]
    assert not (tmp_path / "work" / "outputs" / "result" / "data.csv").exists()


@pytest.mark.parametrize(
    ("text", "suppressed"),
    [
        # a CAST that fails on some rows' values
        ("SELECT region, COUNT(*) AS n FROM input_1 WHERE CAST(region AS INTEGER) = 1 "
         "GROUP BY region", 0),
        ("SELECT CAST(region AS INTEGER) AS r, COUNT(*) AS n FROM input_1 "
         "GROUP BY CAST(region AS INTEGER)", 0),
        # an overflow for every group of two rows or more
        ("SELECT region, COUNT(*) * 4611686018427387904 AS n FROM input_1 GROUP BY region", 1),
        # a division by zero only in the group of one, which the threshold suppresses
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region "
         "HAVING COUNT(*) // (COUNT(*) - 1) > 0", 1),
        ("SELECT region, COUNT(*) % (COUNT(*) - 1) AS n FROM input_1 GROUP BY region", 1),
    ],
)  # fmt: skip
def test_whether_a_query_fails_does_not_depend_on_the_data(
    tmp_path: Path, text: str, suppressed: int
) -> None:
    """Each of these fails in DuckDB as written, on some values only: a runner would
    learn from the failure what the rules hide (and under differential privacy
    outside any ε). As the Worker renders them, they run."""
    written = run_engine(tmp_path / "as-written", text)
    assert written.returncode != 0, "the query as written must fail, or it tests nothing"
    plan = plan_query(sql_spec(), name=None, text=text)
    rendered = run_engine(
        tmp_path / "rendered", plan.sql, keep=plan.thresholds, groups=plan.groups_sql
    )
    assert rendered.returncode == 0, rendered.stderr[-500:]
    stats = json.loads(
        (tmp_path / "rendered" / "work" / "outputs" / "result" / "stats.json").read_text()
    )
    assert stats["suppressed"] == suppressed


@pytest.mark.parametrize(
    ("template", "values"),
    [
        # HAVING on the group of one ("tiny", spend 40.5): counted as suppressed or not
        ("SELECT region, COUNT(*) AS n FROM input_1 WHERE region = 'tiny' GROUP BY region "
         "HAVING SUM(spend) > {}", (40, 41)),
        # ORDER BY an aggregate of the group of one, LIMIT 1: "east" released or not
        ("SELECT region, COUNT(*) AS n FROM input_1 WHERE region IN ('east', 'tiny') "
         "GROUP BY region ORDER BY CAST(SUM(spend) > {} AS INTEGER) "
         "- CAST(COUNT(*) > 1 AS INTEGER) * 0.5 LIMIT 1", (40, 41)),
    ],
)  # fmt: skip
def test_a_group_under_the_threshold_decides_nothing_released(
    tmp_path: Path, template: str, values: tuple[int, int]
) -> None:
    """The threshold drops a group before HAVING, ORDER BY and LIMIT: otherwise one
    person's SUM decides which other rows are released, or whether the group is counted
    as suppressed (a binary search for a value the threshold hides)."""
    answers = []
    for value in values:
        plan = plan_query(sql_spec(), name=None, text=template.format(value))
        work = tmp_path / str(value)
        result = run_engine(
            work, plan.sql, keep=plan.thresholds, groups=getattr(plan, "groups_sql", None)
        )
        assert result.returncode == 0, result.stderr[-500:]
        result_dir = work / "work" / "outputs" / "result"
        stats = json.loads((result_dir / "stats.json").read_text())
        answers.append((stats, (result_dir / "data.csv").read_text()))
    assert answers[0] == answers[1]
    assert answers[0][0]["suppressed"] == 1


def dp_groups(tmp_path: Path, sql: str) -> list[dict[str, Any]]:
    """The exact groups the engine writes for the Worker under DP (``rows.jsonl``), from
    a run of ``sql`` on Alice's data that must succeed."""
    result = run_engine(tmp_path, sql, dp=True)
    assert result.returncode == 0, result.stderr[-500:]
    lines = (tmp_path / "work" / "outputs" / "result" / "rows.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "key",
    [
        "CAST(region AS BLOB)",
        "CASE WHEN region = 'tiny' THEN CAST('01:00' AS TIME) END",
        "CASE WHEN region = 'tiny' THEN INTERVAL 1 DAY END",
    ],
)
def test_whether_a_dp_query_fails_does_not_depend_on_its_groups(tmp_path: Path, key: str) -> None:
    """Under differential privacy the engine writes each group's key for the Worker. A
    key of a type JSON does not hold (BLOB, TIME, INTERVAL) failed the run exactly when
    such a group existed: ``WHERE region = 'tiny'`` told whether anyone is in "tiny",
    outside any ε (and at an ε of 1e-9 a query, 10,000 exact answers per room). Keys
    are grouped as text: the run succeeds either way."""
    text = f"SELECT {key} AS k, COUNT(*) AS n FROM input_1 WHERE region = $r GROUP BY {key}"  # noqa: S608
    spec = sql_spec(dp=True, queries={"q": {"text": text, "parameters": {"r": "text"},
                                             "output": "output_1"}})  # fmt: skip
    found = []
    for region in ("tiny", "nowhere"):
        plan = plan_query(spec, name="q", parameters={"r": region}, epsilon=1e-9)
        found.append(len(dp_groups(tmp_path / region, plan.sql)))
    assert found == [1, 0]


def test_dp_groups_are_released_under_keys_as_distinct_as_the_engines(tmp_path: Path) -> None:
    """Two DECIMAL groups that one float holds (1.0 and 1.00000000000000000001) were two
    rows for the engine and one released key for the Worker, which kept the last: the
    one person of "tiny" replaced the count of everyone else by hers, and the group
    vanished under the threshold (measured with 999 others: released in 200 releases of
    200 without her, in 0 of 200 with her). Grouped as text, the keys stay apart; the
    Worker adds up any two rows it would still key alike, never lets one replace the
    other."""
    key = "CASE WHEN region = 'tiny' THEN 1.0 ELSE 1.00000000000000000001 END"
    text = f"SELECT {key} AS k, COUNT(*) AS n FROM input_1 GROUP BY {key}"  # noqa: S608
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    rows = dp_groups(tmp_path, plan.sql)
    assert sorted((row["__cr_g0"], row["__cr_n"]) for row in rows) == [
        ("1.00000000000000000000", 1), ("1.00000000000000000001", 39)
    ]  # fmt: skip
    assert plan.dp is not None
    merged = [{"__cr_g0": 1.0, "__cr_n": 39}, {"__cr_g0": 1.0, "__cr_n": 1}]
    counts = [release(plan.dp, merged).rows for _ in range(20)]
    assert all(len(released) == 1 and abs(released[0][1] - 40) < 20 for released in counts)


def test_dp_group_keys_are_cut_so_their_size_depends_on_their_number_only(
    tmp_path: Path,
) -> None:
    """The Worker refused more than 64 MiB of exact DP groups (``dp-groups``). With keys
    made long by a literal, one person's own group moved the result across that limit:
    67,100,286 bytes without her (the run succeeded), 67,130,800 with her (it failed),
    measured with 2,199 people (DP red team 2). Keys are cut to MAX_DP_KEY_CHARS; groups
    cut to one key merge, and the engine adds them up (one line)."""
    pad = "x" * 1_000
    key = f"CONCAT('{pad}', zip)"
    text = f"SELECT {key} AS k, COUNT(*) AS n FROM input_1 GROUP BY {key}"  # noqa: S608
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    rows = dp_groups(tmp_path, plan.sql)
    assert [(row["__cr_g0"], row["__cr_n"]) for row in rows] == [("x" * MAX_DP_KEY_CHARS, 40)]


@pytest.mark.parametrize(
    "pad", ["\u00e9" * 300, "\x01" * 300, "\U0001f600" * 300, '"' * 300, "\n\\\x7f\u2028" * 75]
)
def test_each_line_of_the_exact_dp_groups_is_within_its_bound(tmp_path: Path, pad: str) -> None:
    """The Worker refuses a DP query before it runs if its exact groups could outgrow
    the Worker's limit, from their number at most times ``line_bytes`` (DP red team 2,
    F4): no line may be longer, whatever the key's characters (UTF-8 of 2 or 4 bytes,
    control characters and quotes escaped in JSON). Keys cut alike are added up."""
    handler = (ENGINE_DIRECTORY / "handler.py").read_text()
    assert f"KEY_BYTES = {MAX_DP_KEY_BYTES} " in handler
    key = "CONCAT(zip, " + "'" + pad.replace("'", "''") + "')"
    text = f"SELECT {key} AS k, COUNT(*) AS n, SUM(spend) AS s FROM input_1 GROUP BY {key}"  # noqa: S608
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    assert plan.dp is not None
    assert plan.dp.line_bytes == dp_line_bytes(1, ["__cr_n", "__cr_v0_sum", "__cr_v0_count"])
    result = run_engine(tmp_path, plan.sql, dp=True)
    assert result.returncode == 0, result.stderr[-500:]
    lines = (tmp_path / "work" / "outputs" / "result" / "rows.jsonl").read_bytes().splitlines()
    assert len(lines) == 40
    assert max(len(line) + 1 for line in lines) <= plan.dp.line_bytes
    keys = [json.loads(line)["__cr_g0"] for line in lines]
    assert all(key[:5].isdigit() and pad.startswith(key[5:]) and key[5:] for key in keys)


def test_dp_keys_are_computed_after_the_contribution_bound(tmp_path: Path) -> None:
    """Every row the bounding holds (all rows the joins and WHERE leave) carried the
    query's keys, as long as a literal made them: measured in the data runtime's DuckDB
    with 20 keys of 250 characters, 1.68 GiB at its peak for 200,000 rows of one group,
    3.23 GiB for 400,000, so a runner could bring the count of any WHERE to the sandbox's
    memory limit, byte by byte. Now the rows carry the columns the keys read, and the
    keys are computed on the bounded rows (140 and 166 MiB)."""
    pad = "y" * 250
    key = f"CONCAT(region, '{pad}')"
    text = f"SELECT {key} AS k, COUNT(*) AS n FROM input_1 GROUP BY {key}"  # noqa: S608
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    tree = sqlglot.parse_one(plan.sql, read="duckdb")
    rows = next(cte for cte in tree.find_all(exp.CTE) if cte.alias == "__cr_rows")
    assert pad not in rows.sql("duckdb")
    result = run_engine(tmp_path, plan.sql, dp=True)
    assert result.returncode == 0, result.stderr[-500:]
    lines = (tmp_path / "work" / "outputs" / "result" / "rows.jsonl").read_text().splitlines()
    counts = {json.loads(line)["__cr_g0"][:5]: json.loads(line)["__cr_n"] for line in lines}
    assert counts == {"easty": 30, "north": 9, "tinyy": 1}


def test_a_join_of_two_types_fails_on_the_data(tmp_path: Path) -> None:
    """Why joins compare columns of one type (tests/sql/test_rules.py): DuckDB casts the
    VARCHAR side to the other's type, on the rows that pass the WHERE, and fails when
    there is one. As a query of the room, its failure would tell whether anyone has
    zip 10039 (Alice's "tiny" customer), at an ε of 1e-9."""
    join = "FROM input_1 a JOIN (SELECT 1 AS code) b ON a.region = b.code WHERE a.zip = "
    for zip_code, fails in (("'10039'", True), ("'none'", False)):
        result = run_engine(
            tmp_path / zip_code.strip("'"), f"SELECT count(*) {join}{zip_code}", direct=True
        )
        assert (result.returncode != 0) == fails, result.stderr[-300:]
        assert ("Conversion Error" in result.stderr) == fails


def test_a_release_chunk_by_chunk_is_the_release_at_once() -> None:
    """The Worker releases the engine's groups chunk by chunk: the threshold and the
    scales are fixed (and confirmed by OpenDP's privacy maps) before any group is read,
    and OpenDP's threshold mechanism noises and keeps each key independently, so a group
    is released as often, and the groups in the same order, whether its chunk is one
    group or all of them. A group at the threshold: about half the time both ways.

    1,600 releases each way: a share's standard deviation is about 0.0125, so the
    bounds below are 7 to 8 of them from what is measured (0.447 both ways), the
    difference's (0.12) about 7: a chance failure once in far more than a billion
    runs. With 400, it failed once in CI (0.5225 against 0.385, 3.9 deviations)."""
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    assert plan.dp is not None
    releaser = Releaser(plan.dp)
    assert releaser.threshold is not None
    rows = [{"__cr_g0": "a", "__cr_n": round(releaser.threshold)},
            {"__cr_g0": "b", "__cr_n": 1_000}, {"__cr_g0": "c", "__cr_n": 1}]  # fmt: skip
    at_once, chunked = [], []
    for _ in range(1_600):
        at_once.append([row[0] for row in releaser.chunk(rows)])
        chunked.append([row[0] for row in releaser.chunk(rows[:1]) + releaser.chunk(rows[1:])])
    for runs in (at_once, chunked):
        assert {tuple(keys) for keys in runs} == {("a", "b"), ("b",)}, set(map(tuple, runs))
    shares = [sum("a" in keys for keys in runs) / len(runs) for runs in (at_once, chunked)]
    assert all(0.35 < share < 0.65 for share in shares) and abs(shares[0] - shares[1]) < 0.12


def test_the_engine_adds_up_dp_groups_cut_alike_and_orders_them_by_their_keys(
    tmp_path: Path,
) -> None:
    """The Worker releases the engine's groups chunk by chunk, in the order the engine
    writes them. Groups whose keys the cut makes alike must be one group before that:
    merged only where they met in one chunk, which groups met would depend on the other
    groups' places (one person's group moves a chunk's edge), and with two keys the
    groups cut alike are not even next to each other in the keys' order. The engine adds
    them up (one line per cut key) and orders the lines by their keys, NULL last. Here
    200 characters of "é" before each zip code: 205 characters, distinct in DuckDB's
    GROUP BY, each cut to its 256 bytes of JSON text, 128 é, alike."""
    pad = "\u00e9" * 200
    key = f"CONCAT('{pad}', zip)"
    region = "CASE WHEN region = 'east' THEN NULL ELSE region END"
    text = f"SELECT {key} AS k, {region} AS r, COUNT(*) AS n, SUM(spend) AS s FROM input_1 GROUP BY {key}, {region}"  # noqa: S608, E501
    plan = plan_query(sql_spec(dp=True), name=None, text=text)
    rows = dp_groups(tmp_path, plan.sql)
    assert [(row["__cr_g0"], row["__cr_g1"], row["__cr_n"]) for row in rows] == [
        ("\u00e9" * 128, "north", 9), ("\u00e9" * 128, "tiny", 1), ("\u00e9" * 128, None, 30)
    ]  # fmt: skip
    spend = [row["__cr_v0_sum"] for row in rows]
    assert spend == [sum(n % 7 * 10 + 0.5 for n in people) for people in
                     (range(30, 39), range(39, 40), range(30))]  # fmt: skip


TINY_HAVING = (
    "SELECT region, COUNT(*) AS n FROM input_1 WHERE region = 'tiny' GROUP BY region "
    "HAVING {condition} OR COUNT(*) > 0"
)


@pytest.mark.parametrize(
    "condition",
    [
        # a modulo of integers by zero (DuckDB fails it: error_on_division_by_zero)
        "1 % CAST(SUM(spend) > {} AS BIGINT) = 0",
        # text compared with a boolean: '2' is not one
        "CAST(CAST(SUM(spend) > {} AS INTEGER) * 2 AS VARCHAR) = TRUE",
        # a cast inside a cast (the inner one was left a CAST)
        "CAST(CAST(CAST(SUM(spend) > {} AS INTEGER) * 1e30 AS BIGINT) AS DOUBLE) > 0",
    ],
)
def test_a_group_under_the_threshold_cannot_fail_the_query(tmp_path: Path, condition: str) -> None:
    """The one person of "tiny" (spend 40.5) is under the threshold of 3. ``HAVING`` was
    the threshold AND the runner's condition, in one SELECT, and DuckDB evaluated ``…
    OR COUNT(*) > 0`` on her group too: the run failed exactly when her spend was at
    most the literal, a binary search for it (red team h14). The groups under a
    threshold are now dropped in a SELECT of their own, and every expression of the
    query over the groups is in TRY: as the Worker renders them, both run alike."""
    text = TINY_HAVING.replace("{condition}", condition)
    answers = []
    for value in (40, 41):
        plan = plan_query(sql_spec(), name=None, text=text.format(value))
        work = tmp_path / str(value)
        result = run_engine(work, plan.sql, keep=plan.thresholds, groups=plan.groups_sql)
        assert result.returncode == 0, result.stderr[-500:]
        result_dir = work / "work" / "outputs" / "result"
        stats = json.loads((result_dir / "stats.json").read_text())
        answers.append((stats, (result_dir / "data.csv").read_text()))
    assert answers[0] == answers[1]
    assert answers[0][0] == {"rows": 0, "suppressed": 1}


@pytest.mark.parametrize(
    ("text", "released"),
    [
        # 50% of the two groups over the threshold (east 30, north 9): one. Of all three
        # groups, ordered by n, it would have been "tiny" (1 person), then dropped.
        ("SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region ORDER BY n "
         "LIMIT 50 PERCENT", '"region","n"\n"north",9\n'),
        # names in another case or quoting, resolved as DuckDB resolves them
        ('SELECT "region", COUNT(*) AS n FROM input_1 GROUP BY "region" ORDER BY region',
         '"region","n"\n"east",30\n"north",9\n'),
        ("SELECT A.Region AS Email, COUNT(*) AS N FROM input_1 a GROUP BY a.REGION "
         "ORDER BY email DESC", '"Email","N"\n"north",9\n"east",30\n'),
        ("SELECT region, COUNT(*) AS n FROM input_1 a GROUP BY a.region ORDER BY A.Region DESC",
         '"region","n"\n"north",9\n"east",30\n'),
    ],
)  # fmt: skip
def test_a_percentage_and_names_in_any_case_are_taken_as_duckdb_takes_them(
    tmp_path: Path, text: str, released: str
) -> None:
    """``LIMIT p PERCENT`` is a percentage of the groups left after the threshold; an
    honest analyst's ``GROUP BY "region" … ORDER BY region`` runs (it was refused), and
    ``ORDER BY email`` is the output column named ``Email``, as DuckDB binds it."""
    plan = plan_query(sql_spec(), name=None, text=text)
    result = run_engine(tmp_path, plan.sql, keep=plan.thresholds, groups=plan.groups_sql)
    assert result.returncode == 0, result.stderr[-500:]
    result_dir = tmp_path / "work" / "outputs" / "result"
    assert (result_dir / "data.csv").read_text() == released
    assert json.loads((result_dir / "stats.json").read_text())["suppressed"] == 1
