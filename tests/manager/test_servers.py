"""Many compute servers: registration, health checks, lost rooms, scheduling under load.

The Controllers here are the stand-in of conftest.py with a health endpoint and a
room endpoint added, so each test can make one answer what it needs (healthy,
degraded, another TEE, gone). The health checker is the manager's own
(:class:`cleanroom.manager.servers.HealthChecker`) on the manager's database,
driven one round at a time with a pinned clock; one test runs it as the manager
runs it, from the app's lifespan.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager import Settings, audit, create_app, servers
from cleanroom.manager import admin as operations
from cleanroom.manager.database import AuditEntry, ComputeServer, Room
from cleanroom.manager.keys import KeyRing
from cleanroom.manager.servers import (
    STALE_DEPLOY_MARGIN,
    HealthChecker,
    Observation,
    deploy_outcome,
    judge,
)
from cleanroom.tokens import TokenIssuer
from tests.auth import as_client

from .conftest import (
    Manager,
    StandInController,
    _check_token,
    _controller_app,
    bind,
    closed_port_url,
    make_bundle,
    make_spec,
    operator,
    serve,
    url_of,
)


@dataclass
class Controller(StandInController):
    """A stand-in Controller whose health and room answers the test sets."""

    name: str = ""
    health: dict[str, Any] = field(default_factory=lambda: {"status": "ok", "tee": "simulated"})
    health_status: int = 200
    gone: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)


def _app(manager: Manager, record: Controller) -> FastAPI:
    app = _controller_app(manager.url, record)

    @app.get("/v1/health")
    def health() -> JSONResponse:
        rooms = len(set(record.deployed) - record.gone)
        return JSONResponse({**record.health, "rooms": rooms}, status_code=record.health_status)

    @app.get("/v1/rooms/{name}")
    def room(name: str, request: Request) -> JSONResponse:
        refused = _check_token(manager.url, record, request, "status", name)
        if refused is not None:
            return refused
        record.asked.append(name)
        if name in record.gone:
            return JSONResponse({"detail": f"the Worker of {name!r} is gone"}, status_code=410)
        if name not in record.deployed:
            return JSONResponse({"detail": "no such room"}, status_code=404)
        return JSONResponse({"name": name, "state": "collecting"})

    return app


@pytest.fixture
def start_controllers(
    manager: Manager,
) -> Iterator[Callable[..., Controller]]:
    """Start stand-in Controllers with health endpoints, registered with ``manager``."""
    running: list[Any] = []

    def start(name: str, *, capacity: int = 20, tee: str = "simulated") -> Controller:
        sock = bind()
        record = Controller(url_of(sock), name=name)
        context = serve(_app(manager, record), sock)
        context.__enter__()
        running.append(context)
        with manager.sessions() as session:
            added = operations.add_server(
                session, record.url, name, capacity=capacity, tee_kind=tee
            )
            record.credentials = added.credentials
        return record

    yield start
    for context in reversed(running):
        context.__exit__(None, None, None)


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def checker(manager: Manager, clock: Clock) -> Iterator[HealthChecker]:
    """The manager's health checker on its database: 3 failures, lost after 60 s."""
    issuer = TokenIssuer(manager.url, KeyRing.open(manager.settings.data_dir))

    def headers_for(url: str, project: str, room: str, scope: str) -> dict[str, str]:
        token, _ = issuer.issue(
            "cleanroom-manager", audience=url, scope=scope, project=project, room=room
        )
        return {"Authorization": f"Bearer {token}"}

    health = HealthChecker(manager.sessions, manager.settings, headers_for, clock=clock)
    yield health
    health.close()


@pytest.fixture
def acme(manager: Manager, tmp_path: Path) -> tuple[ManagerClient, str]:
    client, _ = manager.login("acme")
    return client, client.upload_function(make_bundle(tmp_path / "function")).function_id


def server_row(manager: Manager, name: str) -> ComputeServer:
    with manager.sessions() as session:
        server = session.scalar(select(ComputeServer).where(ComputeServer.name == name))
        assert server is not None
        return server


