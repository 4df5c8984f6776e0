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
- a function bundle also: every project that uploaded it, and the manager's own
  ``deploy``-scope token while a room using it is deploying or deployed (the
  Controller fetches the bundle with that token);
- deleting a room: only the deployer's project.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect

from cleanroom.errors import CheckFailed
from cleanroom.manager.credentials import authenticate
from cleanroom.manager.database import (
    LIVE_ROOM_STATES,
    Client,
    ComputeServer,
    FunctionUploader,
    Room,
    RoomMember,
    StoredFunction,
    open_database,
)
from cleanroom.manager.settings import Settings
from cleanroom.manager.storage import FunctionStore, FunctionTooLarge, Received, digest_of
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX, BundleError
from cleanroom.protocol.encoding import canonical, from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.keys import load_spki, user_id, verify
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tokens import (
    SCOPE_DEPLOY,
    SCOPE_USER,
    TokenClaims,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)
from cleanroom.web import install_problem_handlers, problem

KEY_REGISTRATION_TYPE = "cleanroom/key-registration/v1"
MANAGER_SUBJECT = "cleanroom-manager"
"""The ``sub`` of the tokens the manager mints for itself (scope ``deploy``)."""

_log = logging.getLogger("cleanroom.manager")


@dataclass(frozen=True)
class Caller:
    """A client that presented a valid ``user``-scope token and is enabled."""

    client_id: str
    project_id: int
    project: str
    user_id: str | None


class KeyRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_key: str
    signature: str


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: dict[str, Any]


