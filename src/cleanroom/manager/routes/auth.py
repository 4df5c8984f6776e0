"""Tokens: ``POST /oauth/token``, ``POST /oauth/revoke``, the signing keys, and who the
caller is (``/v1/whoami``, its user key). docs/api.md, "Tokens".

The token and revocation endpoints read their forms themselves and answer RFC 6749
§5.2 errors; they are rate limited per address and per client_id from that address,
every attempt counted (a wrong secret too; token buckets in this process's memory).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from cleanroom.limits import RateLimiter, retry_after
from cleanroom.manager.client_auth import (
    BASIC_CHALLENGE,
    ClientAuthError,
    client_credentials,
    single_authorization,
    single_parameters,
)
from cleanroom.manager.grants import GrantRefused, TokenRequest
from cleanroom.manager.revocation import Revoked
from cleanroom.manager.routes.deps import CurrentCaller
from cleanroom.manager.services import Services
from cleanroom.manager.settings import Settings
from cleanroom.web import form_body, problem

JWK_SET = "application/jwk-set+json"  # RFC 7517 §8.5
_SLOW_DOWN = "too many token requests from this address, or for this client_id from it"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# What the token and revocation endpoints take and answer, for their OpenAPI
# description (a generated client can read every error).
_OAUTH_ERROR: dict[str, Any] = {
    "description": "An RFC 6749 §5.2 error: the error code alone",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}
_CLIENT_FIELDS = {
    "client_id": "Your client id (client_secret_post; or use HTTP Basic)",
    "client_secret": "Your client secret (client_secret_post; or use HTTP Basic)",
}
_BY_CLIENT: list[dict[str, list[str]]] = [{"clientSecretBasic": []}, {}]
TOKEN_ENDPOINT: dict[str, Any] = {
    "summary": "An access token for client credentials (RFC 6749 §4.4)",
    "openapi_extra": {
        **form_body(
            {"grant_type": "The grant: client credentials", **_CLIENT_FIELDS},
            ["grant_type"],
            {"grant_type": ["client_credentials"]},
        ),
        "security": _BY_CLIENT,
    },
    "responses": {
        200: {
            "description": "The access token (a JWT, ES256)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                        },
                    }
                }
            },
        },
        400: {**_OAUTH_ERROR, "description": "invalid_request or unsupported_grant_type"},
        401: {
            **_OAUTH_ERROR,
            "description": "invalid_client: unknown, disabled or wrong credentials",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        429: {
            **_OAUTH_ERROR,
            "description": "slow_down: too many attempts",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    },
}
REVOKE_ENDPOINT: dict[str, Any] = {
    "summary": "Revoke a token (RFC 7009), by its client or by whoever holds it",
    "openapi_extra": {
        **form_body(
            {"token": "The token to revoke", "token_type_hint": "Ignored", **_CLIENT_FIELDS},
            ["token"],
        ),
        "security": _BY_CLIENT,
    },
    "responses": {200: {"description": "Revoked (also an unknown or expired token)"}},
}


class KeyRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_key: str
    signature: str


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class _TokenEndpointLimits:
    """The rate limits of ``/oauth/token`` and ``/oauth/revoke``."""

    def __init__(self, settings: Settings) -> None:
        self._by_address = RateLimiter(settings.token_rate_per_address)
        self._by_client = RateLimiter(settings.token_rate_per_client)

    def address(self, request: Request) -> float | None:
        """Spend one attempt of the caller's address: None, or seconds to wait."""
        return self._by_address.take(_address(request))

    def client(self, request: Request, client_id: object) -> float | None:
        """Spend one attempt of the client_id named (if any) from the caller's address: None,
        or seconds to wait.

        Per client_id *and* address: counted per client_id alone, anyone who knew a
        client's id held its logins back with wrong secrets from anywhere (found by h24).
        What that bucket no longer bounds is guessing one secret from many addresses at
        once, each within its own address's limit: a secret is 256 random bits.
        """
        if not isinstance(client_id, str) or not client_id:
            return None
        # No client_id is longer than 64; the address ends the key (it has no space).
        return self._by_client.take(f"{client_id[:64]} {_address(request)}")


def _oauth_error(status: int, error: str) -> JSONResponse:
    """An RFC 6749 §5.2 error: deliberately nothing but the error code; a 401 says how
    to authenticate (``WWW-Authenticate``, as §5.2 requires after HTTP authentication)."""
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _slow_down(wait: float) -> JSONResponse:
    """429 for the token endpoint: an OAuth error body and when to try again."""
    return JSONResponse(
        {"error": "slow_down"},
        status_code=429,
        headers={"Cache-Control": "no-store", "Retry-After": retry_after(wait)},
    )


def _revoke_refused(
    status: int,
    error: str,
    detail: str,
    *,
    retry: float | None = None,
    challenge: bool = False,
    **facts: object,
) -> JSONResponse:
    """An error of ``/oauth/revoke``: problem details with the RFC 6749 ``error`` code."""
    headers = {"Cache-Control": "no-store"}
    if retry is not None:
        headers["Retry-After"] = retry_after(retry)
    if challenge:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return problem(status, detail, headers=headers, error=error, **facts)


