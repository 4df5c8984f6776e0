"""A server's error answer is shown escaped, like every text the client does not control."""

from __future__ import annotations

from cleanroom.client.errors import ServerError


def test_a_hostile_problem_is_shown_escaped_on_one_line() -> None:
    error = ServerError(
        "manager",
        422,
        {
            "title": "Unprocessable\u202eContent",
            "detail": "the bundle is refused:\nhandler\u034f.py :email:",
            "check": "bundle-name-collision\u200b",
            "expected": "x",
            "actual": "handler.py and handler\u034f.py",
        },
    )
    line = str(error)
    assert line.isascii() and line.isprintable()
    assert "Unprocessable\\u202eContent" in line
    assert "the bundle is refused: handler\\u034f.py :email:" in line
    assert "bundle-name-collision\\u200b" in line
    assert "got handler.py and handler\\u034f.py" in line


def test_a_long_detail_is_shortened() -> None:
    line = str(ServerError("manager", 500, {"detail": "x" * 1000}))
    assert line.endswith("x...")
    assert len(line) < 500


def test_a_check_named_without_expected_or_actual_is_named_alone() -> None:
    """An OAuth refusal names its check only: the line ended "(token-room: expected
    None, got None)", which reads as if None had been asked for (seen walking `status`
    of a deleted room; h32)."""
    problem = {
        "error": "invalid_target",
        "error_description": "clean room 'pd' is not scheduled on a compute server",
        "check": "token-room",
    }
    line = str(ServerError("manager", 400, problem))
    assert line == (
        "manager: 400 Bad Request: invalid_target: clean room 'pd' is not scheduled on a "
        "compute server (token-room)"
    )
    assert str(ServerError("manager", 409, {"check": "x", "expected": None, "actual": 0})) == (
        "manager: 409 Conflict (x: expected None, got 0)"
    )
