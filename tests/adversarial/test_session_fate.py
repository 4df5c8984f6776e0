"""A hostile Controller that relays a run request or a query and answers the runner with
a refusal of its own, or answers without relaying, or tampers with the runner's question
about what became of her session (docs/protocol.md, "Session fate").

Before, a forged ``502`` (or a function room's ``inputs-missing``) after the query was
relayed was believed: the runner asked again, and a query under differential privacy
was charged twice for one result (h13's red team). The client now asks the Worker, in a
new session, what became of the session: the run, or closed for good.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cleanroom.client.errors import ServerError
from cleanroom.client.sqlrooms import budget, query
from cleanroom.client.sqlrooms import receipt as sql_receipt
from cleanroom.insecure.localstack import LocalStack
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import on_path, refused
from tests.adversarial.test_hostile_controller_sql import sql_room  # noqa: F401
from tests.adversarial.test_run_session import worker_of
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write
from tests.e2e.test_cli_flow import Cli

BAD_GATEWAY = json.dumps({"type": "about:blank", "status": 502, "title": "Bad Gateway",
                          "detail": "the Worker did not answer"}).encode()  # fmt: skip
INPUTS_MISSING = json.dumps({"type": "about:blank", "status": 400, "check": "inputs-missing",
                             "expected": "every input uploaded", "actual": "missing: input_2",
                             "detail": "not every input is in"}).encode()  # fmt: skip


def relayed_then(status: int, response: bytes) -> Callable[[Message], None]:
    """Relay the run request or query, then answer the runner with ``response``."""

    def forge(message: Message) -> None:
        if message.method == "POST" and message.status in (200, 202):
            message.status, message.response = status, response

    return on_path("/run", forge)


def never_relayed(status: int, response: bytes, held: list[Message]) -> Callable[[Message], None]:
    """Keep the run request or query (in ``held``) and answer it without relaying."""

    def keep(message: Message) -> None:
        if message.path.endswith("/run"):
            message.relay = False
            message.status, message.response = status, response
            held.append(message)

    return keep


def session_of(message: Message) -> str:
    found = re.search(r"/sessions/([^/]+)/run$", message.path)
    assert found is not None, message.path
    return found.group(1)


def fates(proxy: TamperingProxy) -> list[Message]:
    return [m for m in proxy.seen if m.path.endswith("/fate")]


def refused_when_sent_late(
    held: list[Message], alice: User, room: str, hostile_stack: tuple[LocalStack, TamperingProxy]
) -> None:
    """The one request the Controller kept, sent to the Worker afterwards (as the Controller
    can, straight over its socket), is refused as a used session: it starts nothing."""
    (kept,) = held
    work_id = alice.client.approved(room)[1].work_id
    worker = worker_of(hostile_stack[0].directory, work_id)
    try:
        late = worker.post(f"/sessions/{session_of(kept)}/run", content=kept.body)
    finally:
        worker.close()
    assert late.status_code == 409 and late.json()["check"] == "session-used", late.text


# ------------------------------------------------------------ a function room


@pytest.fixture
def function_room(alice: User, bob: User, proxy: TamperingProxy, tmp_path: Path) -> Iterator[str]:
    name = f"fate-{tmp_path.name[-12:].lower().replace('_', '-')}".rstrip("-")
    deploy(alice, bob, tmp_path, name)
    approve(bob, name)
    alice.client.upload(name, "input_1", write(tmp_path / "a", "a@x\nb@x\n"))
    bob.client.upload(name, "input_2", write(tmp_path / "b", "b@x\n"))
    proxy.reset()
    try:
        yield name
    finally:
        proxy.reset()
        alice.client.delete(name)


def test_a_run_relayed_then_refused_by_the_controller_is_found_to_have_run(
    alice: User, proxy: TamperingProxy, function_room: str
) -> None:
    """The Controller relays the run request and tells the runner ``inputs-missing``:
    her client asks what became of the session, learns (sealed) that it ran, and shows
    the Worker's signed status, not the Controller's refusal."""
    proxy.on_response = relayed_then(400, INPUTS_MISSING)
    status = alice.client.run(function_room)
    assert status.state in ("running", "done"), status
    assert len(fates(proxy)) == 1 and fates(proxy)[0].status == 200


def test_a_run_never_relayed_is_closed_and_asking_again_is_safe(
    alice: User,
    proxy: TamperingProxy,
    function_room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller keeps the run request and answers ``502``: the runner's question
    closes the session (``fate-closed``), the request it kept starts nothing when it
    sends it to the Worker afterwards, and her next run is the room's one run."""
    held: list[Message] = []
    proxy.on_request = never_relayed(502, BAD_GATEWAY, held)
    error = refused(lambda: alice.client.run(function_room), "fate-closed")
    assert error.hint is not None and f"run {function_room}" in error.hint, error.hint
    refused_when_sent_late(held, alice, function_room, hostile_stack)
    proxy.reset()
    assert alice.client.run(function_room, wait=True, poll_s=0.1).succeeded


