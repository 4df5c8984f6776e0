"""docs/cli.md lists every command and every option of the parser, and names none that
does not exist: the page cannot drift from `cleanroom COMMAND -h`."""

from __future__ import annotations

import re
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from typer import Context

from cleanroom.cli.main import COMMANDS, _command

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "cli.md"
GENERATOR = REPO / "scripts" / "cli-reference.py"
HEADING = re.compile(r"^### `cleanroom ([a-z0-9 -]+)`$", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command that runs (no group), by its path, aliases left out."""
    context = Context(command, info_name=" ".join(path))
    if not hasattr(command, "list_commands"):
        yield " ".join(path), command
        return
    for name in command.list_commands(context):
        if not path and COMMANDS[name].alias_of:
            continue
        yield from commands(command.get_command(context, name), (*path, name))


def sections() -> dict[str, str]:
    """The reference's sections: command path -> its text, up to the next heading."""
    text = DOC.read_text(encoding="utf-8")
    found = list(HEADING.finditer(text))
    ends = [match.start() for match in found[1:]] + [len(text)]
    return {match.group(1): text[match.end() : end] for match, end in zip(found, ends, strict=True)}


def flags(command: Any) -> set[str]:
    """The command's own options (the global ones, shared by every command, pass no
    value to it; `sim quote` has a --debug of its own), hidden ones left out."""
    return {
        flag
        for param in command.params
        if param.param_type_name == "option" and param.expose_value and not param.hidden
        for flag in (*param.opts, *param.secondary_opts)
        if flag.startswith("--")
    }


def test_every_command_and_option_is_in_docs_cli() -> None:
    documented = sections()
    parsed = dict(commands(_command()))
    assert set(documented) == set(parsed), (
        f"missing from docs/cli.md: {sorted(set(parsed) - set(documented))}; "
        f"no such command: {sorted(set(documented) - set(parsed))}"
    )
    for path, command in parsed.items():
        options = flags(command)
        # An option's own help may name another command's option: only a row's first
        # cell must be this command's (a row is "| `--flag ...` | meaning |").
        rows = {
            flag
            for line in documented[path].splitlines()
            if line.startswith("| `--")
            for flag in OPTION.findall(line.split("|")[1])
        }
        assert options <= rows, f"cleanroom {path}: undocumented {sorted(options - rows)}"
        assert rows <= options, f"cleanroom {path}: no such option {sorted(rows - options)}"


def test_docs_cli_names_each_alias() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, entry in COMMANDS.items():
        if entry.alias_of:
            assert f"`cleanroom {name}`" in text, name


def test_docs_cli_is_what_the_help_says() -> None:
    """The reference is the help texts themselves: a help changed without rewriting the
    page fails here (h3: the commands' reference, docs/cli.md, did not exist)."""
    generator = runpy.run_path(str(GENERATOR))
    current = DOC.read_text(encoding="utf-8")
    assert current == generator["page"](current), (
        "docs/cli.md is out of date: run .venv/bin/python scripts/cli-reference.py"
    )