def router(services: Services) -> APIRouter:
    """The token endpoints, the signing keys and ``/v1/whoami``, on ``services.auth``."""
    auth = services.auth
    limits = _TokenEndpointLimits(services.settings)
    routes = APIRouter()

    @routes.post("/oauth/token", **TOKEN_ENDPOINT)
    async def token(request: Request) -> Response:
        wait = limits.address(request)
        if wait is not None:
            return _slow_down(wait)
        form = await request.form()
        try:
            single_parameters(form.multi_items())
            credentials = client_credentials(
                single_authorization(request.headers.getlist("authorization")), form
            )
        except ClientAuthError as error:
            wait = limits.client(request, form.get("client_id"))
            return (
                _slow_down(wait)
                if wait is not None
                else _oauth_error(error.http_status, error.error)
            )
        wait = limits.client(request, credentials.client_id if credentials else None)
        if wait is not None:
            return _slow_down(wait)
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str) or not grant_type:
            return _oauth_error(400, "invalid_request")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type")
        if credentials is None:
            return _oauth_error(401, "invalid_client")
        resources = form.getlist("resource")
        room, project = form.get("room"), form.get("project")
        if (
            not all(isinstance(resource, str) for resource in resources)
            or not isinstance(room, str | None)
            or not isinstance(project, str | None)
        ):
            return _oauth_error(400, "invalid_request")
        asked = TokenRequest(
            client_id=credentials.client_id,
            secret=credentials.secret,
            resources=[str(resource) for resource in resources],
            room=room,
            project=project,
            proofs=request.headers.getlist("dpop"),
        )
        try:
            granted = await run_in_threadpool(auth.grants.grant, asked)
        except GrantRefused as refused:
            headers = dict(_NO_STORE)
            if refused.http_status == 401:
                headers["WWW-Authenticate"] = BASIC_CHALLENGE
            return JSONResponse(refused.body(), status_code=refused.http_status, headers=headers)
        return JSONResponse(
            {
                "access_token": granted.access_token,
                "token_type": granted.token_type,
                "expires_in": granted.expires_in,
            },
            headers=_NO_STORE,
        )

    @routes.post("/oauth/revoke", **REVOKE_ENDPOINT)
    async def revoke_token(request: Request) -> Response:
        """RFC 7009: revoke a token, authenticated by client credentials or by the token."""
        wait = limits.address(request)
        if wait is not None:
            return _revoke_refused(429, "slow_down", _SLOW_DOWN, retry=wait)
        form = await request.form()
        try:
            single_parameters(form.multi_items())
        except ClientAuthError as error:
            return _revoke_refused(error.http_status, error.error, error.description)
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return _revoke_refused(400, "invalid_request", "the form field 'token' is missing")
        try:
            given = client_credentials(
                single_authorization(request.headers.getlist("authorization")), form
            )
        except ClientAuthError as error:
            return _revoke_refused(
                error.http_status, error.error, error.description, challenge=error.challenge
            )
        credentials: tuple[str, str] | None = None
        if given is not None:
            wait = limits.client(request, given.client_id)
            if wait is not None:
                return _revoke_refused(429, "slow_down", _SLOW_DOWN, retry=wait)
            credentials = (given.client_id, given.secret)
        outcome = await run_in_threadpool(auth.revoke, token, credentials)
        if outcome is Revoked.INVALID_CLIENT:
            return _revoke_refused(
                401, "invalid_client", "client authentication failed", challenge=True
            )
        if outcome is Revoked.NOT_YOURS:
            client_id = credentials[0] if credentials else None
            return _revoke_refused(
                400,
                "unauthorized_client",
                f"the token was not issued to client {client_id}",
                check="token-owner",
                expected=f"a token of client {client_id}",
                actual="a token of another client",
            )
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    @routes.get(
        "/.well-known/jwks.json",
        responses={200: {"content": {JWK_SET: {}}, "description": "The token signing keys"}},
    )
    def jwks() -> Response:
        # max-age + the Controllers' refetch interval (30 + 30 s) is what a rotated key's
        # pre-publication covers (cleanroom.manager.keys, DEFAULT_ACTIVATE_AFTER).
        return JSONResponse(
            auth.jwks(), media_type=JWK_SET, headers={"Cache-Control": "max-age=30"}
        )

    @routes.get("/v1/whoami")
    def whoami(caller: CurrentCaller) -> dict[str, Any]:
        return {
            "client_id": caller.client_id,
            "project": caller.project,
            "user_id": caller.user_id,
            "member": caller.member,
            "role": caller.role,
        }

    @routes.post("/v1/whoami/logout")
    def logout(caller: CurrentCaller) -> JSONResponse:
        logged_out = auth.logout(caller)
        return JSONResponse(
            {
                "revoked": logged_out.manager_token,
                "room_tokens_revoked": logged_out.room_tokens_revoked,
            },
            headers={"Cache-Control": "no-store"},
        )

    @routes.put("/v1/whoami/user-key")
    def register_user_key(caller: CurrentCaller, body: KeyRegistration) -> dict[str, Any]:
        return {"user_id": auth.register_key(caller, body.user_key, body.signature)}

    return routes