def audit_log(manager: Manager, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    with manager.sessions() as session:
        return [
            (entry.actor, entry.target, json.loads(entry.details))
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        ]


def deploy_refusal(client: ManagerClient, spec: Any) -> ServerError:
    with pytest.raises(ServerError) as caught:
        client.deploy(spec)
    return caught.value


# -- judge: the health rules as a table -------------------------------------------------

NOW = 1_800_000_000
ADDED = NOW - 1000


def stored(state: str, failures: int = 0, last_seen: int | None = None) -> ComputeServer:
    return ComputeServer(
        name="c1",
        url="http://c1",
        state=state,
        failures=failures,
        last_seen=last_seen,
        reason="before" if state in ("unhealthy", "lost") else None,
        created=ADDED,
    )


UP = Observation(True, rooms=0)
DOWN = Observation(False, error="connection refused")
WRONG_TEE = Observation(True, problem="tee-kind: registered as 'gramine'", rooms=0)


@pytest.mark.parametrize(
    ("before", "seen", "state", "failures", "last_seen", "reason"),
    [
        (stored("unknown"), UP, "healthy", 0, NOW, None),
        (stored("unhealthy", 5, NOW - 100), UP, "healthy", 0, NOW, None),
        (stored("lost", 9, NOW - 500), UP, "healthy", 0, NOW, None),
        (stored("healthy"), WRONG_TEE, "unhealthy", 0, NOW, "tee-kind: registered as 'gramine'"),
        (stored("healthy", 0, NOW - 5), DOWN, "healthy", 1, NOW - 5, None),
        (stored("healthy", 1, NOW - 10), DOWN, "healthy", 2, NOW - 10, None),
        (
            stored("healthy", 2, NOW - 15),
            DOWN,
            "unhealthy",
            3,
            NOW - 15,
            "3 health checks failed in a row (last: connection refused)",
        ),
        (
            stored("unhealthy", 3, NOW - 60),
            DOWN,
            "lost",
            4,
            NOW - 60,
            f"stopped answering at {servers.timestamp(NOW - 60)} (last: connection refused)",
        ),
        # Silent for long, but not failed N times in a row yet (the manager was down): not lost.
        (stored("healthy", 0, NOW - 3600), DOWN, "healthy", 1, NOW - 3600, None),
        (
            stored("unknown", 2, None),
            DOWN,
            "lost",
            3,
            None,
            f"has not answered since it was added at {servers.timestamp(ADDED)} "
            "(last: connection refused)",
        ),
        (stored("lost", 7, NOW - 500), DOWN, "lost", 8, NOW - 500, "before"),
    ],
    ids=[
        "first-answer",
        "unhealthy-answers-again",
        "lost-answers-again",
        "wrong-tee-is-unhealthy-at-once",
        "one-failure-keeps-state",
        "two-failures-keep-state",
        "third-failure-is-unhealthy",
        "silent-past-lost-after-is-lost",
        "long-silence-alone-is-not-lost",
        "never-answered-is-lost-after-grace",
        "lost-stays-lost",
    ],
)
def test_judge(
    before: ComputeServer,
    seen: Observation,
    state: str,
    failures: int,
    last_seen: int | None,
    reason: str | None,
) -> None:
    verdict = judge(before, seen, NOW, failures_allowed=3, lost_after=60)
    assert (verdict.state, verdict.failures, verdict.last_seen, verdict.reason) == (
        state,
        failures,
        last_seen,
        reason,
    )


# -- health checks against Controllers on loopback --------------------------------------


def test_a_healthy_controller_is_healthy(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    clock: Clock,
) -> None:
    start_controllers("c1")
    assert server_row(manager, "c1").state == "unknown"
    checker.check_all()
    server = server_row(manager, "c1")
    assert (server.state, server.reason, server.failures) == ("healthy", None, 0)
    assert server.last_seen == int(clock.now)
    assert audit_log(manager, "server.state_changed") == [
        (
            "cleanroom-manager",
            "c1",
            {
                "url": server.url,
                "before": "unknown",
                "after": "healthy",
                "reason": None,
                "rooms_lost": [],
            },
        )
    ]
    checker.check_all()  # no change, no new entry
    assert len(audit_log(manager, "server.state_changed")) == 1


def test_a_controller_of_another_tee_kind_is_unhealthy(
    manager: Manager, start_controllers: Callable[..., Controller], checker: HealthChecker
) -> None:
    start_controllers("c1", tee="gramine")
    checker.check_all()
    server = server_row(manager, "c1")
    assert server.state == "unhealthy"
    assert server.reason == "tee-kind: registered as 'gramine', its Controller reports 'simulated'"


def test_a_degraded_controller_is_unhealthy(
    manager: Manager, start_controllers: Callable[..., Controller], checker: HealthChecker
) -> None:
    controller = start_controllers("c1")
    controller.health["status"] = "degraded"
    checker.check_all()
    server = server_row(manager, "c1")
    assert server.state == "unhealthy"
    assert server.reason is not None and "status 'degraded'" in server.reason


@pytest.mark.parametrize("answer", ["500", "not-json", "no-tee"])
def test_a_controller_that_answers_no_health_document_is_a_failure(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    answer: str,
) -> None:
    controller = start_controllers("c1")
    if answer == "500":
        controller.health_status = 500
    elif answer == "no-tee":
        del controller.health["tee"]
    else:
        controller.health = ["not", "a", "document"]  # type: ignore[assignment]
    for _ in range(3):
        checker.check_all()
    server = server_row(manager, "c1")
    assert (server.state, server.failures, server.last_seen) == ("unhealthy", 3, None)
    assert server.reason is not None and "3 health checks failed in a row" in server.reason


def lost_scenario(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    client: ManagerClient,
    function: str,
) -> tuple[Controller, Controller, list[str]]:
    """Two healthy servers with two rooms each; c2 then stops answering."""
    first, second = start_controllers("c1"), start_controllers("c2")
    checker.check_all()
    urls = [client.deploy(make_spec(function, name=f"room-{i}")).compute_url for i in range(4)]
    assert urls == [first.url, second.url, first.url, second.url]
    second.health_status = 503  # its Controller no longer answers a health document
    return first, second, ["room-1", "room-3"]


def test_unhealthy_keeps_rooms_deployed_and_lost_loses_them(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    clock: Clock,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    first, _, on_second = lost_scenario(manager, start_controllers, checker, client, function)
    last_seen = int(clock.now)
    for _ in range(3):
        clock.now += 5
        checker.check_all()
    assert server_row(manager, "c2").state == "unhealthy"
    assert [client.room(name).state for name in on_second] == ["deployed", "deployed"]
    # Unhealthy is not schedulable: new rooms go to c1 meanwhile.
    assert client.deploy(make_spec(function, name="room-4")).compute_url == first.url

    clock.now = last_seen + 61
    checker.check_all()
    server = server_row(manager, "c2")
    assert server.state == "lost"
    assert server.reason is not None
    assert server.reason.startswith(f"stopped answering at {servers.timestamp(last_seen)}")
    expected = (
        f"compute server c2 stopped answering at {servers.timestamp(last_seen)}; a clean "
        "room's data lives only inside its enclave and cannot be recovered elsewhere: redeploy"
    )
    for name in on_second:
        room = client.room(name)
        assert (room.state, room.reason) == ("lost", expected)
    assert {client.room(name).state for name in ("room-0", "room-2", "room-4")} == {"deployed"}
    assert audit_log(manager, "room.lost") == [
        ("cleanroom-manager", name, {"compute_server": "c2", "reason": expected})
        for name in on_second
    ]
    changes = audit_log(manager, "server.state_changed")
    assert [(target, details["after"]) for _, target, details in changes[2:]] == [
        ("c2", "unhealthy"),
        ("c2", "lost"),
    ]  # after both became healthy, in whichever order the parallel first checks ended
    assert changes[-1][2]["rooms_lost"] == on_second
    # A lost room's name stays taken until its project deletes it; then it is free.
    assert deploy_refusal(client, make_spec(function, name="room-1")).status == 409
    assert client.delete("room-1").state == "deleted"
    assert client.deploy(make_spec(function, name="room-1")).compute_url == first.url


def test_a_lost_server_that_answers_again_is_healthy_but_its_rooms_stay_lost(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    clock: Clock,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    _, second, on_second = lost_scenario(manager, start_controllers, checker, client, function)
    for _ in range(4):
        clock.now += 30
        checker.check_all()
    assert server_row(manager, "c2").state == "lost"
    second.health_status = 200
    checker.check_all()
    assert server_row(manager, "c2").state == "healthy"
    assert [client.room(name).state for name in on_second] == ["lost", "lost"]
    assert client.deploy(make_spec(function, name="room-4")).compute_url == second.url


def test_a_room_whose_worker_died_is_lost(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    controller = start_controllers("c1")
    for name in ("alive", "dead", "forgotten"):
        client.deploy(make_spec(function, name=name))
    checker.check_all()
    assert controller.asked == []  # it runs as many rooms as expected: nothing to ask
    controller.gone.add("dead")
    del controller.deployed["forgotten"]  # a Controller restarted without it: 404
    checker.check_all()
    assert sorted(controller.asked) == ["alive", "dead", "forgotten"]
    assert client.room("alive").state == "deployed"
    dead, forgotten = client.room("dead"), client.room("forgotten")
    assert dead.state == forgotten.state == "lost"
    assert dead.reason == (
        "compute server c1 no longer runs its Worker (410: the Worker of 'dead' is gone); "
        "a clean room's data lives only inside its enclave and cannot be recovered "
        "elsewhere: redeploy"
    )
    assert forgotten.reason is not None and "(404: no such room)" in forgotten.reason
    assert server_row(manager, "c1").state == "healthy"
    assert [target for _, target, _ in audit_log(manager, "room.lost")] == ["dead", "forgotten"]


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b'{"state": "collecting"}', "deployed"),
        (200, b'{"state": "running"}', "deployed"),
        (200, b'{"state": "done"}', "deployed"),
        (200, b'{"state": "failed"}', "deployed"),  # its run failed; the Worker is there
        (200, b'{"state": "deleted"}', "failed"),
        (404, b'{"detail": "no such room"}', "failed"),
        (410, b'{"detail": "gone"}', "failed"),
        (200, b'{"state": "starting"}', None),
        (200, b'{"name": "x"}', None),
        (200, b'["collecting"]', None),
        (200, b"collecting", None),
        (500, b'{"state": "collecting"}', None),
        (502, b"", None),
        (401, b'{"detail": "bad token"}', None),
    ],
)
def test_what_a_controllers_answer_makes_of_a_stale_deploy(
    status: int, body: bytes, outcome: str | None
) -> None:
    assert deploy_outcome(httpx.Response(status, content=body)) == outcome


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"detail": "no such room"}', "no such room"),
        (b'{"detail": "refused", "check": "token-room"}', "refused (check token-room)"),
        (b'{"detail": "two\\n  lines", "check": 7}', "two lines"),
        (b'{"detail": ["not text"]}', '{"detail": ["not text"]}'),
        (b"plain\ntext", "plain text"),
        (b"", "Not Found"),
        (b"x" * 400, "x" * 299 + "\u2026"),
    ],
)
def test_what_a_controller_said_is_one_line_naming_its_check(body: bytes, said: str) -> None:
    assert servers.answer_detail(httpx.Response(404, content=body)) == said


