"""A SQL clean room behind the tampering proxy: what the Controller relays of a query
run, and a query run's answer pointed at another run.

The proxy plays the Controller (tests/adversarial/proxy.py); the Worker, the manager
and the client are the real ones, the engine runs in the real sandbox.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path

import pytest

from cleanroom.client import sqlrooms
from cleanroom.client.access import Access, build_spec
from cleanroom.client.rooms import BadArgumentError
from cleanroom.client.sqlrooms import budget, download_result, query, receipt
from cleanroom.protocol.sql import SQL_HANDLER, SQL_RUNTIME
from cleanroom.sql import engine_bundle, engine_function_id
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import json_change, on_path, refused
from tests.e2e.conftest import User
from tests.e2e.helpers import approve
from tests.e2e.test_runtimes import require_data_runtime
from tests.sql.fixtures import alice_csv, bob_csv, sql_document


@pytest.fixture(scope="module")
def sql_room(alice: User, bob: User, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQL room of the SQL tests' fixture (tests/sql/fixtures.py), both inputs in."""
    require_data_runtime()
    name = "hostile-sql"
    sql = sql_document(report_suppressed=True)["sql"]  # the counts, not to be relayed
    sql["adhoc"]["runners"] = [alice.user_id]
    alice.client.manager.upload_function(engine_bundle())
    spec = build_spec(
        name=name, function_id=engine_function_id(), handler=SQL_HANDLER,
        access=Access(inputs={"input_1": alice.user_id, "input_2": bob.user_id},
                      outputs={"output_1": alice.user_id}),
        deployer_user_id=alice.user_id, runtime=SQL_RUNTIME, memory_mib=512, timeout_s=120,
        sql=sql,
    )  # fmt: skip
    alice.client.manager.deploy(spec)
    alice.profile.approve(name, spec.work_id, spec.function)
    approve(bob, name)
    directory = tmp_path_factory.mktemp("sql-inputs")
    for user, input_id, data in ((alice, "input_1", alice_csv()), (bob, "input_2", bob_csv())):
        (directory / input_id).mkdir()
        (directory / input_id / "data.csv").write_bytes(data)
        user.client.upload(name, input_id, directory / input_id)
    return name


def sent_by_clients(proxy: TamperingProxy) -> list[Message]:
    """What the Controller was sent but the manager's own health checks (``GET
    /v1/health``, every few seconds, through the advertised address: a test that asserted
    nothing was sent failed when one fell within it)."""
    return [m for m in proxy.seen if m.path != "/v1/health"]


def relayed(proxy: TamperingProxy) -> bytes:
    """Everything the Controller saw pass, both ways."""
    return b"\n".join(m.path.encode() + m.body + m.response for m in proxy.seen)


