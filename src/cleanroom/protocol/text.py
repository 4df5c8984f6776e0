"""Text another party controls: how it is shown, and when two names are the same.

A reviewer approves what they see, so every string that a deployer, the manager
or a Controller controls (parameter keys and values, file names, room fields,
error details) reaches a person only through :func:`shown` (or :func:`quoted`):

- printable ASCII stands for itself, except the backslash, which is doubled;
- everything else is a visible Python-style escape (``\\t``, ``\\x7f``, ``\\u034f``,
  ``\\U0001f600``): control, bidirectional, zero-width, combining and look-alike
  characters never reach the terminal raw, and non-ASCII letters are spelled out;
- :func:`shown` also escapes spaces at either end, which a terminal does not show.

So the text shown determines the string exactly: a literal backslash-u sequence
reads ``\\\\u202e``, the character itself ``\\u202e``. Nothing here is markup:
the consoles that print it interpret neither Rich markup nor emoji codes.

Two names that a person would read as one are found by :func:`folded`: Unicode
NFKC normalisation and case folding, without default-ignorable code points (as
Unicode's NFKC_Casefold). Names that fold alike are refused in a function bundle
and flagged among a spec's parameter keys (:func:`collisions`).

A file name another party chose and a person's disk will hold (an output's files,
named by the function) must be one that shows as it is, that no command or tool reads
as more than a name, and that no disk reads as another's: :func:`name_problem` finds a
character a terminal acts on or does not show, a leading ``-``, a ``.git``, what
Windows reads as more than a name (``CON.csv``, ``a.csv:x``, ``a.csv.``);
:class:`FoldedPaths` and :func:`clashing` the paths that a case- or
normalisation-insensitive disk (macOS, Windows) would hold as one (``a.csv`` and
``A.csv``, ``café`` in NFC and in NFD), or as a file and a directory (``a`` and
``A/b``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from cleanroom.errors import UNSAFE_CATEGORIES, terminal_safe
from cleanroom.errors import escape_char as _escape

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, 15.1): code
# points that render as nothing. NFKC keeps them; NFKC_Casefold removes them.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def shown(value: object, *, leading: bool = True) -> str:
    """``value`` (``str()`` of it if not a string) as printable ASCII that spells it exactly.

    See the module docstring: backslashes doubled, everything outside printable
    ASCII escaped, and spaces at either end shown as ``\\x20`` (the leading ones
    only if ``leading``: a line of code keeps its indentation as it is).
    """
    text = value if isinstance(value, str) else str(value)
    escaped = [_escape(char) for char in text]
    end = len(escaped)
    while end > 0 and escaped[end - 1] == " ":
        end -= 1
        escaped[end] = "\\x20"
    start = 0
    while leading and start < end and escaped[start] == " ":
        escaped[start] = "\\x20"
        start += 1
    return "".join(escaped)


def quoted(text: str) -> str:
    """``text`` between double quotes, escaped as :func:`shown` does and ``"`` as ``\\"``."""
    return '"' + "".join('\\"' if char == '"' else _escape(char) for char in text) + '"'


def _ignorable(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _IGNORABLE)


def folded(name: str) -> str:
    """The form under which names that read alike are equal (NFKC, case folded, no ignorables)."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = "".join(char for char in text if not _ignorable(char))
    return unicodedata.normalize("NFKC", text)


def collisions(names: Iterable[str]) -> list[tuple[str, ...]]:
    """Every group of two or more distinct names that fold alike, each sorted; sorted."""
    groups: dict[str, set[str]] = {}
    for name in names:
        groups.setdefault(folded(name), set()).add(name)
    return sorted(tuple(sorted(group)) for group in groups.values() if len(group) > 1)


def unsafe_character(name: str) -> str | None:
    """The first character of ``name`` that a terminal may act on or not show (as
    :func:`terminal_safe` escapes: controls, bidirectional and zero-width format
    characters, surrogates, private-use and unassigned code points, line and paragraph
    separators), or None.

    Unassigned is as this interpreter's Unicode tables say: a Worker's (measured)
    Python 3.11 knows Unicode 14, and every client (3.11.4 or later) at least as much,
    so what a Worker releases no client finds unassigned."""
    return next((char for char in name if unicodedata.category(char) in UNSAFE_CATEGORIES), None)


