"""One error root: every error cleanroom defines is a ``cleanroom.errors.Error``, and
each front end maps it in one place (``cleanroom.web`` for problem details,
``cleanroom.cli.main`` for the line and the exit code)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

import cleanroom
from cleanroom.cli import main as cli_main
from cleanroom.errors import EXIT_REFUSED, EXIT_USAGE, CheckFailed, Error
from cleanroom.web import PROBLEM_JSON, Refused, install_problem_handlers

# Modules the walk does not import, each with why; the test asserts these are exactly
# the ones left out.
NOT_IMPORTED = {
    # Alembic's environment script: it runs only inside alembic's migration context.
    "cleanroom.manager.migrations.env",
}
# Optional native parts whose import may fail with ImportError on a machine without
# them (none today): only these may be skipped, and only for ImportError.
OPTIONAL: frozenset[str] = frozenset()


def _walk() -> tuple[list[types.ModuleType], list[str]]:
    """Every module of cleanroom, imported; and the names left out."""
    modules: list[types.ModuleType] = [cleanroom]
    skipped: list[str] = []
    for info in pkgutil.walk_packages(cleanroom.__path__, "cleanroom."):
        if info.name in NOT_IMPORTED:
            skipped.append(info.name)
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:
            if info.name not in OPTIONAL:
                raise
            skipped.append(info.name)
    return modules, skipped


def _subclasses(root: type) -> Iterator[type]:
    for sub in root.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def exception_classes(modules: Iterable[types.ModuleType]) -> set[type]:
    """Every exception class defined in ``modules``: bound at their top level, nested,
    or made inside a function (found among BaseException's subclasses)."""
    names = {module.__name__ for module in modules}
    found = {
        value
        for module in modules
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    }
    found.update(cls for cls in _subclasses(BaseException) if cls.__module__ in names)
    return found


def outside_the_root(classes: Iterable[type]) -> list[str]:
    return sorted(
        f"{cls.__module__}.{cls.__qualname__}" for cls in classes if not issubclass(cls, Error)
    )


def test_every_error_class_derives_from_the_root() -> None:
    modules, skipped = _walk()
    assert sorted(skipped) == sorted(NOT_IMPORTED)  # nothing else left out
    classes = exception_classes(modules)
    assert len(classes) > 50  # the walk found cleanroom's errors (not an empty pass)
    assert outside_the_root(classes) == []


def test_the_walk_finds_an_error_outside_the_root() -> None:
    """The check above fails for ``class FooError(Exception)`` in any module, at its
    top level or made inside a function."""
    module = types.ModuleType("cleanroom._synthetic_errors")
    source = (
        "class FooError(Exception):\n    pass\n\n"
        "class Fine(cleanroom.errors.Error):\n    pass\n\n"
        "def make():\n    class Hidden(ValueError):\n        pass\n    return Hidden\n"
    )
    module.__dict__["cleanroom"] = cleanroom
    exec(compile(source, "<synthetic>", "exec"), module.__dict__)  # noqa: S102 - fixed text
    hidden = module.make()
    found = outside_the_root(exception_classes([module]))
    assert found == [
        "cleanroom._synthetic_errors.FooError",
        "cleanroom._synthetic_errors.make.<locals>.Hidden",
    ]
    del hidden


def test_cli_error_keeps_the_exit_code_of_its_raise() -> None:
    from cleanroom.cli.common import CliError

    assert issubclass(CliError, Error)
    assert CliError("x").exit_code == EXIT_REFUSED
    assert CliError("x", EXIT_USAGE).exit_code == EXIT_USAGE


# ---- the web mapping ------------------------------------------------------------------------


class Taken(Error):
    """A synthetic conflict."""

    http_status = 409


class Broken(Error):
    """A synthetic failure of the server's own (a key file it cannot read)."""

    http_status = 500


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

    @app.get("/conflict-with-facts")
    def conflict_with_facts() -> None:
        error = Taken("the room is being deleted")
        error.facts = {"room": "overlap", "status": 418}  # a fact never overrides status
        raise error

    @app.get("/broken")
    def broken() -> None:
        raise Broken("cannot read signing key /secret/keys/k1.json")

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


def test_web_adds_an_errors_facts_as_members() -> None:
    with _app() as client:
        answer = client.get("/conflict-with-facts")
    assert answer.status_code == 409
    assert answer.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "the room is being deleted",
        "room": "overlap",
    }


@pytest.mark.parametrize("route", ["/defect", "/broken"])
def test_web_answers_anything_else_500_without_its_text(route: str) -> None:
    """An unexpected exception, and an Error that is the server's own failure (500, not
    a refused check): the answer is fixed, the text (paths, internals) stays in the log."""
    with _app() as client:
        answer = client.get(route)
    assert answer.status_code == 500
    assert "secret" not in answer.text
    assert answer.json()["detail"] == "internal server error (the server's log has the details)"


# ---- the command-line mapping ---------------------------------------------------------------


class Unusable(Error):
    """A synthetic unusable input."""

    exit_code = EXIT_USAGE


def raises_unusable() -> None:
    """Raise an unusable-input error."""
    raise Unusable("--thing: expected a number, got 'x'")


def raises_check_with_hint() -> None:
    """Raise a refused check with a hint."""
    raise CheckFailed("work-id", "abc", "abd", "not the room you approved", hint="approve it")


@pytest.fixture
def synthetic_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = dict(cli_main.COMMANDS)
    commands["unusable"] = cli_main.Lazy(f"{__name__}:raises_unusable", "Raise.")
    commands["refused"] = cli_main.Lazy(f"{__name__}:raises_check_with_hint", "Raise.")
    monkeypatch.setattr(cli_main, "COMMANDS", commands)
    assert sys.modules[__name__].raises_unusable is raises_unusable


def test_cli_exits_with_the_errors_code_and_one_line(
    synthetic_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main.main(["unusable"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == "error: --thing: expected a number, got 'x'\n"
    assert captured.out == ""


def test_cli_shows_a_refused_checks_hint_after_its_line(
    synthetic_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main.main(["refused"]) == EXIT_REFUSED
    assert capsys.readouterr().err == (
        "error: work-id: not the room you approved (expected abc, got abd) — approve it\n"
    )


def test_cli_maps_a_real_commands_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An operator's bad input, raised by the manager's admin code and mapped by main."""
    code = cli_main.main(["admin", "--data-dir", str(tmp_path), "project", "create", "Not_Valid"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_a_refusal_is_safe_to_print_whoever_prints_it() -> None:
    """What a refusal quotes may come from a server: an SDK caller who prints ``str()`` of
    it gets every character a terminal acts on escaped (ESC of an ANSI or OSC sequence,
    a bidirectional override), as the command line's error line is; letters stay, and the
    facts for machines (``to_json``) are the values themselves."""
    refusal = CheckFailed(
        "room", "café \u202eevil", "\x1b]0;owned\x07\x1b[31mred", "the answer \x1b[2J"
    )
    assert str(refusal) == (
        "room: the answer \\x1b[2J (expected café \\u202eevil, got \\x1b]0;owned\\x07\\x1b[31mred)"
    )
    assert str(refusal).isprintable()
    assert refusal.expected_text == "café \\u202eevil"
    assert refusal.actual_text == "\\x1b]0;owned\\x07\\x1b[31mred"
    assert refusal.to_json()["actual"] == "\x1b]0;owned\x07\x1b[31mred"
