"""What every command shares: consoles, one-line errors, exit codes, the global options.

The consoles interpret no Rich markup and no emoji codes (``:email:`` stays
``:email:``): text from another party is printed as it is, after escaping with
:func:`cleanroom.protocol.text.shown`. Our own emphasis is a ``style=``.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cleanroom.errors import EXIT_REFUSED, Error
from cleanroom.errors import EXIT_USAGE as EXIT_USAGE  # a command names it beside EXIT_OK

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.status import Status

    from cleanroom.client.profile import Profile

EXIT_OK = 0
EXIT_REJECTED = EXIT_REFUSED  # a security check failed, or the operation failed

EXIT_CODES_HELP = (
    "Exit codes: 0 success (evidence accepted); 1 rejected by a security check or failed; "
    "2 unusable input (bad arguments, missing or malformed file)."
)


def with_exit_codes(doc: str | None) -> str:
    """A command's docstring with :data:`EXIT_CODES_HELP` as its last paragraph.

    Dedented first: the help is dedented by its least indented line, and the appended
    paragraph has none, so the docstring's own indentation would be printed.
    """
    return f"{inspect.cleandoc(doc or '')}\n\n{EXIT_CODES_HELP}"


_CONSOLE_OPTIONS = {"highlight": False, "soft_wrap": True, "markup": False, "emoji": False}

if TYPE_CHECKING:
    stdout: Console
    stderr: Console


def __getattr__(name: str) -> Any:
    """``stdout`` and ``stderr``, Rich consoles made when first imported or used:
    importing Rich costs start-up time, and ``--version`` or ``whoami`` need none."""
    if name not in ("stdout", "stderr"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    console = Console(stderr=name == "stderr", **_CONSOLE_OPTIONS)  # type: ignore[arg-type]
    globals()[name] = console
    return console


@contextmanager
def transfer_progress(label: str, total: int | None) -> Iterator[Progress]:
    """A progress bar of bytes on stderr, gone when the transfer ends: ``label`` (never
    read as markup), the bytes moved of ``total`` (None: not known), speed, time. Only
    on a terminal: stderr read by a program gets no blank line of it."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = [
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    ]
    console: Console = globals()["stderr"] if "stderr" in globals() else __getattr__("stderr")
    shown = console.is_terminal
    with Progress(*columns, console=console, transient=True, disable=not shown) as progress:
        progress.add_task(label, total=total)
        yield progress


def spinner(text: str) -> Status:
    """A spinner on stderr while a command waits (``text`` never read as markup), gone
    when it ends; nothing on a stderr that is not a terminal."""
    from rich.text import Text

    console: Console = globals()["stderr"] if "stderr" in globals() else __getattr__("stderr")
    return console.status(Text(text))


def counted(number: int, noun: str) -> str:
    """``1 file``, ``2 files``: a count with its noun (a plural of an added ``s``)."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def print_line(text: str) -> None:
    """One line on stdout, as it is (no Rich: for results a script reads)."""
    sys.stdout.write(text + "\n")


class CliError(Error):
    """An error a command words itself: one line on stderr, with this raise's exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_REJECTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int = EXIT_REJECTED) -> NoReturn:
    raise CliError(message, exit_code)


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        fail(f"{what} not found: {path}", EXIT_USAGE)
    except OSError as error:
        fail(f"cannot read {what} {path}: {error.strerror}", EXIT_USAGE)


def check_new_directory(path: Path, what: str) -> None:
    """``path`` can take what a command writes (a new or empty directory, not a link),
    else unusable input (exit code 2) before anything is asked of a server."""
    from cleanroom.protocol.text import shown

    if path.is_symlink() or (path.exists() and not path.is_dir()):
        fail(
            f"{what}{shown(str(path))} exists and is not a directory: give a new or empty one",
            EXIT_USAGE,
        )
    if path.is_dir() and any(path.iterdir()):
        fail(f"{what}{shown(str(path))} is not empty: give a new or empty directory", EXIT_USAGE)


