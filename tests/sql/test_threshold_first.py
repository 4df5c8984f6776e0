"""A group under a threshold decides nothing, not even whether the query runs: through a
real room, the real sandbox and engine (red team h14). Needs what the sandbox needs
(root, bubblewrap, util-linux) and the data runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.enclave.runner import Sandbox
from tests.enclave.test_sqlroom import make_room, query, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import alice_csv, bob_csv, sql_spec

# The one person of "tiny" spends 40.5 (alice_csv), under the threshold of 3 people.
TINY = (
    "SELECT region, COUNT(*) AS n FROM input_1 WHERE region = 'tiny' GROUP BY region "
    "HAVING 1 % CAST(SUM(spend) > {} AS BIGINT) = 0 OR COUNT(*) > 0"
)


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def test_whether_a_query_runs_says_nothing_of_a_group_under_the_threshold(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """``HAVING`` was the threshold AND the runner's condition, in one SELECT, and DuckDB
    evaluated the condition on her group too: ``1 % 0`` (of integers) failed the run
    exactly when her spend was at most the literal, so two queries a literal apart told
    her spend to within it, and a binary search to the cent. Both now run, alike."""
    room = make_room(tmp_path, confinement, sql_spec(report_suppressed=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    answers = []
    for value in (40, 41):
        receipt, detail, rows = query(room, ALICE, sql=TINY.format(value))
        assert receipt["status"] == "succeeded", rows
        answers.append((detail["rows"], rows))
    assert answers[0] == answers[1] == ({"released": 0, "suppressed": 1}, [["region", "n"]])


def test_an_honest_query_in_any_case_and_a_percentage_run_through_a_room(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """``GROUP BY "region" … ORDER BY region`` was refused before any data was read (an
    honest analyst's query); ``LIMIT 50 PERCENT`` is of the groups over the threshold
    (east 30 and north 9; "tiny", one person, is suppressed, never counted in it)."""
    room = make_room(tmp_path, confinement, sql_spec(report_suppressed=True))
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    receipt, detail, rows = query(
        room, ALICE, sql='SELECT "region", COUNT(*) AS n FROM input_1 /* all */ '
        "GROUP BY \"Region\" ORDER BY region LIMIT 50 PERCENT",
    )  # fmt: skip
    assert receipt["status"] == "succeeded", rows
    assert detail["rows"] == {"released": 1, "suppressed": 1}
    assert rows == [["region", "n"], ["east", "30"]]
