"""The root of every error cleanroom raises on purpose, and the one shape of a security
failure: the check, the expected and the actual value.

:class:`Error` carries how each front end shows it: ``http_status`` for the services'
problem details (mapped in :mod:`cleanroom.web` only) and ``exit_code`` for the command
line (mapped in :mod:`cleanroom.cli.main` only). A user (or an auditor reading a log) can
tell exactly which rule refused what and why; ``CheckFailed.to_json()`` gives the same
facts to machines. ``str()`` of a failure is one line a terminal shows as it is: what it
quotes may come from a server or another party, so every character a terminal acts on is
escaped there (:func:`terminal_safe`), whoever prints it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

_PRINTABLE = frozenset(chr(code) for code in range(0x20, 0x7F))
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""The Unicode categories of the characters :func:`terminal_safe` escapes."""


def escape_char(char: str) -> str:
    """``char`` as printable ASCII: itself if printable ASCII (a backslash doubled), else
    a Python-style escape (``\\t``, ``\\x7f``, ``\\u034f``, ``\\U0001f600``)."""
    if char in _NAMED:
        return _NAMED[char]
    if char in _PRINTABLE:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal may act on escaped as :func:`escape_char`
    does.

    Control characters (C0, DEL, C1: ESC starts ANSI and OSC sequences, CR rewrites
    the line), format characters (bidirectional overrides, zero-width), surrogates,
    private-use and unassigned code points, line and paragraph separators become
    ``\\x1b``, ``\\u202e``, …; everything else, backslashes included, is kept as it
    is, so text already escaped (:func:`cleanroom.protocol.text.shown`) is unchanged.
    The last guard of a line printed, whatever it quotes (e.g. an unescaped value in a
    refusal's ``expected``/``got``).
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        escape_char(char) if unicodedata.category(char) in UNSAFE_CATEGORIES else char
        for char in text
    )


def _text(value: str) -> str:
    """``value`` as text UTF-8 can hold: a lone surrogate (which JSON may escape, and
    no UTF-8 or UTF-16 text holds) becomes the six characters ``\\udXXX``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def jsonable(value: object) -> object:
    """A JSON-serialisable form of ``value``: bytes as lowercase hex, sets sorted, text
    that UTF-8 can hold (a refusal must always render, whatever it quotes)."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted((jsonable(item) for item in value), key=str)
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {_text(str(key)): jsonable(item) for key, item in value.items()}
    return _text(str(value))


def _display(value: object) -> str:
    """A one-line human form of ``value`` (hex for bytes, sorted braces for sets)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(_display(item) for item in value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_display(item) for item in value) + "]"
    return str(value)


EXIT_REFUSED = 1  # a security check refused, or the operation failed
EXIT_USAGE = 2  # unusable input: bad arguments, missing or malformed files


class Error(Exception):
    """The root of every error cleanroom raises on purpose.

    ``http_status`` is the status a service answers with, ``exit_code`` the command
    line's. Subclasses set them as class attributes; one raise may set them on the
    instance (``error.http_status = 409``). Anything else that escapes is a defect: the
    services answer 500 and the command line says "internal error".
    """

    http_status: int = 400
    exit_code: int = EXIT_REFUSED
    facts: Mapping[str, object] = MappingProxyType({})
    """Members a service's problem answer carries beside ``detail`` (e.g. the room)."""


class CheckFailed(Error):
    """Base of every security failure: names the check, the expected and the actual value.

    ``str(error)`` is one line: ``"{check}: {message} (expected {expected}, got {actual})"``,
    with bytes shown as lowercase hex. ``hint``, when set, tells the user what to do.
    """

    def __init__(
        self,
        check: str,
        expected: object,
        actual: object,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.check = check
        self.expected = expected
        self.actual = actual
        self.message = message
        self.hint = hint
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        text = (
            f"{self.check}: {self.message} "
            f"(expected {_display(self.expected)}, got {_display(self.actual)})"
        )
        # dcap-qvl's messages may span lines ("Caused by: ..."); keep the summary on one.
        return terminal_safe(" ".join(text.split()))

    def __str__(self) -> str:
        return self._one_line()

    @property
    def expected_text(self) -> str:
        """The expected value for people: hex for bytes, sorted sets, safe to print."""
        return terminal_safe(_display(self.expected))

    @property
    def actual_text(self) -> str:
        """The actual value for people, folded onto one line, safe to print."""
        return terminal_safe(" ".join(_display(self.actual).split()))

    def to_json(self) -> dict[str, object]:
        """The failure as a JSON object: check, expected, actual, message and hint if set."""
        document: dict[str, object] = {
            "check": _text(self.check),
            "expected": jsonable(self.expected),
            "actual": jsonable(self.actual),
            "message": _text(self.message),
        }
        if self.hint is not None:
            document["hint"] = _text(self.hint)
        return document
