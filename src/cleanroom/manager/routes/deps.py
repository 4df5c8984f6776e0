"""What every router of the manager shares: its services, who is calling, and the
path and query parameters matched whole before a handler sees them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request

from cleanroom.http_auth import challenge
from cleanroom.manager.callers import Caller, ServerCaller
from cleanroom.manager.services import Services
from cleanroom.tokens import SCOPE_COMPUTE, SCOPE_USER, TokenClaims, TokenError


def services(request: Request) -> Services:
    """The services of the app that answers ``request``."""
    built: Services = request.app.state.manager
    return built


def token_refused(error: TokenError, request: Request) -> HTTPException:
    """The answer to a refused token, naming the check, with its challenge (RFC 6750 §3,
    RFC 9449 §7.1)."""
    scheme = (request.headers.get("authorization") or "").strip().partition(" ")[0].lower()
    return _refused(error, scheme)


def refused_again(error: TokenError) -> HTTPException:
    """The answer to a user's token refused after its request was authenticated
    (:func:`cleanroom.manager.callers.check_still_acts`); a user's token is DPoP-bound."""
    return _refused(error, "dpop")


def _refused(error: TokenError, scheme: str) -> HTTPException:
    facts = error.to_json()
    detail = str(facts.pop("message"))
    value = challenge(error, scheme)
    return HTTPException(
        error.http_status,
        {"detail": detail, **facts},
        headers={"WWW-Authenticate": value} if value else None,
    )


def claims(request: Request, scope: str | None) -> TokenClaims:
    """The request's token for this manager (with its DPoP proof), or 401/403."""
    try:
        return services(request).auth.authenticator.authenticate(request, scope)
    except TokenError as error:
        raise token_refused(error, request) from error


def caller(request: Request, checked: TokenClaims | None = None) -> Caller:
    """The client behind the request's user token (``checked``, if it was checked
    already: a proof counts once), if it may still act; else 401 naming the check."""
    if checked is None:
        checked = claims(request, SCOPE_USER)
    try:
        return services(request).auth.user(checked)
    except TokenError as error:
        raise token_refused(error, request) from error


def server(request: Request, checked: TokenClaims | None = None) -> ServerCaller:
    """The compute server behind the request's compute token, if still registered."""
    if checked is None:
        checked = claims(request, SCOPE_COMPUTE)
    try:
        return services(request).auth.server(checked)
    except TokenError as error:
        raise token_refused(error, request) from error


def reader(request: Request) -> Caller | ServerCaller:
    """Whoever reads a function bundle: a user's client or a compute server."""
    checked = claims(request, None)
    if SCOPE_COMPUTE in checked.scopes:
        return server(request, checked)
    if SCOPE_USER in checked.scopes:
        return caller(request, checked)
    error = TokenError(
        "token-scope", f"{SCOPE_USER} or {SCOPE_COMPUTE}", checked.scope, "not a reader"
    )
    raise token_refused(error, request)


def _current_caller(request: Request) -> Caller:
    return caller(request)


def _current_server(request: Request) -> ServerCaller:
    return server(request)


# Module level: FastAPI resolves the routes' (string) annotations in their modules.
CurrentCaller = Annotated[Caller, Depends(_current_caller)]
CurrentServer = Annotated[ServerCaller, Depends(_current_server)]
# Path and query parameters are matched whole before a handler (or the database: no
# PostgreSQL text holds a NUL) sees them. These are pydantic-core's patterns (Rust
# regex), where ``$`` is the end of the text only: a trailing newline does not match
# (tests/manager/test_paths.py). The token is checked first: a request without one
# is 401 whatever its path. A member's name is checked by ``projects`` (422
# ``member-name``) before it is looked up.
_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
_CLIENT_ID = r"^[A-Za-z0-9_-]{1,64}$"  # as the token endpoint takes them (grants.CLIENT_ID)
RoomName = Annotated[str, Path(pattern=_NAME, description="A clean room's name")]
ProjectName = Annotated[str, Path(pattern=_NAME, description="A project's name")]
ClientId = Annotated[str, Path(pattern=_CLIENT_ID, description="A client's id")]
RoomProject = Annotated[
    str | None,
    Query(
        description="The room's project, where rooms of several projects that you see "
        "share the name",
        pattern=_NAME,
    ),
]
