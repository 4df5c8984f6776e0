"""The one mapping of ``cleanroom.errors.Error`` to problem details: ``cleanroom.web``."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.testclient import TestClient

from cleanroom.errors import CheckFailed, Error
from cleanroom.web import PROBLEM_JSON, Refused, install_problem_handlers

# ---- the web mapping ------------------------------------------------------------------------


class Taken(Error):
    """A synthetic conflict."""

    http_status = 409


def _app() -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/conflict")
    def conflict() -> None:
        raise Taken("a room named 'x' exists")

    @app.get("/check")
    def check() -> None:
        raise CheckFailed("room-name", "a-z", "X", "not a room name", hint="use lowercase")

    @app.get("/refused")
    def refused() -> None:
        raise Refused(401, "no token", headers={"WWW-Authenticate": "Bearer"}, check="token")

    @app.get("/defect")
    def defect() -> None:
        raise RuntimeError("/secret/path leaked?")

    return TestClient(app, raise_server_exceptions=False)


def test_web_answers_an_error_with_its_status_as_a_problem() -> None:
    with _app() as client:
        answer = client.get("/conflict")
    assert answer.status_code == 409
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "a room named 'x' exists",
    }


def test_web_keeps_a_refused_checks_facts() -> None:
    with _app() as client:
        answer = client.get("/check")
    assert answer.status_code == 400
    assert answer.json() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "not a room name",
        "check": "room-name",
        "expected": "a-z",
        "actual": "X",
        "hint": "use lowercase",
    }


def test_web_answers_a_refusal_with_its_headers_and_members() -> None:
    with _app() as client:
        answer = client.get("/refused")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["check"] == "token"
    assert answer.json()["detail"] == "no token"


def test_web_answers_anything_else_500_without_its_text() -> None:
    with _app() as client:
        answer = client.get("/defect")
    assert answer.status_code == 500
    assert "secret" not in answer.text
