"""How many groups a threshold suppressed is withheld from the runner unless every owner
whose threshold the query meets reports it (``report_suppressed``): ``WHERE region =
'tiny' AND zip = '10039'`` was answered "suppressed 1" or "suppressed 0", whether a
person with those values is in the data. Through a real room, the real sandbox and
engine where the count is made."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.runner import Sandbox
from cleanroom.enclave.sqlroom import run_states
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sql.rules import plan_query
from tests.enclave.test_sqlroom import make_room, query, upload
from tests.protocol.fixtures import ALICE, BOB
from tests.sandbox import confined
from tests.sql.fixtures import AGGREGATION_RULE, DP, alice_csv, bob_csv, sql_document, sql_spec

# Alice's one customer of region "tiny" has zip 10039 (alice_csv); 10038 is in "north".
PROBE = (
    "SELECT region, COUNT(*) AS n FROM input_1 WHERE region = 'tiny' AND zip = '{}' GROUP BY region"
)
PRESENT, ABSENT = "10039", "10038"


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


def reporting(*inputs: str) -> WorkSpec:
    """The fixtures' spec with ``report_suppressed: true`` in these inputs' rules."""
    document = sql_document()
    for input_id in inputs:
        document["sql"]["rules"][input_id]["report_suppressed"] = True
    return WorkSpec.parse(document)


def probed(
    tmp_path: Path, confinement: Sandbox, spec: WorkSpec, caplog: pytest.LogCaptureFixture
) -> dict[str, Any]:
    """For each zip, everything a runner, the Controller or the host sees of the probe:
    the receipt (relayed in the clear), the detail (sealed to the runner), the rows,
    the run's state and the Worker's log."""
    room = make_room(tmp_path, confinement, spec)
    upload(room, ALICE, "input_1", alice_csv())
    upload(room, BOB, "input_2", bob_csv())
    seen = {}
    for zip_code in (PRESENT, ABSENT):
        caplog.clear()
        receipt, detail, rows = query(room, ALICE, sql=PROBE.format(zip_code))
        assert receipt["status"] == "succeeded", rows
        assert rows == [["region", "n"]]  # one person: never released
        seen[zip_code] = {
            "receipt": receipt,
            "detail": detail,
            "rows": rows,
            "state": run_states(room)[str(receipt["run"])],
            "log": caplog.text,
        }
    return seen


def alike(seen: dict[str, Any]) -> dict[str, Any]:
    """What differs between two runs whatever the data: the run's number, its times, the
    salted commitment to its detail and the detail's salt, the salted manifest digest, the
    digest of the query's text (the runner's own, which names the zip)."""
    shown = copy.deepcopy(seen)
    for key in ("run", "started", "finished", "detail"):
        shown["receipt"].pop(key)
    shown["receipt"]["output"].pop("sha256")
    shown["detail"].pop("run")
    shown["detail"].pop("salt")
    shown["detail"]["query"].pop("sha256")
    shown["log"] = "\n".join(
        line.replace(f"run {seen['receipt']['run']}", "run N") for line in seen["log"].splitlines()
    )
    return shown


def test_the_suppressed_count_is_withheld_unless_the_owner_reports_it(
    tmp_path: Path, confinement: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A spec that does not name the option withholds the count: the probe of a person
    who is in the data and of one who is not are answered alike, in the sealed detail,
    the receipt, the run's state and the log; the count is null (shown "not reported")."""
    caplog.set_level(logging.DEBUG)
    seen = probed(tmp_path, confinement, sql_spec(), caplog)
    for answer in seen.values():
        assert answer["detail"]["rows"] == {"released": 0, "suppressed": None}
        assert "counted for the runner" not in json.dumps(answer["receipt"]["rules"])
    assert alike(seen[PRESENT]) == alike(seen[ABSENT])