def test_the_controller_sees_no_parameter_query_digest_or_row_count(
    alice: User, proxy: TamperingProxy, sql_room: str
) -> None:
    """The query goes sealed to the Worker; its receipt, relayed in the clear, names the
    query and commits to the rest. Before the detail was sealed the receipt showed the
    parameters, the text's digest (an ad-hoc query confirmed by a guess) and the rows
    released and suppressed (about the data) to whoever relayed it."""
    named = query(alice.client, sql_room, name="by_segment", parameters={"skip": "zzmarkerzz"})
    assert named.detail["rows"] == {"released": 2, "suppressed": 3}
    text = "SELECT region, COUNT(*) AS n FROM input_1 GROUP BY region"
    adhoc = query(alice.client, sql_room, sql=text)
    assert adhoc.detail["query"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    seen = relayed(proxy)
    assert any(m.path.endswith(f"/runs/{adhoc.run}/receipt") for m in proxy.seen)
    hidden = {
        "parameter": b"zzmarkerzz",
        "named text digest": named.detail["query"]["sha256"].encode(),
        "ad-hoc text digest": adhoc.detail["query"]["sha256"].encode(),
        "ad-hoc text": b"GROUP BY region",
        "row counts": b"suppressed",
    }
    assert [what for what, value in hidden.items() if value in seen] == []
    assert named.receipt["detail"].encode() in seen  # the commitment is relayed


def test_an_answer_naming_an_earlier_run_of_the_same_query_is_not_taken(
    alice: User, proxy: TamperingProxy, sql_room: str
) -> None:
    """The Controller answers a query with the number of an earlier run of the same
    query and parameters: that run's receipt is genuine, signed for the same spec,
    query and parameters, so only the detail sealed under *this* run session tells the
    runner that it is not the result of the query it just sent (record-authentication).
    Her client then asks the Worker which run her query is, and returns that one: it
    ran, and asked again it would have run twice."""
    earlier = query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"})

    def to_earlier(document: dict[str, object]) -> None:
        document["run"] = earlier.run

    def on_run(message: Message) -> None:
        if message.method == "POST":
            json_change(to_earlier, response=True)(message)

    proxy.on_response = on_path("/run", on_run)
    before = budget(alice.client, sql_room)["runs"]
    result = query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"})
    assert result.run == before + 1 != earlier.run, (result.run, earlier.run)
    assert [m.status for m in proxy.seen if m.path.endswith("/fate")] == [200]
    proxy.reset()
    assert budget(alice.client, sql_room)["runs"] == before + 1


def test_a_result_downloaded_later_is_checked_against_its_own_runs_receipt(
    alice: User, proxy: TamperingProxy, sql_room: str, tmp_path: Path
) -> None:
    """The recipient downloads a run's result by its number, later. The Controller
    answers the receipt request with another run's genuine receipt (another result):
    refused (receipt-run), and nothing is written. Honestly relayed, the result is the
    one the runner saw."""
    first = query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"})
    other = query(alice.client, sql_room, name="by_segment", parameters={"skip": "retail"})
    # Both ran (the second test's hidden run may still be running when the first
    # starts: a room's runs take turns, none ends another).
    assert first.receipt["status"] == other.receipt["status"] == "succeeded"

    (others,) = {
        m.response
        for m in proxy.seen
        if m.path.endswith(f"/runs/{other.run}/receipt") and m.status == 200
    }

    def other_runs(message: Message) -> None:
        message.response = others

    proxy.on_response = on_path(f"/runs/{first.run}/receipt", other_runs)
    target = tmp_path / "result"
    refused(
        lambda: download_result(alice.client, sql_room, "output_1", first.run, target),
        "receipt-run",
    )
    assert not target.exists() and list(tmp_path.iterdir()) == []
    proxy.reset()
    result = download_result(alice.client, sql_room, "output_1", first.run, target)
    assert result.detail is None  # sealed to the runner's session, not shown again
    assert result.receipt["output"]["sha256"] == first.receipt["output"]["sha256"]
    assert sorted(result.files) == ["data.csv"]


def test_a_query_with_a_target_that_cannot_take_the_result_never_runs(
    alice: User, proxy: TamperingProxy, sql_room: str, tmp_path: Path
) -> None:
    """Refused before the query is sent: a run (and the ε it spends) is not lost to a
    result that could not be written."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.txt").write_text("mine")
    refused(
        lambda: query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"},
                      target=tmp_path / "full"),
        "output-directory",
    )  # fmt: skip
    assert sent_by_clients(proxy) == []
    assert (tmp_path / "full" / "kept.txt").read_text() == "mine"


def test_a_refused_query_shows_the_controller_nothing_of_it(
    alice: User, proxy: TamperingProxy, sql_room: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule's refusal quotes the query it refuses (a column, a parameter's value).
    What the Controller relays says only that the Worker refused; the runner's client
    opens the reasons, sealed to its session, and raises the rule's own check."""
    # The client refuses a parameter of the wrong type itself, before sending anything
    # (h32): here a client that does not, as an earlier release's, so that the Worker's
    # refusal is the one seen.
    monkeypatch.setattr(sqlrooms, "_check_query", lambda *_arguments: None)
    refused(
        lambda: query(alice.client, sql_room, sql="SELECT email, spend FROM input_1 "
                                                  "WHERE zip = 'zzsecretzz'"),
        "aggregation.dimension_columns",
    )  # fmt: skip
    refused(
        lambda: query(alice.client, sql_room, name="by_segment", parameters={"skip": 31337}),
        "sql-parameter",
    )
    seen = relayed(proxy)
    assert [w for w in (b"zzsecretzz", b"spend", b"31337", b"dimension") if w in seen] == []
    assert seen.count(b"query-refused") >= 2
    # Nor does its length: unpadded, the two sealed refusals were 323 and 307 bytes (431
    # and 410 characters of b64u), which told the rule that refused and how long what it
    # quoted of the query was.
    sealed = [json.loads(m.response)["sealed"] for m in proxy.seen if m.path.endswith("/run")]
    assert len(sealed) == 2 and len({len(s) for s in sealed}) == 1, [len(s) for s in sealed]


def test_a_query_refused_in_the_clear_as_if_its_session_were_used_is_not_taken_as_refused(
    alice: User, proxy: TamperingProxy, sql_room: str
) -> None:
    """The Controller relays the runner's query and answers her with a refusal of its own,
    one the Worker gives only to a session someone else used. The query ran (and would
    have spent ε): her client does not take the refusal as the end, asks the Worker what
    became of the session, and returns the run's checked result, so that she does not
    ask again (h13's red team: asked again under differential privacy, a query was
    charged twice for one result). tests/adversarial/test_session_fate.py has the rest."""
    before = budget(alice.client, sql_room)["runs"]

    def used(message: Message) -> None:
        if message.method == "POST" and message.status == 202:
            message.status = 409
            message.response = json.dumps(
                {"type": "about:blank", "status": 409, "check": "session-used",
                 "detail": "unknown or used session"}
            ).encode()  # fmt: skip

    proxy.on_response = on_path("/run", used)
    result = query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"})
    assert result.run == before + 1 and result.receipt["run"] == result.run
    assert [m.status for m in proxy.seen if m.path.endswith("/fate")] == [200]
    proxy.reset()
    assert budget(alice.client, sql_room)["runs"] == before + 1  # it ran, once


def test_no_such_run_is_unusable_input_only_on_the_workers_signed_count(
    alice: User, proxy: TamperingProxy, sql_room: str
) -> None:
    """`receipt ROOM --run N` of a run the room never had exits 2 (unusable input, as
    README defines it), on the attested Worker's own count of runs, signed for a fresh
    nonce (h32). The Controller relays the Worker's "no such run" in the clear: here it
    answers the receipt request of a run that exists with the Worker's genuine refusal
    of one that does not. Taken at its word, a script would read "you gave a wrong number"; the
    signed count says the run exists, so it stays a refusal (a ServerError, exit 1)."""
    ran = query(alice.client, sql_room, name="by_segment", parameters={"skip": "none"}).run
    runs = budget(alice.client, sql_room)["runs"]
    never = runs + 1
    with pytest.raises(BadArgumentError) as caught:
        receipt(alice.client, sql_room, never)
    assert caught.value.exit_code == 2 and caught.value.check == "run-number"
    assert str(caught.value) == (
        f"run-number: no such run {never}: the attested Worker signs that {sql_room} has had "
        f"{runs} query run{'' if runs == 1 else 's'} (expected a query run of this room "
        f"(1 to {runs}), got {never})"
    ), str(caught.value)

    (genuine,) = [m for m in proxy.seen if m.path.endswith(f"/runs/{never}/receipt")]
    assert genuine.status == 409

    def no_such_run(message: Message) -> None:
        message.status, message.response = genuine.status, genuine.response

    proxy.on_response = on_path(f"/runs/{ran}/receipt", no_such_run)
    error = refused(lambda: receipt(alice.client, sql_room, ran), "run-state")
    assert not isinstance(error, BadArgumentError) and error.exit_code == 1
    assert "no such run" in str(error)  # the Worker's words, relayed for another number


def test_a_query_the_approved_spec_cannot_run_is_refused_before_anything_is_sent(
    alice: User, proxy: TamperingProxy, sql_room: str
) -> None:
    """A parameter of the wrong type, a query the spec does not have, a parameter of an
    ad-hoc query: checked against the approved spec by the client (unusable input, exit
    2), nothing sent; the Worker refused them after a session, exit 1 (h32)."""
    for arguments, check in (
        ({"name": "by_segment", "parameters": {"skip": 31337}}, "sql-parameter"),
        ({"name": "by_segment", "parameters": {}}, "sql-parameter"),
        ({"name": "no_such_query"}, "sql-query"),
        ({"sql": "SELECT 1", "parameters": {"skip": "x"}}, "sql-parameter"),
    ):
        error = refused(partial(query, alice.client, sql_room, **arguments), check)
        assert error.exit_code == 2, (arguments, error)
    assert sent_by_clients(proxy) == []
