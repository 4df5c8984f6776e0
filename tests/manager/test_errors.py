"""The manager's refusals leave as problem details: the status each class carries, its
one line as ``detail`` and its facts beside it (through cleanroom.web's handler)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cleanroom.errors import Error
from cleanroom.manager.errors import (
    BundleTooLarge,
    ComputeServerFailed,
    Conflict,
    NotFound,
    Unavailable,
)
from cleanroom.web import PROBLEM_JSON, install_problem_handlers


def _answer(error: Exception) -> tuple[int, str, dict[str, object]]:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/refuse")
    def refuse() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/refuse")
    return answer.status_code, answer.headers["content-type"], answer.json()


@pytest.mark.parametrize(
    ("error", "status", "facts"),
    [
        (NotFound("no function fs://x"), 404, {}),
        (Conflict("project 'acme' has a clean room named 'r'", room="r"), 409, {"room": "r"}),
        (
            ComputeServerFailed("down", room="r", state="failed"),
            502,
            {"room": "r", "state": "failed"},
        ),
        (Unavailable("no compute server", servers=["a is full"]), 503, {"servers": ["a is full"]}),
    ],
)
def test_a_refusal_is_a_problem_with_its_status_and_facts(
    error: Error, status: int, facts: dict[str, object]
) -> None:
    answered, media_type, body = _answer(error)
    assert (answered, media_type) == (status, PROBLEM_JSON)
    assert body == {
        "type": "about:blank",
        "title": body["title"],
        "status": status,
        "detail": str(error),
        **facts,
    }


def test_an_oversized_bundle_is_a_refused_check() -> None:
    status, _, body = _answer(BundleTooLarge(10, "11 bytes (Content-Length)"))
    assert status == 413
    assert body["detail"] == "the function bundle is larger than the manager's limit of 10 bytes"
    assert (body["check"], body["expected"], body["actual"]) == (
        "function-size",
        "at most 10 bytes",
        "11 bytes (Content-Length)",
    )


def test_a_fact_cannot_replace_the_problems_own_members() -> None:
    _, _, body = _answer(NotFound("gone", status=200, type="https://evil.example"))
    assert (body["status"], body["type"], body["detail"]) == (404, "about:blank", "gone")


def test_an_error_that_is_not_ours_is_still_500_without_its_text() -> None:
    status, _, body = _answer(RuntimeError("secret internals"))
    assert status == 500
    assert "secret" not in str(body["detail"])