def test_a_run_answered_running_but_held_is_closed_before_it_is_sent(
    alice: User,
    proxy: TamperingProxy,
    function_room: str,
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller answers ``202 running`` itself and keeps the request to send later:
    the Worker's signed status says ``collecting`` (``run-started``, as before), and the
    client's question now also closes the session, so the request sent afterwards starts
    nothing (it did, within the session's 120 s)."""
    held: list[Message] = []
    proxy.on_request = never_relayed(202, b'{"state":"running"}', held)
    refused(lambda: alice.client.run(function_room), "run-started")
    assert len(fates(proxy)) == 1
    refused_when_sent_late(held, alice, function_room, hostile_stack)


# ---------------------------------------------------------------- a SQL room


def by_segment(alice: User, room: str) -> Callable[[], object]:
    return lambda: query(alice.client, room, name="by_segment", parameters={"skip": "none"})


def test_a_query_relayed_then_answered_502_is_found_and_not_charged_again(
    alice: User,
    proxy: TamperingProxy,
    sql_room: str,  # noqa: F811
) -> None:
    """The Controller relays the query and answers ``502``: the client learns from the
    Worker, sealed, which run its query is, and returns that run's checked result (its
    detail opens under the query's own session). One run, not two."""
    before = budget(alice.client, sql_room)["runs"]
    proxy.on_response = relayed_then(502, BAD_GATEWAY)
    result = by_segment(alice, sql_room)()
    assert result.run == before + 1 and result.detail is not None  # type: ignore[attr-defined]
    assert len(fates(proxy)) == 1
    proxy.reset()
    assert budget(alice.client, sql_room)["runs"] == before + 1


def test_a_query_never_relayed_is_closed_and_asked_again_once(
    alice: User,
    proxy: TamperingProxy,
    sql_room: str,  # noqa: F811
    hostile_stack: tuple[LocalStack, TamperingProxy],
) -> None:
    """The Controller keeps the query and answers ``502``: the question closes the
    session (``fate-closed``, no run, no ε); the query it kept is refused when it sends
    it afterwards; asked again, the query runs once."""
    before = budget(alice.client, sql_room)["runs"]
    held: list[Message] = []
    proxy.on_request = never_relayed(502, BAD_GATEWAY, held)
    refused(by_segment(alice, sql_room), "fate-closed")
    refused_when_sent_late(held, alice, sql_room, hostile_stack)
    proxy.reset()
    assert budget(alice.client, sql_room)["runs"] == before
    result = by_segment(alice, sql_room)()
    assert result.run == before + 1  # type: ignore[attr-defined]
    assert budget(alice.client, sql_room)["runs"] == before + 1


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def other_fate(
    alice: User,
    hostile_stack: tuple[LocalStack, TamperingProxy],
    sql_room: str,  # noqa: F811
) -> bytes:
    """A genuine fate answer, sealed to another of Alice's fate sessions (about a session
    never opened): what a Controller has to replay."""
    proxy = hostile_stack[1]
    proxy.reset()
    assert alice.client.fate(sql_room, "AAAAAAAAAAAAAAAAAAAAAA").ran is False
    (message,) = fates(proxy)
    proxy.reset()
    return message.response


@pytest.mark.parametrize(
    ("tamper", "check"),
    [
        ("another session's answer", "record-authentication"),
        ("made up", "record-frame"),
        ("a refusal in the clear", "session-used"),
        ("withheld", "answer"),
    ],
)
def test_a_fate_answer_the_controller_tampered_with_is_refused(
    alice: User,
    proxy: TamperingProxy,
    sql_room: str,  # noqa: F811
    other_fate: bytes,
    tamper: str,
    check: str,
) -> None:
    """The Controller relays the query, answers ``502``, then swaps the Worker's answer
    to the question for another fate session's genuine one, makes one up, refuses in the
    Worker's name, or withholds it: the client says it cannot confirm what became of
    the query (``query-unconfirmed``, naming the check that refused the answer) and
    names the command that asks again; asked honestly, the Worker says the query ran.
    It is never taken as not run, so never charged twice unknowingly."""
    before = budget(alice.client, sql_room)["runs"]

    def on_fate(message: Message) -> None:
        if tamper == "another session's answer":
            message.response = other_fate
        elif tamper == "made up":
            message.response = json.dumps({"fate": b64u(bytes(120))}).encode()
        elif tamper == "a refusal in the clear":
            message.status = 409
            message.response = json.dumps(
                {"type": "about:blank", "status": 409, "check": "session-used",
                 "detail": "unknown or used session"}
            ).encode()  # fmt: skip
        else:
            message.status, message.response = 502, BAD_GATEWAY

    forge_run = relayed_then(502, BAD_GATEWAY)

    def hook(message: Message) -> None:
        forge_run(message)
        if message.path.endswith("/fate"):
            on_fate(message)

    proxy.on_response = hook
    error = refused(by_segment(alice, sql_room), "query-unconfirmed")
    expected = "502" if check == "answer" else check
    assert expected in str(error.actual), error.actual
    assert error.hint is not None
    command = re.search(rf"`cleanroom (--profile alice fate {sql_room} -- [A-Za-z0-9_-]{{22}})`",
                        error.hint)  # fmt: skip
    assert command is not None, error.hint
    proxy.reset()
    # The command the hint names, as the runner would type it: the Worker says it ran.
    answer = Cli(alice.home)("--output", "json", *command.group(1).split())
    assert json.loads(answer.stdout) == {
        "session": command.group(1).split()[-1], "ran": True, "run": before + 1, "stored": False,
        "acknowledgement": None,
    }  # fmt: skip
    assert budget(alice.client, sql_room)["runs"] == before + 1


def test_a_query_whose_receipt_is_withheld_is_said_to_have_run(
    alice: User,
    proxy: TamperingProxy,
    sql_room: str,  # noqa: F811
) -> None:
    """The Controller relays the query and its answer, then refuses its receipt (``502``):
    the client does not leave the runner to think the query failed (and ask it again):
    the Worker says it ran, and the refusal names the command that fetches its receipt."""
    before = budget(alice.client, sql_room)["runs"]

    def withhold(message: Message) -> None:
        if "/runs/" in message.path and message.path.endswith("/receipt"):
            message.status, message.response = 502, BAD_GATEWAY

    proxy.on_response = withhold
    error = refused(by_segment(alice, sql_room), "query-receipt")
    assert error.hint is not None and f"receipt {sql_room} --run {before + 1}" in error.hint
    proxy.reset()
    assert budget(alice.client, sql_room)["runs"] == before + 1
    for _ in range(600):  # as the hint says, once the run ended (it was refused at once)
        try:
            fetched = sql_receipt(alice.client, sql_room, before + 1)
            break
        except ServerError as pending:
            assert pending.check == "run-state", pending
            time.sleep(0.5)
    assert fetched.receipt["run"] == before + 1


def test_the_fate_command_takes_a_session_id_that_begins_with_a_dash(
    alice: User,
    proxy: TamperingProxy,
    sql_room: str,  # noqa: F811
) -> None:
    """One session id in 64 begins with ``-``: the hint's command puts it after ``--``
    (without it, the command line took the id for an option and exited 2)."""
    answer = Cli(alice.home)(
        "--output", "json", "--profile", "alice", "fate", sql_room, "--", "-" + "A" * 21
    )
    assert json.loads(answer.stdout) == {
        "session": "-" + "A" * 21,
        "ran": False,
        "run": None,
        "stored": False,
        "acknowledgement": None,
    }