def test_deploys_a_stopped_manager_left_unfinished_are_settled(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    clock: Clock,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    controller = start_controllers("c1", capacity=2)
    for name in ("went-through", "never-arrived"):
        client.deploy(make_spec(function, name=name))
    del controller.deployed["never-arrived"]
    # As a manager that died waiting for the Controller leaves them: still deploying.
    with manager.sessions() as session:
        for room in session.scalars(select(Room)):
            room.state = "deploying"
        session.commit()
    assert "is full" in deploy_refusal(client, make_spec(function, name="third")).detail
    checker.check_all()  # within the deploy timeout: a manager may still be waiting
    assert {client.room(name).state for name in ("went-through", "never-arrived")} == {"deploying"}
    clock.now = time.time() + manager.settings.controller_timeout + STALE_DEPLOY_MARGIN + 1
    checker.check_all()
    assert client.room("went-through").state == "deployed"
    never = client.room("never-arrived")
    assert never.state == "failed"
    assert never.reason == (
        "the manager stopped while deploying it, and compute server c1 "
        "does not run its Worker (404: no such room)"
    )
    assert client.deploy(make_spec(function, name="third")).compute_url == controller.url
    settled = {target: details for _, target, details in audit_log(manager, "room.failed")}
    assert "stopped" in settled["never-arrived"]["settled"]
    assert "went-through" in {target for _, target, _ in audit_log(manager, "room.deployed")}


def test_the_manager_checks_health_by_itself_while_it_runs(
    tmp_path: Path, database_url: str | None
) -> None:
    # The app's lifespan starts the checks (the `manager` fixture runs without one).
    sock = bind()
    settings = Settings(
        data_dir=tmp_path / "lifespan",
        public_url=url_of(sock),
        database_url=database_url,
        health_interval=0.05,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    controller = FastAPI()
    controller.get("/v1/health")(lambda: {"status": "ok", "tee": "simulated", "rooms": 0})
    controller_sock = bind()
    sessions = app.state.manager.sessions
    try:
        with serve(controller, controller_sock):
            with sessions() as session:
                operations.add_server(session, url_of(controller_sock), "c1")
            deadline = time.monotonic() + 60
            state = "unknown"
            while state != "healthy" and time.monotonic() < deadline:
                time.sleep(0.05)
                with sessions() as session:
                    state = session.scalars(select(ComputeServer.state)).one()
            assert state == "healthy"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sessions.kw["bind"].dispose()
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"compute server health checks", "function garbage collection"}


# -- scheduling -------------------------------------------------------------------------


def test_least_loaded_is_by_fraction_of_capacity(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    small, large = start_controllers("small", capacity=1), start_controllers("large", capacity=3)
    urls = [client.deploy(make_spec(function, name=f"room-{i}")).compute_url for i in range(4)]
    # 0/1 vs 0/3 tie → small (older); then 1/1 is full → large thrice.
    assert urls == [small.url, large.url, large.url, large.url]
    refused = deploy_refusal(client, make_spec(function, name="room-4"))
    assert refused.status == 503
    assert refused.detail == (
        "no compute server can take a new clean room: "
        f"small ({small.url}) is full (1 of 1 live rooms); "
        f"large ({large.url}) is full (3 of 3 live rooms)"
    )


def test_503_names_why_each_server_cannot_take_a_room(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    full = start_controllers("full", capacity=1)
    start_controllers("wrong-tee", tee="gramine")
    gone = start_controllers("gone")
    checker.check_all()
    client.deploy(make_spec(function, name="room-0"))
    with manager.sessions() as session:
        operations.remove_server(session, "gone")
    answer = httpx.post(
        f"{manager.url}/v1/rooms",
        json={"spec": make_spec(function, name="room-1").document()},
        headers=as_client(client, "POST", f"{manager.url}/v1/rooms"),
    )
    assert answer.status_code == 503
    assert answer.json()["servers"] == [
        f"full ({full.url}) is full (1 of 1 live rooms)",
        f"wrong-tee ({start_url(manager, 'wrong-tee')}) is unhealthy: tee-kind: registered "
        "as 'gramine', its Controller reports 'simulated'",
        f"gone ({gone.url}) is removed",
    ]
    assert [room.name for room in client.rooms()] == ["room-0"]


def start_url(manager: Manager, name: str) -> str:
    return server_row(manager, name).url


def test_a_failed_deploy_frees_its_slot(manager: Manager, acme: tuple[ManagerClient, str]) -> None:
    client, function = acme
    url = closed_port_url()
    with manager.sessions() as session:
        operations.add_server(session, url, "only", capacity=1)
    for name in ("first", "second"):  # the second is not "full": the first failed
        refused = deploy_refusal(client, make_spec(function, name=name))
        assert refused.status == 502 and url in refused.detail
    assert [room.state for room in client.rooms()] == ["failed", "failed"]
    assert [target for _, target, _ in audit_log(manager, "room.failed")] == ["first", "second"]


@pytest.mark.parametrize("capacities", [(1,), (1, 2)], ids=["one-slot", "three-slots"])
def test_concurrent_deploys_never_oversubscribe(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    acme: tuple[ManagerClient, str],
    capacities: tuple[int, ...],
) -> None:
    client, function = acme
    controllers = [
        start_controllers(f"c{i}", capacity=capacity) for i, capacity in enumerate(capacities)
    ]
    attempts = 12
    start = threading.Barrier(attempts)
    statuses: list[int] = []
    lock = threading.Lock()

    def deploy(i: int) -> None:
        spec = make_spec(function, name=f"room-{i}")
        start.wait()
        answer = httpx.post(
            f"{manager.url}/v1/rooms",
            json={"spec": spec.document()},
            headers=as_client(client, "POST", f"{manager.url}/v1/rooms"),
            timeout=60,
        )
        with lock:
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = sum(capacities)
    assert sorted(statuses) == [201] * slots + [503] * (attempts - slots)
    live = [room for room in client.rooms() if room.state == "deployed"]
    assert len(live) == slots
    for controller, capacity in zip(controllers, capacities, strict=True):
        assert len(controller.deployed) == capacity
        assert sum(room.compute_url == controller.url for room in live) == capacity


# -- registration and removal -----------------------------------------------------------


def test_add_server_records_capacity_and_tee_and_refuses_bad_ones(manager: Manager) -> None:
    with manager.sessions() as session:
        added = operations.add_server(
            session, "http://10.0.0.1:8081/", "c1", capacity=3, tee_kind="gramine"
        )
        server = added.server
        assert (server.url, server.capacity, server.tee_kind, server.state) == (
            "http://10.0.0.1:8081",
            3,
            "gramine",
            "unknown",
        )
        # Its credentials: a client id of its own, a secret only its hash is kept of.
        credentials = added.credentials
        assert credentials.client_id == server.client_id
        assert credentials.client_id.startswith("cs-") and credentials.url == server.url
        assert server.secret_hash is not None and server.secret_hash.startswith("$argon2id$")
        assert credentials.client_secret not in server.secret_hash
        refusals = {
            "capacity": lambda: operations.add_server(session, "http://10.0.0.2", capacity=0),
            "tee": lambda: operations.add_server(session, "http://10.0.0.2", tee_kind="sev"),
            "url": lambda: operations.add_server(session, "http://10.0.0.1:8081", "other"),
            "name": lambda: operations.add_server(session, "http://10.0.0.3", "c1"),
        }
        messages = {}
        for what, call in refusals.items():
            with pytest.raises(operations.AdminError) as caught:
                call()
            messages[what] = str(caught.value)
    assert messages == {
        "capacity": "capacity must be at least 1, not 0",
        "tee": "TEE kind 'sev' is not one of simulated, gramine",
        "url": "a compute server at http://10.0.0.1:8081 is registered (as 'c1')",
        "name": "a compute server named 'c1' is registered",
    }
    assert audit_log(manager, "server.added") == [
        (
            audit.OPERATOR,
            "c1",
            {
                "url": "http://10.0.0.1:8081",
                "capacity": 3,
                "tee_kind": "gramine",
                "again": False,
                "client_id": credentials.client_id,
            },
        )
    ]


def test_remove_is_refused_while_rooms_live_unless_forced(
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    acme: tuple[ManagerClient, str],
) -> None:
    client, function = acme
    controller = start_controllers("c1")
    client.deploy(make_spec(function, name="room-a"))
    client.deploy(make_spec(function, name="room-b"))
    with manager.sessions() as session, pytest.raises(operations.AdminError) as caught:
        operations.remove_server(session, "c1")
    assert str(caught.value) == (
        "compute server c1 hosts 2 live clean room(s) (room-a, room-b); removing it loses "
        "them: give --force to mark them lost"
    )
    assert client.room("room-a").state == "deployed"
    with manager.sessions() as session:
        removed, lost = operations.remove_server(session, controller.url, force=True, now=NOW)
    assert (removed.name, lost) == ("c1", ["room-a", "room-b"])
    reason = (
        f"compute server c1 was removed by the operator at {servers.timestamp(NOW)}; a clean "
        "room's data lives only inside its enclave and cannot be recovered elsewhere: redeploy"
    )
    assert [(room.state, room.reason) for room in client.rooms()] == [("lost", reason)] * 2
    assert audit_log(manager, "server.removed") == [
        (audit.OPERATOR, "c1", {"url": controller.url, "forced": True, "rooms_lost": lost})
    ]
    assert [actor for actor, _, _ in audit_log(manager, "room.lost")] == [audit.OPERATOR] * 2
    # Never scheduled again, never checked again.
    assert deploy_refusal(client, make_spec(function, name="room-c")).detail == (
        f"no compute server can take a new clean room: c1 ({controller.url}) is removed"
    )
    controller.health_status = 500
    checker.check_all()
    assert server_row(manager, "c1").failures == 0
    with manager.sessions() as session, pytest.raises(operations.AdminError) as again:
        operations.remove_server(session, "c1")
    assert "already removed" in str(again.value)
    with manager.sessions() as session, pytest.raises(operations.AdminError) as unknown:
        operations.remove_server(session, "c9")
    assert str(unknown.value) == "no compute server named or at 'c9'"
    # The lost rooms can be deleted although their server is gone from the schedule.
    assert client.delete("room-a").state == "deleted"


def test_a_removed_server_added_again_is_scheduled_again(
    manager: Manager, start_controllers: Callable[..., Controller], acme: tuple[ManagerClient, str]
) -> None:
    client, function = acme
    controller = start_controllers("c1")
    with manager.sessions() as session:
        operations.remove_server(session, "c1")
        added = operations.add_server(session, controller.url, capacity=5)
        controller.credentials = added.credentials  # new credentials: the old are refused
        again = added.server
        assert (again.name, again.removed, again.capacity, again.state) == (
            "c1",
            False,
            5,
            "unknown",
        )
    assert client.deploy(make_spec(function)).compute_url == controller.url
    assert audit_log(manager, "server.added")[-1][2]["again"] is True


def test_server_commands(
    tmp_path: Path,
    manager: Manager,
    start_controllers: Callable[..., Controller],
    checker: HealthChecker,
    acme: tuple[ManagerClient, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, function = acme
    start_controllers("small", capacity=1)
    checker.check_all()
    client.deploy(make_spec(function))
    url = closed_port_url()
    add = ["server", "add", url, "--name", "big", "--capacity", "7", "--tee", "gramine"]
    capsys.readouterr()
    out = tmp_path / "big.json"
    assert operator(manager, *add, "--credentials-out", str(out)) == 0
    shown = capsys.readouterr()
    printed = shown.out.splitlines()
    assert printed[0] == f"compute server big at {url} added"
    written = json.loads(out.read_text())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert written["type"] == "cleanroom/compute-credentials/v1" and written["url"] == url
    # Written to the file, the secret is on the terminal nowhere (its scrollback, a CI
    # job's log): it was printed on stdout as well (h24).
    assert printed[1:] == [
        f"client_id:     {written['client_id']}",
        f"client_secret: in {out} only",
    ]
    assert written["client_secret"] not in shown.out + shown.err
    again = tmp_path / "big-again.json"
    assert (
        operator(
            manager,
            "server",
            "credentials",
            "big",
            "--credentials-out",
            str(again),
            "--output",
            "json",
        )
        == 0
    )
    shown = capsys.readouterr()
    rewritten = json.loads(again.read_text())
    assert rewritten["client_secret"] not in shown.out + shown.err
    assert json.loads(shown.out)["credentials_file"] == str(again)
    # New credentials: printed once, the old secret refused from now on.
    assert operator(manager, "server", "credentials", "big") == 0
    rotated = capsys.readouterr().out.splitlines()
    assert rotated[0] == f"client_id:     {written['client_id']}"
    assert rotated[1] != f"client_secret: {written['client_secret']}"
    assert operator(manager, "server", "credentials", "nothing") == 2
    capsys.readouterr()
    assert operator(manager, "server", "add", "http://10.0.0.9", "--tee", "sev") == 2
    assert operator(manager, "server", "add", "http://10.0.0.9", "--capacity", "0") == 2
    capsys.readouterr()
    assert operator(manager, "server", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAME", "URL", "TEE", "CAPACITY", "LIVE_ROOMS", "MAY_STILL_RUN", "STATE", "LAST_SEEN",
        "REASON",
    ]  # fmt: skip
    assert lines[1].split()[:8] == ["big", url, "gramine", "7", "0", "-", "unknown", "never"]
    assert lines[2].split()[:7] == ["small", start_url(manager, "small"), "simulated", "1", "1",
                                    "-", "healthy"]  # fmt: skip
    assert operator(manager, "server", "remove", "small") == 2
    assert "give --force" in capsys.readouterr().err
    assert operator(manager, "server", "remove", "small", "--force") == 0
    out, err = capsys.readouterr()
    assert out.startswith("compute server small at ")
    assert err == "clean rooms marked lost: overlap\n"
    assert operator(manager, "server", "list") == 0
    assert capsys.readouterr().out.splitlines()[2].split()[6] == "removed"
