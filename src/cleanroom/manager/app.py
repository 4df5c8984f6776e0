"""The management server's HTTP API (docs/api.md, "Tokens" and "Management server").

The manager is outside the TEE model: it can deny service, but it can never read
data or make a client accept the wrong function, spec or enclave, because every
client recomputes function IDs and Work-IDs itself. What it enforces here
(tokens, visibility, the size limit) is defence in depth and good manners.

Who may see what:

- a room, and the bundle of its function: the deployer's project, and every
  client whose registered ``user_id`` appears in the room's spec (inputs, outputs
  or runners); a room the caller may not see is answered ``404`` like one that
  does not exist;
- a function bundle also: every project that uploaded it, and a compute server
  (its own ``compute``-scope token) while a room using it is deploying or
  deployed *on that server* (its Controller fetches the bundle with that token);
- the revocation list: registered compute servers only;
- deleting a room: only the deployer's project.

Tokens are issued by :mod:`cleanroom.manager.grants`, checked with their DPoP
proofs by :mod:`cleanroom.http_auth` for this manager's audience, and their
holders looked up by :mod:`cleanroom.manager.callers`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect

from cleanroom import runtimes
from cleanroom.dpop import ProofVerifier
from cleanroom.errors import CheckFailed
from cleanroom.http_auth import RequestAuthenticator, challenge
from cleanroom.limits import BodySizeLimit, RateLimiter, retry_after
from cleanroom.manager import audit, projects, servers
from cleanroom.manager.callers import (
    Caller,
    ServerCaller,
    find_room,
    server_caller,
    user_caller,
    visible_rooms,
)
from cleanroom.manager.client_auth import BASIC_CHALLENGE, ClientAuthError, client_credentials
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    Client,
    ComputeServer,
    FunctionUploader,
    Project,
    Room,
    RoomMember,
    StoredFunction,
    open_database,
)
from cleanroom.manager.grants import (
    GrantRefused,
    Grants,
    TokenRequest,
)
from cleanroom.manager.keys import KeyRing
from cleanroom.manager.revocation import DatabaseRevocations, Revoked, revocation_list, revoke
from cleanroom.manager.settings import Settings
from cleanroom.manager.storage import (
    FunctionStore,
    FunctionTooLarge,
    Garbage,
    Received,
    StoredFunctionMissing,
    VerifiedBundle,
    collect_garbage,
    digest_of,
)
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, BundleError
from cleanroom.protocol.encoding import canonical, from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.keys import load_spki, user_id, verify
from cleanroom.protocol.spec import WorkSpec
from cleanroom.protocol.sql import ENGINE_RUNTIME
from cleanroom.tokens import (
    MANAGER_SUBJECT,
    SCOPE_COMPUTE,
    SCOPE_DELETE,
    SCOPE_DEPLOY,
    SCOPE_STATUS,
    SCOPE_USER,
    TokenClaims,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)
from cleanroom.web import form_body, install_problem_handlers, problem

__all__ = ["MANAGER_SUBJECT", "Caller", "create_app"]

KEY_REGISTRATION_TYPE = "cleanroom/key-registration/v1"

_log = logging.getLogger("cleanroom.manager")


class KeyRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_key: str
    signature: str


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


class RoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str


class NewClientRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: str | None = None
    name: str | None = None


def _oauth_error(status: int, error: str) -> JSONResponse:
    """An RFC 6749 §5.2 error: deliberately nothing but the error code; a 401 says how
    to authenticate (``WWW-Authenticate``, as §5.2 requires after HTTP authentication)."""
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE
    return JSONResponse({"error": error}, status_code=status, headers=headers)


JWK_SET = "application/jwk-set+json"  # RFC 7517 §8.5
_SLOW_DOWN = "too many token requests from this address or for this client_id"

# The token and revocation endpoints read their forms themselves: what they take and
# answer, for their OpenAPI description (a generated client can read every error).
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


class _TokenEndpointLimits:
    """The rate limits of ``/oauth/token`` and ``/oauth/revoke``: every attempt counts,
    a wrong secret too (token buckets in this process's memory, cleanroom.limits)."""

    def __init__(self, settings: Settings) -> None:
        self._by_address = RateLimiter(settings.token_rate_per_address)
        self._by_client = RateLimiter(settings.token_rate_per_client)

    def address(self, request: Request) -> float | None:
        """Spend one attempt of the caller's address: None, or seconds to wait."""
        return self._by_address.take(request.client.host if request.client else "unknown")

    def client(self, client_id: object) -> float | None:
        """Spend one attempt of the client_id named (if any): None, or seconds to wait."""
        if not isinstance(client_id, str) or not client_id:
            return None
        return self._by_client.take(client_id[:64])  # no client_id is longer


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


def _token_refused(error: TokenError, request: Request) -> HTTPException:
    """The answer to a refused token, naming the check, with its challenge (RFC 6750 §3,
    RFC 9449 §7.1)."""
    facts = error.to_json()
    detail = str(facts.pop("message"))
    scheme = (request.headers.get("authorization") or "").strip().partition(" ")[0].lower()
    value = challenge(error, scheme)
    return HTTPException(
        error.http_status,
        {"detail": detail, **facts},
        headers={"WWW-Authenticate": value} if value else None,
    )


def room_document(room: Room) -> dict[str, Any]:
    """A room as the API shows it (docs/api.md, "A room")."""
    return {
        "name": room.name,
        "project": room.project.name,
        "spec": json.loads(room.spec),
        "work_id": room.work_id,
        "function": FUNCTION_ID_PREFIX + room.function_digest,
        "state": room.state,
        "reason": room.reason,
        "compute_url": room.compute_url,
        "deployer": room.deployer,
        "created": room.created,
    }


def _members(spec: WorkSpec) -> set[str]:
    return {*spec.inputs.values(), *spec.outputs.values(), *spec.runners}


class _Manager:
    """The manager's state and the logic behind each endpoint (the routes stay thin)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sessions: sessionmaker[Session] = open_database(settings.resolved_database_url)
        self.store = FunctionStore(settings.functions_dir, settings.max_function_bytes)
        self.issuer = TokenIssuer(
            settings.public_url,
            KeyRing.open(
                settings.data_dir,
                lifetime=settings.token_lifetime,
                leeway=settings.token_leeway,
            ),
            lifetime=settings.token_lifetime,
        )
        # Its own key ring and database: a rotated key or a revocation counts from
        # the next request on (cleanroom.manager.keys, cleanroom.manager.revocation).
        self.verifier = TokenVerifier(
            self.issuer.issuer,
            settings.public_url,
            key_source=self.issuer.keys.public_keys,
            revocations=DatabaseRevocations(self.sessions),
            leeway=settings.token_leeway,
        )
        proofs = ProofVerifier()
        self.authenticator = RequestAuthenticator(self.verifier, proofs, settings.public_url)
        self.grants = Grants(self.sessions, self.issuer, self.verifier, proofs)
        self.health = servers.HealthChecker(self.sessions, settings, self._status_headers)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    # -- who is calling -----------------------------------------------------------------

    def claims(self, request: Request, scope: str | None) -> TokenClaims:
        """The request's token for this manager (with its DPoP proof), or 401/403."""
        try:
            return self.authenticator.authenticate(request, scope)
        except TokenError as error:
            raise _token_refused(error, request) from error

    def caller(self, request: Request, claims: TokenClaims | None = None) -> Caller:
        """The client behind the request's user token (``claims``, if it was checked
        already: a proof counts once), if it may still act; else 401 naming the check
        (:func:`cleanroom.manager.callers.user_caller`)."""
        if claims is None:
            claims = self.claims(request, SCOPE_USER)
        try:
            with self.session() as session:
                return user_caller(session, claims)
        except TokenError as error:
            raise _token_refused(error, request) from error

    def server(self, request: Request, claims: TokenClaims | None = None) -> ServerCaller:
        """The compute server behind the request's compute token, if still registered."""
        if claims is None:
            claims = self.claims(request, SCOPE_COMPUTE)
        try:
            with self.session() as session:
                return server_caller(session, claims)
        except TokenError as error:
            raise _token_refused(error, request) from error

    # -- whoami -------------------------------------------------------------------------

    def register_key(self, caller: Caller, body: KeyRegistration) -> str:
        try:
            key = load_spki(from_b64u(body.user_key, "user_key"), "user_key")
            signature = from_b64u(body.signature, "signature")
        except MessageFormatError as error:
            raise HTTPException(
                422, {"detail": f"{error.check}: {error.message}", **error.to_json()}
            ) from error
        message = canonical(
            {
                "type": KEY_REGISTRATION_TYPE,
                "client_id": caller.client_id,
                "user_key": body.user_key,
            }
        )
        verify(key, signature, message, "key-registration")  # SignatureError -> 400 problem
        registered = user_id(key)
        with self.session() as session:
            client = session.get(Client, caller.client_id)
            if client is None:
                raise HTTPException(401, "the token's client is unknown")
            if client.user_id is not None and client.user_id != registered:
                raise HTTPException(
                    409,
                    {
                        "detail": "this client has another user key registered "
                        "(one user_id per client: ask the operator for a new client)",
                        "check": "one-user-per-client",
                        "expected": client.user_id,
                        "actual": registered,
                    },
                )
            client.user_key = body.user_key
            client.user_id = registered
            session.commit()
        return registered

    # -- functions ----------------------------------------------------------------------

    def finish_upload(self, caller: Caller, received: Received) -> tuple[bool, int]:
        """Check, store, record and audit an upload; (new to the manager, size).

        The first statement refreshes the bundle's upload time, which locks its
        row (the write lock on SQLite) if it is stored already, so a garbage
        collection deciding about it either finishes first (then this stores it
        anew) or waits and sees it was just uploaded (storage.collect_garbage).
        """
        try:
            self.store.check_unpacks(received)
        except BundleError:
            self.store.discard(received)
            raise
        digest = received.digest
        for attempt in (1, 2):
            with self.session() as session:
                now = int(time.time())
                refreshed = servers.rows_changed(
                    session,
                    update(StoredFunction)
                    .where(StoredFunction.digest == digest)
                    .values(uploaded=now),
                )
                new = refreshed == 0
                if attempt == 1:
                    self.store.commit(received)
                uploaded = session.scalar(
                    select(FunctionUploader.id).where(
                        FunctionUploader.digest == digest,
                        FunctionUploader.project_id == caller.project_id,
                    )
                )
                try:
                    if new:
                        session.add(
                            StoredFunction(
                                digest=digest, size=received.size, created=now, uploaded=now
                            )
                        )
                        session.flush()  # before its uploader: no relationship orders them
                    if uploaded is None:
                        session.add(FunctionUploader(digest=digest, project_id=caller.project_id))
                        session.flush()
                except IntegrityError:
                    # The same bundle's first upload at the same moment, from another
                    # request: it stored the row; go again to record this upload too.
                    session.rollback()
                    continue
                audit.record(
                    session,
                    caller.client_id,
                    "function.uploaded",
                    received.function_id,
                    size=received.size,
                    new=new,
                )
                session.commit()
                return new, received.size
        raise HTTPException(409, "the same bundle is being uploaded concurrently: upload again")

    def _function_visible(self, session: Session, caller: Caller, digest: str) -> bool:
        uploaded = session.scalar(
            select(FunctionUploader.id).where(
                FunctionUploader.digest == digest,
                FunctionUploader.project_id == caller.project_id,
            )
        )
        if uploaded is not None:
            return True
        return (
            session.scalar(visible_rooms(caller).where(Room.function_digest == digest)) is not None
        )

    def download(self, request: Request, digest: str) -> VerifiedBundle:
        """The stored bundle ``digest`` for whoever may read it, open and verified.

        Who may: see the module docstring. Its file was hashed once already
        (500 ``function-id`` if it no longer matches, ``function-stored`` if it is
        gone); :meth:`VerifiedBundle.chunks` streams it, hashing again.
        """
        not_found = HTTPException(404, f"no function {FUNCTION_ID_PREFIX}{digest}")
        claims = self.claims(request, None)
        if SCOPE_COMPUTE in claims.scopes:
            reader: Caller | ServerCaller = self.server(request, claims)
        elif SCOPE_USER in claims.scopes:
            reader = self.caller(request, claims)
        else:
            error = TokenError(
                "token-scope", f"{SCOPE_USER} or {SCOPE_COMPUTE}", claims.scope, "not a reader"
            )
            raise _token_refused(error, request)
        if not digest_of(FUNCTION_ID_PREFIX + digest):
            raise not_found
        with self.session() as session:
            if session.get(StoredFunction, digest) is None:
                raise not_found
            if isinstance(reader, ServerCaller):
                # Only what this server hosts: a live room of its own uses the bundle.
                hosted = session.scalar(
                    select(Room.id).where(
                        Room.function_digest == digest,
                        Room.state.in_(LIVE_ROOM_STATES),
                        Room.compute_server_id == reader.server_id,
                    )
                )
                if hosted is None:
                    raise not_found
            elif not self._function_visible(session, reader, digest):
                raise not_found
        try:
            return self.store.open_verified(digest)
        except StoredFunctionMissing:
            with self.session() as session:
                if session.get(StoredFunction, digest) is None:  # collected just now
                    raise not_found from None
            raise

    # -- rooms --------------------------------------------------------------------------

    def rooms(self, caller: Caller) -> list[dict[str, Any]]:
        with self.session() as session:
            query = visible_rooms(caller).order_by(Room.created, Room.id)
            return [room_document(room) for room in session.scalars(query)]

    def room(self, caller: Caller, name: str, project: str | None = None) -> dict[str, Any]:
        with self.session() as session:
            return room_document(find_room(session, caller, name, project))

    def _schedule(self, session: Session) -> ComputeServer:
        """The compute server for a new room, scheduling lock held (``servers.schedule``)."""
        try:
            return servers.schedule(session)
        except servers.NoServerAvailable as error:
            raise HTTPException(503, {"detail": str(error), "servers": error.refusals}) from error

    def _status_headers(self, server_url: str, project: str, room: str) -> dict[str, str]:
        """The health checker's headers to ask ``server_url`` about one room, once."""
        return self.grants.operation_headers(server_url, project, room, SCOPE_STATUS)

    def deploy(self, caller: Caller, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Validate, schedule and deploy a room; (201 or 502, the room).

        The room is inserted ``deploying`` in the transaction that chose its server
        (so it holds its slot: concurrent deploys never oversubscribe), then deployed
        on the Controller outside any transaction, then marked ``deployed`` or
        ``failed`` (which frees the slot) unless it changed meanwhile (its server
        was found lost, or it was deleted).
        """
        try:
            spec = WorkSpec.parse(document)
        except MessageFormatError as error:
            where = error.actual
            raise HTTPException(
                422,
                {"detail": f"spec field {where}: {error.message}", **error.to_json()},
            ) from error
        try:
            # A SQL room runs the engine in the data runtime (the Worker checks both).
            runtimes.definition(ENGINE_RUNTIME if spec.sql is not None else spec.runtime)
        except runtimes.RuntimeUnavailable as error:
            raise HTTPException(
                422, {"detail": f"spec field runtime: {error.message}", **error.to_json()}
            ) from error
        digest = digest_of(spec.function)
        if digest is None:  # WorkSpec checked the pattern; stay closed anyway
            raise HTTPException(422, f"spec field function: not a function ID: {spec.function}")
        no_function = HTTPException(404, f"no function {spec.function} (upload its bundle first)")
        with self.session() as session:
            if session.get(StoredFunction, digest) is None or not self._function_visible(
                session, caller, digest
            ):
                raise no_function
            taken = {
                "detail": f"project {caller.project!r} has a clean room named {spec.name!r}",
                "room": spec.name,
            }
            # Names live per project: another project's room of this name is invisible.
            live = select(Room.id).where(
                Room.project_id == caller.project_id,
                Room.name == spec.name,
                Room.state != "deleted",
            )
            if session.scalar(live) is not None:
                raise HTTPException(409, taken)
            server = self._schedule(session)
            # Again under the lock: a garbage collection may have deleted the bundle
            # since; from here on it cannot (storage.collect_garbage).
            bundle = select(StoredFunction.digest).where(StoredFunction.digest == digest)
            if session.scalar(bundle.with_for_update(read=True)) is None:
                raise no_function
            room = Room(
                name=spec.name,
                project_id=caller.project_id,
                deployer=caller.client_id,
                spec=spec.canonical().decode("utf-8"),
                work_id=spec.work_id,
                function_digest=digest,
                state="deploying",
                compute_server_id=server.id,
                compute_url=server.url,
                members=[RoomMember(user_id=member) for member in sorted(_members(spec))],
            )
            session.add(room)
            try:
                session.commit()
            except IntegrityError as error:  # another deploy of that name won the race
                session.rollback()
                raise HTTPException(409, taken) from error
            room_id, url, server_name = room.id, server.url, server.name
        reason = self._put_room(url, caller.project, spec)
        outcome = "failed" if reason else "deployed"
        with self.session() as session:
            changed = servers.rows_changed(
                session,
                update(Room)
                .where(Room.id == room_id, Room.state == "deploying")
                .values(state=outcome, reason=reason),
            )
            stored = session.get_one(Room, room_id, populate_existing=True)
            if changed == 1:
                details: dict[str, Any] = {
                    "project": caller.project,
                    "work_id": spec.work_id,
                    "compute_server": server_name,
                }
                if reason:
                    details["reason"] = reason
                audit.record(session, caller.client_id, f"room.{outcome}", spec.name, **details)
            session.commit()
            answer = room_document(stored)
        if stored.state != "deployed":
            if answer["reason"] is None:
                answer["reason"] = f"the room was {stored.state} while it was being deployed"
            _log.warning("deploying %s on %s failed: %s", spec.name, url, answer["reason"])
            return 502, answer
        return 201, answer

    def _put_room(self, url: str, project: str, spec: WorkSpec) -> str | None:
        """Deploy on the Controller at ``url``; the reason it failed, or None."""
        try:
            response = httpx.put(
                f"{url}/v1/rooms/{spec.name}",
                json={"spec": spec.document()},
                headers=self.grants.operation_headers(url, project, spec.name, SCOPE_DEPLOY),
                timeout=self.settings.controller_timeout,
            )
        except httpx.HTTPError as error:
            why = servers.one_line(str(error)) or type(error).__name__
            return f"cannot reach the compute server at {url}: {why}"
        if not response.is_success:
            return (
                f"the compute server at {url} answered {response.status_code}: "
                f"{servers.answer_detail(response)}"
            )
        return None

    def delete(self, caller: Caller, name: str, project: str | None = None) -> dict[str, Any]:
        """Delete a room: tell its Controller, then mark it ``deleted`` (deployer's project).

        A live room becomes ``deleted`` only once its Controller confirms (2xx, or
        404: it does not have it); otherwise 502 and nothing changes, because its
        Worker may still be running. A ``failed`` or ``lost`` room is deleted even
        when its Controller cannot be told (it may be gone for good): its Worker,
        if any, no longer holds anything anyone can use through the manager.
        """
        with self.session() as session:
            room = find_room(session, caller, name, project)
            if room.project_id != caller.project_id:
                raise HTTPException(
                    403,
                    f"only project {room.project.name!r}, which deployed it, may delete {name!r}",
                )
            if room.state == "deleted":
                return room_document(room)
            # The stored name, not the path's: a room the caller sees, exactly as deployed.
            room_id, url, owner, before = room.id, room.compute_url, room.project.name, room.state
            name = room.name
        live = before in LIVE_ROOM_STATES
        refused: str | None = None
        try:
            response = httpx.delete(
                f"{url}/v1/rooms/{name}",
                headers=self.grants.operation_headers(url, owner, name, SCOPE_DELETE),
                timeout=self.settings.controller_timeout,
            )
        except httpx.HTTPError as error:
            why = servers.one_line(str(error)) or type(error).__name__
            refused = f"cannot reach the compute server at {url} to delete {name!r}: {why}"
        else:
            if not (response.is_success or response.status_code == 404):
                refused = (
                    f"the compute server at {url} refused to delete {name!r} "
                    f"({response.status_code}: {servers.answer_detail(response)})"
                )
        if refused is not None and live:
            raise HTTPException(502, {"detail": f"{refused}; the room is unchanged", "room": name})
        with self.session() as session:
            stored = session.get_one(Room, room_id)
            stored.state = "deleted"
            session.flush()
            audit.record(
                session,
                caller.client_id,
                "room.deleted",
                name,
                project=owner,
                before=before,
                controller=refused or "confirmed",
            )
            session.commit()
            return room_document(stored)

    # -- housekeeping: health checks and garbage collection ------------------------------

    def collect_garbage(self, *, dry_run: bool = False) -> Garbage:
        """Delete the bundles no live room uses, past the grace period (``storage``)."""
        with self.session() as session:
            return collect_garbage(
                session,
                self.store,
                grace=self.settings.function_grace,
                actor=MANAGER_SUBJECT,
                dry_run=dry_run,
            )

    def start_housekeeping(self) -> list[servers.Periodic]:
        """Start the periodic health checks and garbage collection (app lifespan)."""
        tasks = [
            servers.Periodic(
                "compute server health checks", self.settings.health_interval, self.health.check_all
            )
        ]
        if self.settings.gc_interval > 0:
            tasks.append(
                servers.Periodic(
                    "function garbage collection", self.settings.gc_interval, self.collect_garbage
                )
            )
        return [task.start() for task in tasks]

    # -- projects: what their owners manage ---------------------------------------------

    @contextmanager
    def owned(self, caller: Caller, project: str) -> Iterator[tuple[Session, Project]]:
        """A session and ``project`` if the caller is one of its owners; commits at the end.

        Another project is ``404`` as if it did not exist, a member who is not an
        owner ``403`` (``projects.owned_project``).
        """
        with self.session() as session:
            yield session, projects.owned_project(session, caller.client_id, project)
            session.commit()


def _current_caller(request: Request) -> Caller:
    manager: _Manager = request.app.state.manager
    return manager.caller(request)


def _current_server(request: Request) -> ServerCaller:
    manager: _Manager = request.app.state.manager
    return manager.server(request)


# Module level, not inside create_app: FastAPI resolves these (string) annotations here.
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


def create_app(settings: Settings) -> FastAPI:
    """The management server's FastAPI app; state in ``settings.data_dir`` and its database."""
    manager = _Manager(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        housekeeping = manager.start_housekeeping()
        try:
            yield
        finally:
            for task in housekeeping:
                await run_in_threadpool(task.stop)
            manager.health.close()

    app = FastAPI(
        title="cleanroom management server",
        summary="Tokens, function storage and the clean room registry (docs/api.md)",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.manager = manager
    install_problem_handlers(app)
    # Every body but the function upload's (which streams, with its own limit).
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_json_bytes, exempt=[("POST", "/v1/functions")]
    )
    limits = _TokenEndpointLimits(settings)

    @app.post("/oauth/token", **TOKEN_ENDPOINT)
    async def token(request: Request) -> Response:
        wait = limits.address(request)
        if wait is not None:
            return _slow_down(wait)
        form = await request.form()
        try:
            credentials = client_credentials(request.headers.get("authorization"), form)
        except ClientAuthError as error:
            wait = limits.client(form.get("client_id"))
            return _slow_down(wait) if wait is not None else _oauth_error(error.status, error.error)
        wait = limits.client(credentials.client_id if credentials else None)
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
            granted = await run_in_threadpool(manager.grants.grant, asked)
        except GrantRefused as refused:
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            if refused.status == 401:
                headers["WWW-Authenticate"] = BASIC_CHALLENGE
            return JSONResponse(refused.body(), status_code=refused.status, headers=headers)
        return JSONResponse(
            {
                "access_token": granted.access_token,
                "token_type": granted.token_type,
                "expires_in": granted.expires_in,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    @app.post("/oauth/revoke", **REVOKE_ENDPOINT)
    async def revoke_token(request: Request) -> Response:
        """RFC 7009: revoke a token, authenticated by client credentials or by the token."""
        wait = limits.address(request)
        if wait is not None:
            return _revoke_refused(429, "slow_down", _SLOW_DOWN, retry=wait)
        form = await request.form()
        token = form.get("token")
        if not isinstance(token, str) or not token:
            return _revoke_refused(400, "invalid_request", "the form field 'token' is missing")
        try:
            given = client_credentials(request.headers.get("authorization"), form)
        except ClientAuthError as error:
            return _revoke_refused(
                error.status, error.error, error.description, challenge=error.challenge
            )
        credentials: tuple[str, str] | None = None
        if given is not None:
            wait = limits.client(given.client_id)
            if wait is not None:
                return _revoke_refused(429, "slow_down", _SLOW_DOWN, retry=wait)
            credentials = (given.client_id, given.secret)
        outcome = await run_in_threadpool(
            revoke,
            manager.sessions,
            manager.verifier,
            token,
            credentials,
            leeway=settings.token_leeway,
        )
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

    @app.get("/v1/revocations")
    def revocations(_server: CurrentServer) -> Response:
        """What Controllers must refuse: revoked jtis, disabled and rotated clients (by
        digest); for registered compute servers only."""
        with manager.session() as session:
            listed = revocation_list(
                session, int(time.time()), settings.token_lifetime, settings.token_leeway
            )
        return JSONResponse(listed.to_json(), headers={"Cache-Control": "no-store"})

    @app.get(
        "/.well-known/jwks.json",
        responses={200: {"content": {JWK_SET: {}}, "description": "The token signing keys"}},
    )
    def jwks() -> Response:
        # max-age + the Controllers' refetch interval (30 + 30 s) is what a rotated key's
        # pre-publication covers (cleanroom.manager.keys, DEFAULT_ACTIVATE_AFTER).
        return JSONResponse(
            manager.issuer.jwks(), media_type=JWK_SET, headers={"Cache-Control": "max-age=30"}
        )

    @app.get("/v1/whoami")
    def whoami(caller: CurrentCaller) -> dict[str, Any]:
        return {
            "client_id": caller.client_id,
            "project": caller.project,
            "user_id": caller.user_id,
            "member": caller.member,
            "role": caller.role,
        }

    @app.put("/v1/whoami/user-key")
    def register_user_key(caller: CurrentCaller, body: KeyRegistration) -> dict[str, Any]:
        return {"user_id": manager.register_key(caller, body)}

    @app.post("/v1/functions")
    async def upload_function(request: Request, caller: CurrentCaller) -> Response:
        limit = settings.max_function_bytes

        def too_large(actual: str) -> HTTPException:
            return HTTPException(
                413,
                {
                    "detail": f"the function bundle is larger than the manager's limit of "
                    f"{limit} bytes",
                    "check": "function-size",
                    "expected": f"at most {limit} bytes",
                    "actual": actual,
                    "hint": "the operator sets the limit: cleanroom server manager "
                    "--max-function-bytes",
                },
            )

        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(f"{int(declared)} bytes (Content-Length)")
        try:
            received = await manager.store.receive(request.stream())
        except FunctionTooLarge as error:
            raise too_large(f"more than {limit} bytes (the upload was stopped there)") from error
        except ClientDisconnect as error:
            raise HTTPException(400, "the upload ended before its end") from error
        try:
            created, size = await run_in_threadpool(manager.finish_upload, caller, received)
        except BundleError as error:
            raise HTTPException(
                422, {"detail": f"the bundle is refused: {error.message}", **_facts(error)}
            ) from error
        return JSONResponse(
            {"function_id": received.function_id, "size": size}, status_code=201 if created else 200
        )

    @app.get("/v1/functions/{digest}")
    def download_function(digest: str, request: Request) -> Response:
        # Streamed from the open file, never read whole (storage.VerifiedBundle).
        bundle = manager.download(request, digest)
        return StreamingResponse(
            bundle.chunks(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(bundle.size)},
        )

    @app.post("/v1/rooms")
    def deploy(caller: CurrentCaller, body: DeployRequest) -> Response:
        status, room = manager.deploy(caller, body.spec)
        if status != 201:
            return problem(status, str(room["reason"]), room=room["name"], state=room["state"])
        return JSONResponse(room, status_code=201)

    @app.get("/v1/rooms")
    def rooms(caller: CurrentCaller) -> dict[str, Any]:
        return {"rooms": manager.rooms(caller)}

    @app.get("/v1/rooms/{name}")
    def room(name: RoomName, caller: CurrentCaller, project: RoomProject = None) -> dict[str, Any]:
        return manager.room(caller, name, project)

    @app.delete("/v1/rooms/{name}")
    def delete(
        name: RoomName, caller: CurrentCaller, project: RoomProject = None
    ) -> dict[str, Any]:
        return manager.delete(caller, name, project)

    # Owners manage their project's members and clients (docs/api.md, "Projects").
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}

    @app.get("/v1/projects/{project}/members")
    def project_members(project: ProjectName, caller: CurrentCaller) -> dict[str, Any]:
        with manager.owned(caller, project) as (session, owned):
            members = projects.list_members(session, owned)
            return {"members": [projects.member_document(session, m) for m in members]}

    @app.put("/v1/projects/{project}/members/{name}")
    def put_member(
        project: ProjectName, name: str, caller: CurrentCaller, body: RoleRequest
    ) -> Response:
        with manager.owned(caller, project) as (session, owned):
            member, added = projects.put_member(session, caller.client_id, owned, name, body.role)
            document = projects.member_document(session, member)
        return JSONResponse(document, status_code=201 if added else 200)

    @app.delete("/v1/projects/{project}/members/{name}")
    def remove_member(project: ProjectName, name: str, caller: CurrentCaller) -> dict[str, Any]:
        with manager.owned(caller, project) as (session, owned):
            disabled = projects.remove_member(session, caller.client_id, owned, name)
        return {"name": name, "project": project, "clients_disabled": disabled}

    @app.post("/v1/projects/{project}/clients")
    def create_client(
        project: ProjectName, caller: CurrentCaller, body: NewClientRequest
    ) -> Response:
        with manager.owned(caller, project) as (session, owned):
            created = projects.create_client(
                session, caller.client_id, owned, body.member, body.name
            )
        return JSONResponse(
            projects.new_client_document(created), status_code=201, headers=no_store
        )

    @app.post("/v1/projects/{project}/clients/{client_id}/disable")
    def disable_client(
        project: ProjectName, client_id: ClientId, caller: CurrentCaller
    ) -> dict[str, Any]:
        with manager.owned(caller, project) as (session, owned):
            client = projects.find_client(session, client_id, owned)
            projects.disable_client(session, caller.client_id, client)
            return projects.client_document(client)

    @app.post("/v1/projects/{project}/clients/{client_id}/enable")
    def enable_client(
        project: ProjectName, client_id: ClientId, caller: CurrentCaller
    ) -> dict[str, Any]:
        with manager.owned(caller, project) as (session, owned):
            client = projects.find_client(session, client_id, owned)
            projects.enable_client(session, caller.client_id, client)
            return projects.client_document(client)

    @app.post("/v1/projects/{project}/clients/{client_id}/rotate")
    def rotate_client(project: ProjectName, client_id: ClientId, caller: CurrentCaller) -> Response:
        with manager.owned(caller, project) as (session, owned):
            client = projects.find_client(session, client_id, owned)
            rotated = projects.rotate_client(session, caller.client_id, client)
        return JSONResponse(projects.new_client_document(rotated), headers=no_store)

    return app


def _facts(error: CheckFailed) -> dict[str, object]:
    facts = error.to_json()
    facts.pop("message", None)
    return facts
