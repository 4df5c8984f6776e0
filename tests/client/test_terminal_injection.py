"""What a hostile manager puts in a refusal reaches no terminal raw.

A refusal names what it got (``work-id: … (expected X, got Y)``), and Y is the
server's: the command line's one error line escapes whatever a terminal acts on
(ESC of ANSI and OSC sequences, CR, C1 controls, bidirectional overrides), so a
refused answer cannot repaint itself as an accepted one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.cli.main import main
from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.keys import user_id
from cleanroom.protocol.spec import WorkSpec
from tests.client.hostile_http import configure_against, hostile_server, json_answer

# An OSC 8 hyperlink, then: erase the line, back to its start, a green verdict.
INJECTED = (
    "\x1b]8;;https://evil.example/fix\x1b\\click here\x1b]8;;\x1b\\"
    "\x1b[2K\x1b[1G\r\x1b[32mverified\x1b[0m\x9b31m\u202e"
)
UNSAFE = ("\x1b", "\r", "\x9b", "\u202e")


def _room(url: str, **changes: object) -> dict[str, object]:
    owner = user_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    spec = {
        "name": "victim",
        "function": "fs://" + "A" * 43,
        "handler": "handler.main",
        "inputs": {"data": owner},
        "outputs": {"result": owner},
        "runners": [owner],
        "nonce": b64u(os.urandom(16)),
    }
    room: dict[str, object] = {
        "name": "victim",
        "project": "acme",
        "spec": spec,
        "work_id": WorkSpec.parse(spec).work_id,
        "function": spec["function"],
        "state": "deployed",
        "compute_url": url,
        "deployer": "someone",
        "created": 0,
    }
    room.update(changes)
    return room


TOKEN = ".".join((b64u(b"{}"), b64u(b'{"jti":"j"}'), "sig"))
"""A token the client can read its jti from (it signs its user-key registration for it)."""


def _answer(field: str) -> object:
    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        if (method, path) == ("POST", "/oauth/token"):
            if field == "token":
                return json_answer({INJECTED: 1})
            return json_answer({"access_token": TOKEN, "token_type": "DPoP", "expires_in": 600})
        if (method, path) == ("GET", "/v1/rooms"):
            return json_answer({"rooms": [_room("http://127.0.0.1:9", **{field: INJECTED})]})
        if (method, path) == ("GET", "/v1/whoami"):
            return json_answer({"client_id": "c" * 32, "project": "acme", "user_id": None})
        if (method, path) == ("PUT", "/v1/whoami/user-key"):
            return json_answer({"user_id": INJECTED})
        return None

    return answer


@pytest.mark.parametrize(
    ("field", "command"),
    [("work_id", "rooms"), ("function", "rooms"), ("token", "rooms"), ("user_id", "login")],
)
def test_a_refused_answer_reaches_the_terminal_escaped(
    home: Path, capsys: pytest.CaptureFixture[str], field: str, command: str
) -> None:
    with hostile_server(_answer(field)) as url:  # type: ignore[arg-type]
        configure_against(url)
        capsys.readouterr()
        assert main([command]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "\\x1b]8;;https://evil.example/fix" in err  # what it got, visibly
    for char in UNSAFE:
        assert char not in err


def test_terminal_safe_keeps_what_is_already_escaped() -> None:
    from cleanroom.protocol.text import terminal_safe

    assert terminal_safe("got \\x1b and \\u202e, ε — ok") == "got \\x1b and \\u202e, ε — ok"
    assert (
        terminal_safe("a\x1b[2K\rb\x9b\u202e\u2028\x7f") == "a\\x1b[2K\\rb\\x9b\\u202e\\u2028\\x7f"
    )
