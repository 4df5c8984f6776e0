#!/usr/bin/env python3
"""Write docs/cli.md's reference (everything after its "## Reference" section's
introduction) from the command line's own parser: each command's usage, its help and
its options, as `cleanroom COMMAND -h` prints them. Run it after changing a command's
help or options, and commit the result (tests/test_cli_docs.py compares the two):

    .venv/bin/python scripts/cli-reference.py          # rewrites docs/cli.md
    .venv/bin/python scripts/cli-reference.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from typer import Context

from cleanroom.cli.main import COMMANDS, _command

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
MARKER = "<!-- The reference below is written by scripts/cli-reference.py. -->\n"


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command that runs (groups are walked, not listed), aliases left out."""
    context = Context(command, info_name=" ".join(path))
    if not hasattr(command, "list_commands"):
        yield path, command
        return
    for name in command.list_commands(context):
        if not path and COMMANDS[name].alias_of:
            continue
        yield from commands(command.get_command(context, name), (*path, name))


def _paragraphs(text: str | None) -> list[str]:
    """The help's paragraphs, each on one line; the exit codes' paragraph is the page's."""
    parts = (text or "").strip().split("\n\n")
    return [" ".join(part.split()) for part in parts if not part.startswith("Exit codes:")]


def _argument(param: Any) -> str:
    name = param.metavar or param.name.upper()
    if param.nargs == -1:
        name += "..."
    return name if param.required else f"[{name}]"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def section(path: tuple[str, ...], command: Any) -> str:
    """One command: heading, usage, help, and a table of its arguments and own options
    (the global options, shared by every command, pass it no value and are left out)."""
    context = Context(command, info_name=" ".join(path))
    name = " ".join(path)
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    usage = " ".join(["cleanroom", name, "[OPTIONS]", *map(_argument, arguments)])
    paragraphs = _paragraphs(command.help)
    aliases = [a for a, entry in COMMANDS.items() if len(path) == 1 and entry.alias_of == name]
    if aliases and paragraphs:
        paragraphs[0] += " (Also: " + ", ".join(f"`cleanroom {a}`" for a in aliases) + ".)"
    lines = [f"### `cleanroom {name}`", "", "```", usage, "```", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    rows = [(f"`{_argument(p).strip('[]')}` (argument)", p.help or "") for p in arguments]
    for param in command.params:
        if param.param_type_name != "option" or not param.expose_value:
            continue
        record = param.get_help_record(context)  # None for a hidden option
        if record is not None:
            rows.append((f"`{record[0]}`", record[1]))
    if rows:
        lines += ["| option | meaning |", "|---|---|"]
        lines += [f"| {_cell(left)} | {_cell(right)} |" for left, right in rows]
        lines.append("")
    return "\n".join(lines) + "\n"


def reference() -> str:
    text = "".join(section(path, command) for path, command in commands(_command()))
    return text.rstrip("\n") + "\n"


def page(current: str) -> str:
    """``current`` with everything after the marker replaced by the reference."""
    head, marker, _old = current.partition(MARKER)
    if not marker:
        raise SystemExit(f"{DOC}: no line {MARKER.strip()!r} to write the reference after")
    return head + MARKER + "\n" + reference()


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    wanted = page(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{DOC} is out of date: run scripts/cli-reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
