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
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from cleanroom.errors import escape_char as _escape
from cleanroom.errors import terminal_safe

__all__ = ["collisions", "folded", "quoted", "shown", "terminal_safe"]

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


__all__ = ["collisions", "folded", "quoted", "shown", "terminal_safe"]