def _oauth_error(status: int, error: str) -> JSONResponse:
    """An RFC 6749 §5.2 error: deliberately nothing but the error code."""
    return JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _answer_detail(response: httpx.Response) -> str:
    """What a Controller said when it refused: its problem's detail, or its body."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return _one_line(body["detail"])
    return _one_line(response.text)


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
        self.issuer = TokenIssuer.load(
            settings.data_dir, settings.public_url, lifetime=settings.token_lifetime
        )
        self.verifier = TokenVerifier(self.issuer.issuer, keys=self.issuer.jwks())

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    # -- tokens -------------------------------------------------------------------------

    def token(self, client_id: str, secret: str) -> tuple[str, int] | None:
        with self.session() as session:
            client = authenticate(session, client_id, secret)
            if client is None:
                return None
            return self.issuer.issue(client.id, client.project.name, SCOPE_USER)

    def claims_of(self, authorization: str | None, scope: str | None) -> TokenClaims:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "missing bearer token (get one from POST /oauth/token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            return self.verifier.verify(token.strip(), scope=scope)
        except TokenError as error:
            facts = error.to_json()
            detail = str(facts.pop("message"))
            raise HTTPException(
                error.http_status,
                {"detail": detail, **facts},
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from error

    def caller(self, authorization: str | None) -> Caller:
        claims = self.claims_of(authorization, SCOPE_USER)
        with self.session() as session:
            client = session.get(Client, claims.sub)
            if client is None or client.disabled or client.project.name != claims.project:
                raise HTTPException(
                    401,
                    "the token's client is unknown or disabled",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            return Caller(client.id, client.project_id, client.project.name, client.user_id)

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
        """Check, store and record an upload; (created, size)."""
        try:
            self.store.check_unpacks(received)
        except BundleError:
            self.store.discard(received)
            raise
        with self.session() as session:
            created = self.store.commit(received)
            if session.get(StoredFunction, received.digest) is None:
                session.add(StoredFunction(digest=received.digest, size=received.size))
                session.flush()
            uploaded = session.scalar(
                select(FunctionUploader).where(
                    FunctionUploader.digest == received.digest,
                    FunctionUploader.project_id == caller.project_id,
                )
            )
            if uploaded is None:
                session.add(FunctionUploader(digest=received.digest, project_id=caller.project_id))
            try:
                session.commit()
            except IntegrityError:  # the same bundle uploaded at the same moment: fine
                session.rollback()
        return created, received.size

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
            session.scalar(self._visible_rooms(caller).where(Room.function_digest == digest))
            is not None
        )

    def download(self, authorization: str | None, digest: str) -> bytes:
        not_found = HTTPException(404, f"no function {FUNCTION_ID_PREFIX}{digest}")
        claims = self.claims_of(authorization, None)
        if not digest_of(FUNCTION_ID_PREFIX + digest):
            raise not_found
        with self.session() as session:
            if session.get(StoredFunction, digest) is None:
                raise not_found
            if SCOPE_DEPLOY in claims.scope.split():
                deploying = session.scalar(
                    select(Room.id).where(
                        Room.function_digest == digest, Room.state.in_(LIVE_ROOM_STATES)
                    )
                )
                if deploying is None:
                    raise not_found
            else:
                caller = self.caller(authorization)
                if not self._function_visible(session, caller, digest):
                    raise not_found
        return self.store.read(digest)  # StoredFunctionCorrupt -> 500 problem

    # -- rooms --------------------------------------------------------------------------

    @staticmethod
    def _visible_rooms(caller: Caller) -> Select[Room]:
        condition = Room.project_id == caller.project_id
        if caller.user_id is not None:
            condition = or_(
                condition,
                Room.id.in_(select(RoomMember.room_id).where(RoomMember.user_id == caller.user_id)),
            )
        return select(Room).where(condition)

    def _find(self, session: Session, caller: Caller, name: str) -> Room:
        """The room ``name`` the caller may see: the live one, else the latest deleted."""
        query = self._visible_rooms(caller).where(Room.name == name)
        rooms = list(session.scalars(query))
        rooms.sort(key=lambda room: (room.state != "deleted", room.created, room.id), reverse=True)
        if not rooms:
            raise HTTPException(404, f"no clean room named {name!r}")
        return rooms[0]

    def rooms(self, caller: Caller) -> list[dict[str, Any]]:
        with self.session() as session:
            query = self._visible_rooms(caller).order_by(Room.created, Room.id)
            return [room_document(room) for room in session.scalars(query)]

    def room(self, caller: Caller, name: str) -> dict[str, Any]:
        with self.session() as session:
            return room_document(self._find(session, caller, name))

    def _schedule(self, session: Session) -> ComputeServer:
        """The registered compute server with the fewest live rooms (oldest on a tie)."""
        servers = list(session.scalars(select(ComputeServer).order_by(ComputeServer.id)))
        if not servers:
            raise HTTPException(
                503,
                "no compute server is registered "
                "(the operator adds one with `cleanroom admin server add URL`)",
            )
        live = list(
            session.scalars(select(Room.compute_server_id).where(Room.state.in_(LIVE_ROOM_STATES)))
        )
        return min(servers, key=lambda server: (live.count(server.id), server.id))

    def _deploy_headers(self, project: str) -> dict[str, str]:
        token, _ = self.issuer.issue(MANAGER_SUBJECT, project, SCOPE_DEPLOY)
        return {"Authorization": f"Bearer {token}"}

    def deploy(self, caller: Caller, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            spec = WorkSpec.parse(document)
        except MessageFormatError as error:
            where = error.actual
            raise HTTPException(
                422,
                {"detail": f"spec field {where}: {error.message}", **error.to_json()},
            ) from error
        digest = digest_of(spec.function)
        if digest is None:  # WorkSpec checked the pattern; stay closed anyway
            raise HTTPException(422, f"spec field function: not a function ID: {spec.function}")
        with self.session() as session:
            if session.get(StoredFunction, digest) is None or not self._function_visible(
                session, caller, digest
            ):
                raise HTTPException(
                    404,
                    f"no function {spec.function} (upload its bundle first)",
                )
            taken = {"detail": f"a clean room named {spec.name!r} exists", "room": spec.name}
            live = select(Room.id).where(Room.name == spec.name, Room.state != "deleted")
            if session.scalar(live) is not None:
                raise HTTPException(409, taken)
            server = self._schedule(session)
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
            room_id, url = room.id, server.url
        reason = self._put_room(url, caller.project, spec)
        with self.session() as session:
            stored = session.get_one(Room, room_id)
            stored.state = "failed" if reason else "deployed"
            stored.reason = reason
            session.commit()
            answer = room_document(stored)
        if reason:
            _log.warning("deploying %s on %s failed: %s", spec.name, url, reason)
            return 502, answer
        return 201, answer

    def _put_room(self, url: str, project: str, spec: WorkSpec) -> str | None:
        """Deploy on the Controller at ``url``; the reason it failed, or None."""
        try:
            response = httpx.put(
                f"{url}/v1/rooms/{spec.name}",
                json={"spec": spec.document()},
                headers=self._deploy_headers(project),
                timeout=self.settings.controller_timeout,
            )
        except httpx.HTTPError as error:
            why = _one_line(str(error)) or type(error).__name__
            return f"cannot reach the compute server at {url}: {why}"
        if not response.is_success:
            return (
                f"the compute server at {url} answered {response.status_code}: "
                f"{_answer_detail(response)}"
            )
        return None

    def delete(self, caller: Caller, name: str) -> dict[str, Any]:
        with self.session() as session:
            room = self._find(session, caller, name)
            if room.project_id != caller.project_id:
                raise HTTPException(
                    403,
                    f"only project {room.project.name!r}, which deployed it, may delete {name!r}",
                )
            if room.state == "deleted":
                return room_document(room)
            room_id, url, project = room.id, room.compute_url, room.project.name
        try:
            response = httpx.delete(
                f"{url}/v1/rooms/{name}",
                headers=self._deploy_headers(project),
                timeout=self.settings.controller_timeout,
            )
        except httpx.HTTPError as error:
            raise HTTPException(
                502,
                {
                    "detail": f"cannot reach the compute server at {url} to delete {name!r}: "
                    f"{_one_line(str(error)) or type(error).__name__}; the room is unchanged",
                    "room": name,
                },
            ) from error
        if not (response.is_success or response.status_code == 404):
            raise HTTPException(
                502,
                {
                    "detail": f"the compute server at {url} refused to delete {name!r} "
                    f"({response.status_code}: {_answer_detail(response)}); the room is unchanged",
                    "room": name,
                },
            )
        with self.session() as session:
            stored = session.get_one(Room, room_id)
            stored.state = "deleted"
            session.commit()
            return room_document(stored)


Authorization = Annotated[str | None, Header()]


def _current_caller(request: Request, authorization: Authorization = None) -> Caller:
    manager: _Manager = request.app.state.manager
    return manager.caller(authorization)


# Module level, not inside create_app: FastAPI resolves these (string) annotations here.
CurrentCaller = Annotated[Caller, Depends(_current_caller)]


def create_app(settings: Settings) -> FastAPI:
    """The management server's FastAPI app; state in ``settings.data_dir`` and its database."""
    manager = _Manager(settings)
    app = FastAPI(
        title="cleanroom management server",
        summary="Tokens, function storage and the clean room registry (docs/api.md)",
        docs_url=None,
        redoc_url=None,
    )
    app.state.manager = manager
    install_problem_handlers(app)

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        form = await request.form()
        grant_type = form.get("grant_type")
        if not isinstance(grant_type, str) or not grant_type:
            return _oauth_error(400, "invalid_request")
        if grant_type != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(secret, str):
            return _oauth_error(401, "invalid_client")
        issued = await run_in_threadpool(manager.token, client_id, secret)
        if issued is None:
            return _oauth_error(401, "invalid_client")
        access_token, expires_in = issued
        return JSONResponse(
            {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        return JSONResponse(manager.issuer.jwks(), headers={"Cache-Control": "max-age=300"})

    @app.get("/v1/whoami")
    def whoami(caller: CurrentCaller) -> dict[str, Any]:
        return {"client_id": caller.client_id, "project": caller.project, "user_id": caller.user_id}

    @app.put("/v1/whoami/user-key")
    def register_user_key(caller: CurrentCaller, body: KeyRegistration) -> dict[str, Any]:
        return {"user_id": manager.register_key(caller, body)}

    @app.post("/v1/functions")
    async def upload_function(request: Request, caller: CurrentCaller) -> Response:
        limit = settings.max_function_bytes
        too_large = HTTPException(
            413, f"the function bundle is larger than the manager's limit of {limit} bytes"
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        try:
            received = await manager.store.receive(request.stream())
        except FunctionTooLarge as error:
            raise too_large from error
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
    def download_function(digest: str, authorization: Authorization = None) -> Response:
        bundle = manager.download(authorization, digest)
        return Response(bundle, media_type="application/octet-stream")

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
    def room(name: str, caller: CurrentCaller) -> dict[str, Any]:
        return manager.room(caller, name)

    @app.delete("/v1/rooms/{name}")
    def delete(name: str, caller: CurrentCaller) -> dict[str, Any]:
        return manager.delete(caller, name)

    return app


def _facts(error: CheckFailed) -> dict[str, object]:
    facts = error.to_json()
    facts.pop("message", None)
    return facts
