"""The manager's refusals that are not a security check, each with its HTTP status.

:mod:`cleanroom.web` answers one as a problem: ``detail`` is its one line and
``facts`` are the members a client reads beside it (the room, the servers that
refused). A refused check is a :class:`cleanroom.errors.CheckFailed` instead.
"""

from __future__ import annotations

from cleanroom.errors import CheckFailed, Error


class ManagerError(Error):
    """A request the manager cannot answer: ``detail`` says why, on one line."""

    def __init__(self, detail: str, **facts: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.facts = facts

    def __str__(self) -> str:
        return self.detail


class BadRequest(ManagerError):
    http_status = 400


class Unauthorized(ManagerError):
    http_status = 401


class Forbidden(ManagerError):
    http_status = 403


class NotFound(ManagerError):
    http_status = 404


class Conflict(ManagerError):
    http_status = 409


class Unprocessable(ManagerError):
    http_status = 422


class ComputeServerFailed(ManagerError):
    """A Controller could not be reached or refused what the manager asked of it."""

    http_status = 502


class Unavailable(ManagerError):
    http_status = 503


class BundleTooLarge(CheckFailed):
    """A function bundle larger than the manager's limit (``function-size``)."""

    http_status = 413

    def __init__(self, limit: int, actual: str) -> None:
        super().__init__(
            "function-size",
            f"at most {limit} bytes",
            actual,
            f"the function bundle is larger than the manager's limit of {limit} bytes",
            hint="the operator sets the limit: cleanroom server manager --max-function-bytes",
        )


class QuotaExceeded(CheckFailed):
    """A project at one of the manager's limits per project (``room-quota``,
    ``function-quota``): one project may not take every compute slot or fill the disk."""

    http_status = 409

    def __init__(self, check: str, limit: int, actual: int, message: str, option: str) -> None:
        super().__init__(
            check,
            f"at most {limit}",
            actual,
            message,
            hint=f"the operator sets the limit: cleanroom server manager {option}",
        )