# What Windows reads in a file's name as more than a name ("Naming Files, Paths, and
# Namespaces"): these characters (":" opens an alternate data stream of the file named
# before it, "a.csv:x" is a hidden part of "a.csv"); a part that ends with "." or " ",
# which it drops ("a.csv." is "a.csv"); and a device's name, with any extension after
# it ("CON.csv" is the console: the file's bytes are written to the recipient's
# terminal, raw).
_WINDOWS_CHARACTERS = frozenset('<>:"|?*')
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{digit}" for port in ("com", "lpt") for digit in "0123456789\u00b9\u00b2\u00b3"}
)


def _windows_problem(part: str) -> str | None:
    character = next((char for char in part if char in _WINDOWS_CHARACTERS), None)
    if character is not None:
        return f"the character {shown(character)}, which Windows reads as more than a name"
    if part.endswith((".", " ")):
        return f"a part that ends with '.' or ' ' ({shown(part)}), which Windows drops"
    if part.split(".", 1)[0].rstrip(" ").casefold() in _WINDOWS_DEVICES:
        return f"a part named as a Windows device ({shown(part)})"
    return None


def name_problem(path: str) -> str | None:
    """Why a relative POSIX path another party chose may not be written on a person's
    disk, or None: a character of :func:`unsafe_character`; a part that begins with
    ``-``, which a command given ``*`` reads as an option (``tar cf all.tar *`` runs
    ``--checkpoint-action=exec=…``); a part that folds like ``.git``, a repository
    whose ``config`` names commands git runs (``core.fsmonitor``: a shell prompt that
    shows the branch runs ``git status`` on entering the directory); or a part that
    Windows reads as more than a name (a device such as ``CON``, a ``:`` that opens a
    hidden stream of another file, an end it drops: :data:`_WINDOWS_CHARACTERS`)."""
    unsafe = unsafe_character(path)
    if unsafe is not None:
        return f"the character {shown(unsafe)}"
    for part in path.split("/"):
        if part.startswith("-"):
            return f"a part that begins with '-' ({shown(part)}), read as an option"
        if folded(part) == ".git":
            return f"a part named as git's repository ({shown(part)})"
        windows = _windows_problem(part)
        if windows is not None:
            return windows
    return None


def _folded_parts(path: str) -> tuple[str, ...]:
    # Component by component: NFKC makes "/" of U+FF0F, which no disk reads as one.
    return tuple(folded(part) for part in path.split("/"))


class FoldedPaths:
    """Relative POSIX paths of files, added one by one: which earlier one a disk that
    ignores case and normalisation could not hold apart from a new one."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, ...], str] = {}
        self._directories: dict[tuple[str, ...], str] = {}  # -> a file below it

    def add(self, path: str) -> str | None:
        """Add ``path``; the earlier path it clashes with, if any: one that folds alike
        (:func:`folded`), a file that folds like a directory of ``path``, or a file below
        a directory that folds like ``path``."""
        parts = _folded_parts(path)
        clash = self._files.get(parts) or self._directories.get(parts)
        for end in range(1, len(parts)):
            clash = clash or self._files.get(parts[:end])
            self._directories.setdefault(parts[:end], path)
        self._files.setdefault(parts, path)
        return clash


def clashing(paths: Iterable[str]) -> set[str]:
    """Every one of ``paths`` (distinct relative POSIX paths of files) that clashes with
    another as :meth:`FoldedPaths.add` finds: both twins, the file and every file below
    the directory it folds like."""
    files: dict[tuple[str, ...], list[str]] = {}
    below: dict[tuple[str, ...], list[str]] = {}
    for path in paths:
        parts = _folded_parts(path)
        files.setdefault(parts, []).append(path)
        for end in range(1, len(parts)):
            below.setdefault(parts[:end], []).append(path)
    found: set[str] = set()
    for parts, alike in files.items():
        under = below.get(parts, [])
        if len(alike) > 1 or under:
            found.update(alike, under)
    return found


__all__ = [
    "FoldedPaths",
    "clashing",
    "collisions",
    "folded",
    "name_problem",
    "quoted",
    "shown",
    "terminal_safe",
    "unsafe_character",
]
