"""What every cleanroom HTTP server shares: errors as RFC 9457 problem details.

The management server and the Controller call :func:`install_problem_handlers` on
their FastAPI app; every error then leaves as ``application/problem+json``
(docs/api.md, "Errors"):

- ``HTTPException`` (FastAPI's or Starlette's, so unknown routes too): its status
  and its ``detail``; a dict detail is merged into the problem;
- ``RequestValidationError``: 422, the first error's location and message;
- :class:`cleanroom.errors.Error`, every error cleanroom raises on purpose: status
  ``error.http_status``, its one line as ``detail`` and its ``facts`` as members. A
  :class:`~cleanroom.errors.CheckFailed` adds ``check``, ``expected``, ``actual``
  (and ``hint``) from ``to_json()``, with its message as ``detail``; a
  :class:`Refused` carries the members and headers its raiser chose;
- anything else, and an ``Error`` with status 500 that is not a refused check (the
  server's own failure): 500 with a fixed detail. The exception is logged on the
  server; its text and traceback never reach the client.

:func:`problem` builds such a response for a handler that answers an error itself;
:func:`error_problem` is the one mapping of an :class:`~cleanroom.errors.Error`.

The server's OpenAPI document says the same (:func:`describe_problems`): every
operation's errors are ``application/problem+json`` with ``detail`` a string (the
``Problem`` schema), in place of FastAPI's own validation-error body, which these
servers never send. A client generated from the document can read every error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cleanroom.errors import CheckFailed, Error, jsonable

PROBLEM_JSON = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem: what went wrong, as one line in detail; a refused "
    "check also names the check, the expected and the actual value.",
    "type": "object",
    "required": ["type", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "always about:blank"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer", "description": "the HTTP status"},
        "detail": {"type": "string", "description": "one line a user can act on"},
        "check": {"type": "string", "description": "the check that refused the request"},
        "expected": {"description": "what the check expected"},
        "actual": {"description": "what the check found"},
        "hint": {"type": "string", "description": "what to do about it"},
        "location": {"type": "string", "description": "the request field that is not valid"},
        "error": {"type": "string", "description": "an RFC 6749 error code (/oauth/revoke)"},
    },
    "additionalProperties": True,
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Security schemes an operation may name in its own ``openapi_extra`` (added to the
# document's components when one does).
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "clientSecretBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "RFC 6749 §2.3.1 client_secret_basic: the client id and secret, "
        "each form-urlencoded, as the user and password",
    },
}
PROBLEM_RESPONSE: dict[str, Any] = {
    "description": "An error, as an RFC 9457 problem",
    "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
}

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
    # jsonable: whatever the problem quotes (a request's lone surrogate too) renders.
    return JSONResponse(
        jsonable(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


class Refused(Error):
    """A refusal a handler words itself: raised, it is answered as
    ``problem(status, detail, headers=headers, **facts)``."""

    def __init__(
        self, status: int, detail: str, *, headers: dict[str, str] | None = None, **facts: object
    ) -> None:
        super().__init__(detail)
        self.http_status = status
        self.headers, self.facts = headers, facts


def error_problem(error: Error) -> JSONResponse:
    """The problem response for ``error``: status ``error.http_status``.

    ``detail`` is the error's one line, its ``facts`` are members beside it, and a
    :class:`Refused` adds its headers. A refused check's ``detail`` is its message,
    with ``check``, ``expected``, ``actual`` (and ``hint``) from ``error.to_json()``.
    """
    if isinstance(error, CheckFailed):
        facts = error.to_json()
        message = str(facts.pop("message", error.message))
        return _problem(error.http_status, message, facts, None)
    headers = error.headers if isinstance(error, Refused) else None
    return _problem(error.http_status, str(error), error.facts, headers)


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


async def _error(request: Request, error: Exception) -> Response:
    refused = cast(Error, error)  # registered for Error only
    if refused.http_status == 500 and not isinstance(refused, CheckFailed):
        # The server's own failure (a database, a key file, a tool): its text may name
        # paths and internals, so it goes to the log, as an unexpected one does.
        return await _unexpected(request, error)
    return error_problem(refused)


async def _unexpected(request: Request, error: Exception) -> Response:
    _log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return problem(500, "internal server error (the server's log has the details)")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error ``app`` answers an RFC 9457 problem (see the module docstring),
    and its OpenAPI document say so (:func:`describe_problems`)."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Error, _error)
    app.add_exception_handler(Exception, _unexpected)
    describe_problems(app)


def form_body(
    fields: dict[str, str], required: list[str], values: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """An ``openapi_extra`` request body of ``application/x-www-form-urlencoded`` text
    fields (name -> description; ``values``: the only values a field takes), for a
    route that reads its form itself."""
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in fields.items()
    }
    for name, allowed in (values or {}).items():
        properties[name]["enum"] = allowed
    schema = {"type": "object", "properties": properties, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


def _uses_fastapi_validation_body(response: dict[str, Any]) -> bool:
    content = response.get("content", {})
    return any("HTTPValidationError" in str(media.get("schema", {})) for media in content.values())


def describe_problems(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI document describe its real errors.

    Every operation gets a ``default`` response of ``application/problem+json``
    (:data:`PROBLEM_SCHEMA`); FastAPI's 422 body (a list of validation errors) is
    replaced by the problem these servers send instead. Responses an operation
    declares itself (the token endpoint's OAuth errors) are kept.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                for requirement in operation.get("security", []):
                    for name in requirement:
                        document["components"].setdefault("securitySchemes", {})[name] = (
                            SECURITY_SCHEMES[name]
                        )
                responses = operation.setdefault("responses", {})
                for status, response in list(responses.items()):
                    if _uses_fastapi_validation_body(response):
                        responses[status] = {
                            **PROBLEM_RESPONSE,
                            "description": "The request is not valid",
                        }
                responses.setdefault("default", PROBLEM_RESPONSE)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