def parse_hex(
    value: str, what: str, *, size: int | None = None, pad_to: int | None = None
) -> bytes:
    """Hex from the command line; ``pad_to`` zero-pads on the right (SGX REPORTDATA style)."""
    text = value.strip().removeprefix("0x")
    try:
        data = bytes.fromhex(text)
    except ValueError:
        fail(f"{what} is not hexadecimal: {value!r}", EXIT_USAGE)
    if size is not None and len(data) != size:
        fail(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(data)}", EXIT_USAGE)
    if pad_to is not None:
        if len(data) > pad_to:
            fail(f"{what} must be at most {pad_to} bytes, got {len(data)}", EXIT_USAGE)
        data = data.ljust(pad_to, b"\x00")
    return data


# A size of the command line: a number, and a binary unit (M, Mi, MiB; G, …; T, …, any
# case). MB and GB are refused: read as 10**6 by some tools and 2**20 by others.
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_MIB_PER_UNIT = {"m": 1, "mi": 1, "mib": 1, "g": 1024, "gi": 1024, "gib": 1024}
_MIB_PER_UNIT |= {"t": 1 << 20, "ti": 1 << 20, "tib": 1 << 20}
SIZE_HELP = "512M, 2G (binary units: M = MiB, G = GiB)"


def parse_size(value: str, option: str) -> tuple[float, bool]:
    """A size given as ``value`` to ``option``: (MiB, whether it had a unit).

    A bare number is returned as it is (the command decides its unit); a unit that is
    not binary, or none that is known, is unusable input (exit code 2)."""
    found = _SIZE.fullmatch(value)
    if found is None:
        fail(f"{option} {value!r}: not a size; write e.g. {SIZE_HELP}", EXIT_USAGE)
    number, unit = float(found.group(1)), found.group(2).lower()
    if not unit:
        return number, False
    if unit not in _MIB_PER_UNIT:
        decimal = unit in ("mb", "gb", "tb")
        why = "MB and GB are ambiguous (10^6 or 2^20 bytes)" if decimal else "an unknown unit"
        fail(f"{option} {value!r}: {why}; write e.g. {SIZE_HELP}", EXIT_USAGE)
    return number * _MIB_PER_UNIT[unit], True


def whole_mib(mebibytes: float, value: str, option: str) -> int:
    """``mebibytes`` as a whole number of MiB, or unusable input naming ``value``."""
    if mebibytes != int(mebibytes):
        fail(f"{option} {value!r}: not a whole number of MiB ({mebibytes:g} MiB)", EXIT_USAGE)
    return int(mebibytes)


LEAST_MEMORY_MIB = 64  # the least a run may have (Resources.memory_mib)


def memory_mib(value: str, option: str, *, bare: str) -> int:
    """``--memory``: a size with a unit, or a bare number in ``bare`` (GiB or MiB).

    ``deploy --memory`` was in GiB and ``function test --memory`` in MiB, so a bare
    number is taken only where the other command's unit could not have been meant: a
    bare GiB below 64 (under 64 MiB is no run's memory), a bare MiB from 64 (64 GiB or
    more is no test's); every other bare number needs its unit (exit code 2)."""
    mebibytes, had_unit = parse_size(value, option)
    if not had_unit and bare == "GiB":
        if mebibytes >= LEAST_MEMORY_MIB:
            fail(
                f"{option} {value}: a number alone is GiB here, but {value} GiB may have been "
                f"meant as MiB (function test's unit): write {value}G or {value}M",
                EXIT_USAGE,
            )
        mebibytes *= 1024
    elif not had_unit and mebibytes < LEAST_MEMORY_MIB:
        fail(
            f"{option} {value}: a number alone is MiB here, and {value} MiB is under the "
            f"least ({LEAST_MEMORY_MIB} MiB); for GiB (deploy's unit) write {value}G",
            EXIT_USAGE,
        )
    return whole_mib(mebibytes, value, option)


def disk_mib(value: str, option: str) -> int:
    """``--disk``: a size with a unit, or a bare number of MiB (as it always was)."""
    mebibytes, _had_unit = parse_size(value, option)
    return whole_mib(mebibytes, value, option)


