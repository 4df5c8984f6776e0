"""What every cleanroom HTTP server shares: errors as RFC 9457 problem details.

The management server and the Controller call :func:`install_problem_handlers` on
their FastAPI app; every error then leaves as ``application/problem+json``
(docs/api.md, "Errors"):

- ``HTTPException`` (FastAPI's or Starlette's, so unknown routes too): its status
  and its ``detail``; a dict detail is merged into the problem;
- ``RequestValidationError``: 422, the first error's location and message;
- :class:`cleanroom.errors.CheckFailed`: status ``error.http_status`` if the
  subclass sets that class attribute, else 400, with ``check``, ``expected``,
  ``actual`` (and ``hint``) from ``to_json()``;
- anything else: 500 with a fixed detail. The exception is logged on the server;
  its text and traceback never reach the client.

:func:`problem` builds such a response for a handler that answers an error itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cleanroom.errors import CheckFailed

PROBLEM_JSON = "application/problem+json"

_log = logging.getLogger("cleanroom.web")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    """An RFC 9457 problem response: ``{type, title, status, detail, **extra}``.

    ``detail`` is one line a user can act on; ``extra`` adds members such as
    ``check``, ``expected`` and ``actual`` (they must be JSON-serialisable; the
    four standard members cannot be overridden).
    """
    return _problem(status, detail, extra, headers)


def _problem(
    status: int, detail: str, extra: Mapping[str, object], headers: dict[str, str] | None
) -> JSONResponse:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": detail,
    }
    for key, value in extra.items():
        if key not in body:
            body[key] = value
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def check_failed_problem(error: CheckFailed) -> JSONResponse:
    """The problem response for a refused check: status ``error.http_status``, else 400.

    ``detail`` is the check's message; ``check``, ``expected``, ``actual`` (and
    ``hint``) come from ``error.to_json()``.
    """
    status = getattr(error, "http_status", HTTPStatus.BAD_REQUEST)
    facts = error.to_json()
    message = str(facts.pop("message", error.message))
    return _problem(int(status), message, facts, None)


async def _http_exception(request: Request, error: Exception) -> Response:
    http_error = cast(StarletteHTTPException, error)  # registered for this type only
    status = http_error.status_code
    headers = dict(http_error.headers) if http_error.headers else None
    if isinstance(http_error.detail, dict):
        extra = {str(key): value for key, value in http_error.detail.items()}
        detail = str(extra.pop("detail", _title(status)))
        return _problem(status, detail, extra, headers)
    detail = http_error.detail if isinstance(http_error.detail, str) else _title(status)
    return problem(status, detail, headers=headers)


async def _validation_error(request: Request, error: Exception) -> Response:
    errors = cast(RequestValidationError, error).errors()
    if not errors:
        return problem(422, "the request is not valid")
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "request"
    return problem(422, f"{where}: {first.get('msg', 'invalid')}", location=where)


async def _check_failed(request: Request, error: Exception) -> Response:
    return check_failed_problem(cast(CheckFailed, error))


async def _unexpected(request: Request, error: Exception) -> Response:
    _log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return problem(500, "internal server error (the server's log has the details)")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error ``app`` answers an RFC 9457 problem (see the module docstring)."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(CheckFailed, _check_failed)
    app.add_exception_handler(Exception, _unexpected)
