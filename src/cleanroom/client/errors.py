"""Errors a server answered, as the client shows them: one line, never trusted.

Servers answer errors as RFC 9457 problems (docs/api.md, "Errors"), the token
endpoint as RFC 6749 §5.2 ``{"error": …}``. Either way the body came from a
server the client does not trust: it is shown (folded onto one line, escaped by
:func:`cleanroom.protocol.text.shown`, shortened) and never acted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from cleanroom.errors import CheckFailed, Error
from cleanroom.protocol.text import shown

if TYPE_CHECKING:
    import httpx

_MAX_TEXT = 400


class UntrustedAnswerError(CheckFailed):
    """A server's answer contradicts what the client can check itself (a lying server)."""


def _clean(value: object, limit: int = _MAX_TEXT) -> str:
    """``value`` as one line of at most ``limit`` characters, escaped as every untrusted text."""
    text = value if isinstance(value, str) else repr(value)
    text = shown(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ServerError(Error):
    """A server refused a request (``status`` ≥ 400) or could not be reached (``status`` 0).

    ``problem`` is the decoded error body (empty when there was none). ``str()`` is
    one line, e.g. ``manager: 409 Conflict: a clean room named 'x' exists``, with
    ``(check: expected …, got …)`` appended when the server named a check.
    """

    def __init__(
        self,
        who: str,
        status: int,
        problem: Mapping[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> None:
        self.who = who
        self.status = status
        self.problem: dict[str, Any] = dict(problem or {})
        self._message = message
        super().__init__(str(self))

    @property
    def detail(self) -> str:
        """The server's one-line explanation (its problem ``detail`` or OAuth error)."""
        if isinstance(self.problem.get("detail"), str):
            return _clean(self.problem["detail"])
        if isinstance(self.problem.get("error"), str):  # RFC 6749 §5.2
            described = self.problem.get("error_description")
            error = _clean(self.problem["error"])
            return f"{error}: {_clean(described)}" if isinstance(described, str) else error
        return ""

    @property
    def check(self) -> str | None:
        """The named check that refused the request, if the server said so."""
        check = self.problem.get("check")
        return _clean(check, 100) if isinstance(check, str) else None

    @property
    def expected(self) -> object:
        return self.problem.get("expected")

    @property
    def actual(self) -> object:
        return self.problem.get("actual")

    def __str__(self) -> str:
        if self._message is not None:
            return self._message
        title = self.problem.get("title")
        title = _clean(title, 80) if isinstance(title, str) else _phrase(self.status)
        line = f"{self.who}: {self.status} {title}"
        if self.detail:
            line += f": {self.detail}"
        if (
            self.check is not None
            and "expected" not in self.problem
            and "actual" not in self.problem
        ):
            line += f" ({self.check})"  # an OAuth error names its check alone
        elif self.check is not None:
            line += (
                f" ({self.check}: expected {_clean(self.expected, 200)}, "
                f"got {_clean(self.actual, 200)})"
            )
        return line

    @classmethod
    def from_response(cls, response: httpx.Response, who: str) -> ServerError:
        """The error for an answer with status ≥ 400; the body must have been read."""
        return from_response(response, who)

    @classmethod
    def unreachable(cls, who: str, url: str, error: BaseException) -> ServerError:
        """The error for a request that got no answer (status 0)."""
        reason = _clean(str(error)) or type(error).__name__
        return cls(who, 0, message=f"cannot reach the {who} at {url}: {reason}")


def from_response(response: httpx.Response, who: str) -> ServerError:
    """A :class:`ServerError` from an error answer (a problem, an OAuth error, or text)."""
    problem: dict[str, Any] = {}
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        body = None
    if isinstance(body, dict):
        problem = body
    elif response.text.strip():
        problem = {"detail": _clean(response.text)}
    return ServerError(who, response.status_code, problem)
