"""A SQL room's review shows what the Work-ID hashes: every ε as the canonical JSON the
room reads, and where ad-hoc queries' rows go in which format.

``inspect`` showed a named query's ε rounded to 6 significant digits (``:g``) and the
ad-hoc queries without their output format; both were exact only in ``--json``. A
reviewer approves a Work-ID: two specs that read alike must not hash apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cleanroom.cli.main import main
from cleanroom.sql import engine_bundle
from tests.client.hostile_http import (
    configure_against,
    deployed_room,
    hostile_server,
    manager_of_room,
)
from tests.sql.fixtures import sql_document

COUNT = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"


def inspected(
    home: Path, capsys: pytest.CaptureFixture[str], document: dict[str, Any]
) -> tuple[str, str]:
    """``cleanroom inspect``'s output for a room of this spec, and its Work-ID."""
    room = deployed_room(document)
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        capsys.readouterr()
        assert main(["inspect", room["name"]]) == 0
    return capsys.readouterr().out, room["work_id"]


def dp_room(epsilon: float, rule_epsilon: float = 1.0, adhoc_format: str = "csv") -> Any:
    document = sql_document(dp=True)
    document["sql"]["queries"] = {
        "by_region": {"text": COUNT, "output": "output_1", "epsilon": epsilon}
    }
    document["sql"]["rules"]["input_1"]["differential_privacy"]["epsilon"] = rule_epsilon
    document["sql"]["adhoc"]["format"] = adhoc_format
    return document


def lines(out: str, start: str) -> list[str]:
    return [line for line in out.splitlines() if line.lstrip().startswith(start)]


def test_an_epsilon_is_shown_exactly_as_the_room_reads_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ε 0.1 and 0.10000001 are two Work-IDs; the review showed both as ``ε 0.1``."""
    plain, plain_id = inspected(home, capsys, dp_room(0.1))
    finer, finer_id = inspected(home, capsys, dp_room(0.10000001))
    assert plain_id != finer_id
    assert lines(plain, "query by_region") != lines(finer, "query by_region")
    assert lines(finer, "query by_region") == [
        "query by_region → output_1 (csv, ε 0.10000001); parameters: none"
    ]
    # The rule's ε, budget and δ too, as JCS writes them (1e-7, not 1e-07; 2, not 2.0).
    out, _work_id = inspected(home, capsys, dp_room(0.5, rule_epsilon=0.50000001))
    (rule,) = lines(out, "differential_privacy:")
    assert '"epsilon":0.50000001' in rule and '"budget":2,' in rule and '"delta":0.000001' in rule


def test_the_ad_hoc_queries_output_format_is_shown(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``adhoc.format`` is hashed into the Work-ID: the review named only the output."""
    shown = {}
    for file_format in ("csv", "parquet"):
        out, _work_id = inspected(home, capsys, dp_room(0.5, adhoc_format=file_format))
        (shown[file_format],) = lines(out, "ad-hoc queries:")
    assert shown["csv"] != shown["parquet"]
    assert shown["parquet"].endswith("→ output_1 (parquet), under every rule"), shown


def test_run_of_a_sql_room_is_refused_naming_the_command_that_runs_its_queries(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cleanroom run` of a SQL room opened a session and asked the Worker, whose answer
    was a bare `400 wrong fields (request-fields: expected ['query'], got ['request'])`:
    nothing said that a SQL room has no run, or what to do instead. Refused before any
    session now (this room's compute server is unreachable: a session would fail)."""
    room = deployed_room(sql_document())
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        assert main(["approve", room["name"], "--yes"]) == 0
        capsys.readouterr()
        code = main(["run", room["name"], "--wait"])
    err = capsys.readouterr().err
    assert code == 2, err  # unusable input (a command of the other kind of room), as README
    assert (
        f"error: {room['name']} is a SQL room: it has no run of its own, each query is one — "
        f"`cleanroom query {room['name']} --name QUERY` (its queries: "
    ) in err, err


def test_a_query_with_out_is_refused_before_it_runs_unless_you_receive_its_result(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`query ROOM --name Q --out DIR` by a runner who does not receive Q's output ran the
    query (spending ε where DP applies), printed its receipt, wrote nothing to DIR and said
    nothing of it, exit 0. Refused before any session now, naming the output and who
    downloads it (this room's compute server is unreachable: a session would fail)."""
    room = deployed_room(sql_document())  # output_1 goes to Alice; we are someone else
    target = tmp_path / "result"
    with hostile_server(manager_of_room(room, engine_bundle())) as url:
        configure_against(url)
        assert main(["approve", room["name"], "--yes"]) == 0
        capsys.readouterr()
        code = main(["query", room["name"], "--name", "by_segment", "--param", "skip=x",
                     "--out", str(target)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.endswith(
        f"error: --out {target}: the result of query by_segment goes to output_1, which "
        "another user receives: run it without --out (its recipient downloads it: cleanroom "
        f"data cp {room['name']}:output_1 DIR --run N)\n"
    ), err
    assert not target.exists()


def test_whether_the_suppressed_count_is_reported_is_shown_set_or_not(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report_suppressed`` absent (withheld) is left out of the hashed JSON, as every
    absent option is, and the review showed only what the JSON holds: a rule that
    withholds the count must read apart from one that reports it."""
    withheld, withheld_id = inspected(home, capsys, sql_document())
    reported, reported_id = inspected(home, capsys, sql_document(report_suppressed=True))
    assert withheld_id != reported_id
    assert lines(withheld, "report_suppressed:") == [
        "  report_suppressed: false (how many groups fell under the threshold is withheld)"
    ]
    assert lines(reported, "report_suppressed:") == [
        "  report_suppressed: true (the runner learns how many groups fell under the threshold)"
    ]