def test_an_owner_who_reports_it_gives_the_runner_the_count(
    tmp_path: Path, confinement: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """``report_suppressed: true`` gives the count, as before, and the receipt's rules
    say so: the probe tells the person apart (which is why it is not the default)."""
    seen = probed(tmp_path, confinement, reporting("input_1"), caplog)
    assert seen[PRESENT]["detail"]["rows"] == {"released": 0, "suppressed": 1}
    assert seen[ABSENT]["detail"]["rows"] == {"released": 0, "suppressed": 0}
    assert seen[PRESENT]["receipt"]["rules"][0] == (
        "input_1: aggregation, at least 3 distinct email, groups under it counted for the runner"
    )


def test_the_count_is_reported_only_where_every_threshold_met_allows_it() -> None:
    """The strictest combination: one owner's threshold without the option withholds
    the count of a query that reads both; a query under no threshold suppresses nothing
    whatever the data (0); under differential privacy it is never reported."""
    joined = "SELECT a.region, COUNT(*) AS n FROM input_1 a JOIN input_2 b ON a.email = b.email "
    both = sql_document()
    both["sql"]["rules"]["input_2"] = {
        **copy.deepcopy(AGGREGATION_RULE),
        "dimension_columns": ["segment"],
        "aggregate_columns": {"email": ["count"]},
        "report_suppressed": True,
    }
    one_of_two = WorkSpec.parse(both)
    both["sql"]["rules"]["input_1"]["report_suppressed"] = True
    text = joined + "GROUP BY a.region"
    assert plan_query(one_of_two, name=None, text=text).report_suppressed is False
    assert plan_query(WorkSpec.parse(both), name=None, text=text).report_suppressed is True
    assert plan_query(sql_spec(), name=None, text=PROBE.format(1)).report_suppressed is False
    reported = plan_query(reporting("input_1"), name=None, text=PROBE.format(1))
    assert reported.report_suppressed is True
    listed = "SELECT b.segment FROM input_2 b JOIN input_1 a ON a.email = b.email"
    document = sql_document()
    document["sql"]["rules"]["input_1"] = {"kind": "custom"}
    document["sql"]["queries"] = {"list": {"text": listed, "output": "output_1"}}
    assert plan_query(WorkSpec.parse(document), name="list").report_suppressed is True


def test_a_spec_that_does_not_name_the_option_keeps_its_work_id() -> None:
    """Absent is left out of the hashed JSON (the vector of docs/protocol.md holds);
    ``false`` is written, so it is another Work-ID of the same meaning."""
    plain = sql_spec()
    assert "report_suppressed" not in json.dumps(plain.document())
    document = sql_document()
    document["sql"]["rules"]["input_1"]["report_suppressed"] = False
    explicit = WorkSpec.parse(document)
    assert explicit.work_id != plain.work_id
    assert plan_query(explicit, name=None, text=PROBE.format(1)).report_suppressed is False


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "list", "join_columns": ["email"], "list_columns": ["segment"],
          "report_suppressed": False}, "belongs to an aggregation rule"),
        ({"kind": "custom", "report_suppressed": True}, "belongs to an aggregation rule"),
        ({**AGGREGATION_RULE, "threshold": None, "differential_privacy": DP,
          "report_suppressed": True}, "under a threshold: none"),
        ({**AGGREGATION_RULE, "differential_privacy": DP, "report_suppressed": True},
         "never reported"),
    ],
)  # fmt: skip
def test_the_option_where_no_count_is_made_is_a_contradiction(
    rule: dict[str, Any], message: str
) -> None:
    document = sql_document()
    document["sql"]["rules"]["input_1" if rule["kind"] == "aggregation" else "input_2"] = {
        k: v for k, v in rule.items() if v is not None
    }
    if rule["kind"] == "custom":
        document["sql"]["queries"] = {}
    with pytest.raises(MessageFormatError) as caught:
        WorkSpec.parse(document)
    assert caught.value.check == "rule-contradiction"
    assert message in str(caught.value)