# A duration of the command line: a number of seconds alone, or numbers each with a unit
# (s, m, h, d), largest first: 90, 90s, 5m, 1.5h, 1h30m, 2d.
_DURATION = re.compile(
    r"\s*(?:(?P<d>[0-9]+(?:\.[0-9]+)?)d)?\s*(?:(?P<h>[0-9]+(?:\.[0-9]+)?)h)?"
    r"\s*(?:(?P<m>[0-9]+(?:\.[0-9]+)?)m)?\s*(?:(?P<s>[0-9]+(?:\.[0-9]+)?)s?)?\s*",
    re.IGNORECASE,
)
_SECONDS_PER_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}
DURATION_HELP = "90 or 90s, 5m, 1.5h, 1h30m, 2d (a number alone is seconds)"


def parse_duration(value: str, option: str) -> int:
    """A duration given as ``value`` to ``option``, in whole seconds; anything else (no
    number, an unknown unit, a fraction of a second) is unusable input (exit code 2).
    The range is the spec's to check, with the option's name."""
    found = _DURATION.fullmatch(value)
    if found is None or not any(found.groupdict().values()):
        fail(f"{option} {value!r}: not a duration; write e.g. {DURATION_HELP}", EXIT_USAGE)
    seconds = sum(
        float(number) * _SECONDS_PER_UNIT[unit]
        for unit, number in found.groupdict().items()
        if number is not None
    )
    if seconds != int(seconds):
        fail(f"{option} {value!r}: not a whole number of seconds ({seconds:g} s)", EXIT_USAGE)
    return int(seconds)


def duration_text(seconds: int) -> str:
    """``seconds`` as :func:`parse_duration` reads it, in the largest unit it is whole in
    (a default shown in a command's help: 1h, not 3600)."""
    for unit, size in _SECONDS_PER_UNIT.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("every whole number of seconds is whole in s")


class OutputFormat(StrEnum):
    """What a command prints its result as (the global ``--output``)."""

    text = "text"
    json = "json"


# The global options, set by main.py before or after the command's name.
_profile_option: dict[str, str | None] = {"name": None}
_output_option: dict[str, OutputFormat] = {"format": OutputFormat.text}


def set_profile_name(name: str | None) -> None:
    """Record the global ``--profile`` option (None: $CLEANROOM_PROFILE, else default)."""
    _profile_option["name"] = name


def set_output(value: OutputFormat) -> None:
    """Record the global ``--output`` option."""
    _output_option["format"] = value


def json_output(as_json: bool = False) -> bool:
    """Whether to print the result as JSON: ``--output json``, or the command's ``--json``."""
    return as_json or _output_option["format"] is OutputFormat.json


def print_json(document: object) -> None:
    """The result as one JSON document on stdout (indented, ASCII only)."""
    print_line(json.dumps(document, indent=2))


def hint(words: str) -> str:
    """A ``cleanroom`` command to suggest, carrying the profile this invocation uses.

    ``hint("login")`` is ``cleanroom login`` for the default profile and
    ``cleanroom --profile bob login`` for another, however it was chosen
    (``--profile`` or ``$CLEANROOM_PROFILE``): pasted in another shell, it still
    acts on the same profile.
    """
    from cleanroom.client.profile import ProfileError, command_for

    try:
        return command_for(profile_name(), words)
    except ProfileError:
        return f"cleanroom {words}"


def profile_name() -> str:
    """The profile this invocation uses: --profile, else $CLEANROOM_PROFILE, else default.

    A name that cannot be a profile's is a :class:`~cleanroom.client.profile.ProfileError`.
    """
    from cleanroom.client.profile import resolve_name

    return resolve_name(_profile_option["name"])


def current_profile() -> Profile:
    """The configured profile this invocation uses; a ProfileError (one line, exit code 2)
    if it is not configured."""
    from cleanroom.client.profile import Profile

    profile = Profile.load(_profile_option["name"])
    profile.warn = _warn  # one line on stderr, not Python's warning with its source line
    return profile


def _warn(line: str) -> None:
    console: Console = globals()["stderr"] if "stderr" in globals() else __getattr__("stderr")
    console.print(line, markup=False)
