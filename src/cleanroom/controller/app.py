"""The Controller: the untrusted HTTP face of a compute server.

It starts the Attester and one Worker per clean room (:mod:`.enclaves`), and relays
every client message to them byte for byte: attestation requests and evidence,
handshakes, record streams, run requests, receipts. It checks the access tokens
of the management server it is registered with (defence in depth), but security
never depends on it: whatever it relays is bound cryptographically
(docs/protocol.md), so a Controller that tampers, replays, reorders, truncates or
swaps is caught by the client or by the enclave. It holds no key and sees no
plaintext.

Every route but ``/v1/health`` is about one room, and every token it accepts is
for exactly that room on exactly this server (:class:`RoomAccess`): ``aud`` is
this server's registered URL, ``room`` the room in the path, and ``project`` the
room's project, which is how rooms are told apart here (names live per project:
another project's token never finds a room). A user's token comes with its DPoP
proof; the manager's tokens to deploy, delete or ask about a room are good for
that one operation, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from cleanroom.attestation.pccs import CollateralCache, PccsClient
from cleanroom.controller.ceiling import ResourceCeiling
from cleanroom.controller.collateral import add_collateral
from cleanroom.controller.enclaves import EnclaveHost, EnclaveProcess, EnclaveProcessError, Launcher
from cleanroom.controller.manager_link import ComputeCredentials, ManagerLink
from cleanroom.controller.relay import Answer, EnclaveUnreachable
from cleanroom.dpop import ProofVerifier, ReplayCache
from cleanroom.errors import CheckFailed
from cleanroom.http_auth import RequestAuthenticator, challenge
from cleanroom.limits import BodySizeLimit
from cleanroom.protocol.allocator import tune_allocator
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tls import tls_context
from cleanroom.tokens import (
    DEFAULT_LEEWAY,
    JWKS_REFETCH_INTERVAL,
    MANAGER_SUBJECT,
    OPERATION_SCOPES,
    REVOCATION_MAX_AGE,
    REVOCATION_REFRESH,
    SCOPE_DELETE,
    SCOPE_DEPLOY,
    SCOPE_STATUS,
    SCOPE_USER,
    RevocationFeed,
    TokenClaims,
    TokenError,
    TokenVerifier,
)
from cleanroom.web import Refused, error_problem, install_problem_handlers, problem

FRAMES = "application/vnd.cleanroom.frames"
MAX_JSON_BODY = 1 << 20
MAX_BUNDLE = 1 << 30
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
"""A room's (and a project's) name; always matched whole (``fullmatch``)."""
SESSION = re.compile(r"[A-Za-z0-9_-]{22}")
DIGEST = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class ControllerSettings:
    """How one Controller runs.

    ``public_url`` is the URL this server was registered at and clients reach it
    at: the audience every token for it names, and the start of every DPoP
    proof's ``htu``. ``credentials`` are its own towards the manager.

    Tokens: the revocation list is refetched from the manager every
    ``revocation_refresh`` seconds and every token is refused once it could not be
    for ``revocation_max_age`` (docs/api.md, "Tokens"); an unknown ``kid``
    refetches the JWKS at most every ``jwks_refetch_interval`` seconds.
    """

    data_dir: Path
    manager_url: str
    public_url: str
    credentials: ComputeCredentials
    tee: str = "simulated"
    ceiling: ResourceCeiling = field(default_factory=ResourceCeiling.of_host)
    revocation_refresh: float = REVOCATION_REFRESH
    revocation_max_age: float = REVOCATION_MAX_AGE
    jwks_refetch_interval: float = JWKS_REFETCH_INTERVAL
    # Where collateral for the Attester's quotes comes from (PCCS API v4): ``None``
    # serves the Attester's own (the simulated platform's). ``pccs_verify`` is the
    # PCCS's TLS verification (a CA bundle path, or True for the system's CAs).
    pccs_url: str | None = None
    pccs_verify: bool | str = True
    # How enclave processes are started: None runs them as children (the simulated
    # TEE); a Gramine launcher starts SGX enclaves (cleanroom.controller.launchers).
    launcher: Launcher | None = None


def token_verifier(settings: ControllerSettings, link: ManagerLink) -> TokenVerifier:
    """How a Controller checks tokens: the manager's JWKS and its revocation list
    (fetched with this server's own token), for this server's audience."""
    manager_url = settings.manager_url.rstrip("/")
    return TokenVerifier(
        manager_url,
        settings.public_url,
        jwks_url=f"{manager_url}/.well-known/jwks.json",
        jwks_refetch_interval=settings.jwks_refetch_interval,
        revocations=RevocationFeed(
            f"{manager_url}/v1/revocations",
            headers=link.headers,
            refresh=settings.revocation_refresh,
            max_age=settings.revocation_max_age,
        ),
    )


def _relay(response: Answer) -> Response:
    """An enclave's answer, passed on unchanged (clients never trust it anyway)."""
    return Response(response.content, status_code=response.status, media_type=response.content_type)


@dataclass(frozen=True)
class RoomKey:
    """Which room a request is for: its project (from the token) and its name."""

    project: str
    name: str

    @property
    def key(self) -> str:
        """The room's key on this server (its directory, its Worker): ``project.name``
        (``.`` is in neither name, so no two rooms share a key)."""
        return f"{self.project}.{self.name}"


def _token_refusal(error: TokenError, request: Request) -> Refused:
    scheme = (request.headers.get("authorization") or "").strip().partition(" ")[0].lower()
    value = challenge(error, scheme)
    # One shape with every other refusal (web.error_problem): the message is the detail,
    # the check's facts beside it (the whole line as detail was shown twice by clients).
    facts = error.to_json()
    return Refused(
        error.http_status,
        str(facts.pop("message", error.message)),
        headers={"WWW-Authenticate": value} if value else None,
        **facts,
    )


class RoomAccess:
    """A FastAPI dependency: the request's token, checked to be for this room, here.

    It must be a token for this server (``token-audience``) with one of ``scopes``
    (``token-scope``), naming the room in the path (``token-room``) and a project;
    a user's with its DPoP proof (``dpop-proof``); the manager's for one operation
    (deploy, delete, status) only from the manager, and only once
    (``token-replayed``). Checked before anything is read, created or deleted.
    """

    def __init__(self, *scopes: str) -> None:
        self.scopes = scopes

    async def __call__(self, request: Request, name: str) -> RoomKey:
        authenticator: RequestAuthenticator = request.app.state.authenticator
        used: ReplayCache = request.app.state.used_tokens
        try:
            claims = await run_in_threadpool(authenticator.authenticate, request)
            return self._check(claims, name, used)
        except TokenError as error:
            raise _token_refusal(error, request) from error

    def _check(self, claims: TokenClaims, name: str, used: ReplayCache) -> RoomKey:
        granted = [scope for scope in self.scopes if scope in claims.scopes]
        if not granted:
            raise TokenError(
                "token-scope",
                " or ".join(self.scopes),
                claims.scope,
                "the token is not for this operation",
            )
        if claims.room is None or claims.project is None:
            raise TokenError(
                "token-room",
                f"a token for room {name[:63]!r}",
                "a token for no room",
                "a token at a compute server is for one room",
            )
        if claims.room != name:
            raise TokenError(
                "token-room",
                name[:63],
                claims.room,
                "the token is for another clean room",
            )
        if not NAME.fullmatch(claims.project) or not NAME.fullmatch(name):
            raise TokenError("token-room", "a room and project name", claims.project, "bad names")
        operations = [scope for scope in claims.scopes if scope in OPERATION_SCOPES]
        if operations:
            if claims.sub != MANAGER_SUBJECT:
                raise TokenError(
                    "token-scope",
                    f"a {operations[0]} token of the manager",
                    claims.sub,
                    "only the manager deploys, deletes and asks about rooms",
                )
            if not used.first_use("token:" + claims.jti, claims.exp + DEFAULT_LEEWAY):
                raise TokenError(
                    "token-replayed",
                    "a token for one operation, not used before",
                    claims.jti,
                    "the token was used already",
                )
        return RoomKey(claims.project, name)


User = Annotated[RoomKey, Depends(RoomAccess(SCOPE_USER))]
UserOrManager = Annotated[RoomKey, Depends(RoomAccess(SCOPE_USER, SCOPE_STATUS))]
Deployer = Annotated[RoomKey, Depends(RoomAccess(SCOPE_DEPLOY))]
Deleter = Annotated[RoomKey, Depends(RoomAccess(SCOPE_DELETE))]


def create_app(
    settings: ControllerSettings,
    *,
    verifier: TokenVerifier | None = None,
    manager_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    manager_url = settings.manager_url.rstrip("/")
    tune_allocator()  # it relays records of 1 MiB
    link = ManagerLink(manager_url, settings.credentials)
    tokens = verifier or token_verifier(settings, link)
    host = (
        EnclaveHost(settings.data_dir)
        if settings.launcher is None
        else EnclaveHost(settings.data_dir, launcher=settings.launcher)
    )
    collateral = (
        CollateralCache(PccsClient(settings.pccs_url, verify=settings.pccs_verify))
        if settings.pccs_url
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await host.start()
        try:
            yield
        finally:
            await host.close()
            if collateral is not None:
                collateral.client.close()

    # No /docs nor /redoc, as the manager: pages that load Swagger UI's and ReDoc's scripts
    # from a CDN, served to anyone who can reach the listener, for a machine-read API
    # (docs/api.md; /openapi.json stays).
    app = FastAPI(
        title="cleanroom Controller (untrusted)", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    install_problem_handlers(app)
    # Every body but a data upload's, which streams to the Worker (its own limits).
    app.add_middleware(
        BodySizeLimit,
        max_bytes=MAX_JSON_BODY,
        exempt=[("POST", r"/v1/rooms/[^/]+/sessions/[^/]+/upload")],
    )
    app.state.host = host
    app.state.tokens = tokens
    app.state.authenticator = RequestAuthenticator(tokens, ProofVerifier(), settings.public_url)
    app.state.used_tokens = ReplayCache()
    app.state.link = link

    @app.exception_handler(EnclaveProcessError)
    async def _enclave_error(_request: Request, error: Exception) -> Response:
        # Not a second mapping: this relays the problem an enclave answered with, as it
        # is; any other EnclaveProcessError is web's (its status, its one line).
        failure = cast(EnclaveProcessError, error)  # registered for it only
        if isinstance(failure.body, dict):
            return JSONResponse(
                failure.body, status_code=failure.status, media_type="application/problem+json"
            )
        return error_problem(failure)

    def no_room(room: RoomKey) -> Refused:
        return Refused(404, f"no clean room {room.name!r} on this compute server")

    def hosted(room: RoomKey) -> EnclaveProcess:
        """The Worker of ``room`` (of the token's project): 404 for any other project's."""
        try:
            return host.room(room.key).worker
        except EnclaveProcessError as error:
            if error.status == 404:
                raise no_room(room) from error
            raise

    def session(session_id: str) -> str:
        if not SESSION.fullmatch(session_id):
            raise Refused(404, "no such session")
        return session_id

    async def small_json(request: Request) -> bytes:
        body = await request.body()
        if len(body) > MAX_JSON_BODY:
            raise Refused(413, f"request body larger than {MAX_JSON_BODY} bytes")
        return body

    async def forward(room: RoomKey, method: str, path: str, body: bytes | None = None) -> Response:
        worker = hosted(room)
        try:
            response = await worker.client.request(method, path, content=body)
        except EnclaveUnreachable as error:
            return problem(502, f"the Worker of {room.name!r} did not answer: {error}")
        return _relay(response)

    # ----------------------------------------------------------------- routes

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok" if host.attester_usable else "degraded",
            "tee": settings.tee,
            "rooms": len(host.rooms),
        }

    @app.put("/v1/rooms/{name}", status_code=201)
    async def deploy(name: str, request: Request, room: Deployer) -> dict[str, Any]:
        try:
            document = json.loads(await small_json(request))
            spec = document["spec"]
            function = spec["function"]
        except (ValueError, KeyError, TypeError) as error:
            raise Refused(422, f"expected {{spec: {{function: …}}}}: {error}") from error
        if not isinstance(function, str) or not function.startswith("fs://"):
            raise Refused(422, "spec.function is not an fs:// function ID")
        # The Worker checks the spec itself; here only what this host will hand out.
        try:
            parsed = WorkSpec.parse(spec)
        except MessageFormatError as error:
            facts = error.to_json()
            raise Refused(
                422,
                error.message,
                check=facts["check"],
                expected=facts["expected"],
                actual=facts["actual"],
            ) from error
        if parsed.name != name:
            raise Refused(422, f"spec.name is not {name!r}, the room deployed")
        excess = settings.ceiling.excess(parsed.resources)
        if excess:
            resource, ceiling, asked = excess[0]
            raise Refused(
                422,
                f"resources.{resource} = {asked} is more than this compute server allows",
                check="resources",
                expected=f"{resource} <= {ceiling}",
                actual=asked,
            )
        digest = function.removeprefix("fs://")

        async def fetch(destination: Path) -> None:
            await _fetch_bundle(manager_url, digest, link, manager_transport, destination)

        # The Worker checks the spec and the bundle itself; these bytes are only relayed.
        deployed = await host.deploy(room.key, json.dumps(spec).encode(), fetch)
        return {"name": name, "worker_id": deployed.worker_id, "state": "collecting"}

    @app.get("/v1/rooms/{name}")
    async def room_state(name: str, room: UserOrManager) -> Response:
        return await forward(room, "GET", "/state")

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str, room: Deleter) -> dict[str, Any]:
        try:
            await host.delete(room.key)
        except EnclaveProcessError as error:
            if error.status == 404:
                raise no_room(room) from error
            raise
        return {"name": name, "state": "deleted"}

    @app.post("/v1/rooms/{name}/attestation")
    async def attestation(name: str, request: Request, room: User) -> Any:
        try:
            nonce = json.loads(await small_json(request))["nonce"]
        except (ValueError, KeyError, TypeError) as error:
            raise Refused(422, "expected {nonce: <b64u 32 bytes>}") from error
        if not isinstance(nonce, str):
            raise Refused(422, "nonce must be b64u text")
        hosted(room)
        try:
            answer = await host.attest_raw(room.key, nonce)
        except EnclaveUnreachable as error:
            return problem(502, f"the Attester did not answer: {error}")
        if answer.status != 200 or collateral is None:
            return _relay(answer)  # unparsed: the client checks the evidence either way
        return JSONResponse(await add_collateral(answer.json(), collateral))

    @app.post("/v1/rooms/{name}/status")
    async def signed_status(name: str, request: Request, room: User) -> Response:
        return await forward(room, "POST", "/status", await small_json(request))

    @app.post("/v1/rooms/{name}/sessions")
    async def open_session(name: str, request: Request, room: User) -> Response:
        return await forward(room, "POST", "/sessions", await small_json(request))

    @app.post("/v1/rooms/{name}/attested-sessions")
    async def attested_session(name: str, request: Request, room: User) -> Response:
        """Protocol v2: one client request fanned out to the Attester (evidence for the
        client's nonce) and the Worker (its signed answer to the init), in parallel."""
        try:
            document = json.loads(await small_json(request))
            nonce, init, signature = document["nonce"], document["init"], document["signature"]
        except (ValueError, KeyError, TypeError) as error:
            raise Refused(422, "expected {nonce, init, signature} (docs/api.md)") from error
        if not isinstance(nonce, str):
            raise Refused(422, "nonce must be b64u text")
        worker = hosted(room)
        handshake_body = json.dumps({"init": init, "signature": signature}).encode()

        async def handshake() -> Answer:
            return await worker.client.request("POST", "/sessions", content=handshake_body)

        evidence, answer = await asyncio.gather(
            host.attest_raw(room.key, nonce), handshake(), return_exceptions=True
        )
        return await merge_session(name, evidence, answer, collateral)

    @app.post("/v1/rooms/{name}/sessions/{session_id}/run")
    async def run(name: str, session_id: str, request: Request, room: User) -> Response:
        # A SQL room's query comes as a record the Worker decrypts; relayed as it is.
        body = await small_json(request)
        path = f"/sessions/{session(session_id)}/run"
        return await forward(room, "POST", path, body or None)

    @app.post("/v1/rooms/{name}/sessions/{session_id}/fate")
    async def fate(name: str, session_id: str, request: Request, room: User) -> Response:
        # A runner's question about a run session, sealed; its answer sealed too.
        path = f"/sessions/{session(session_id)}/fate"
        return await forward(room, "POST", path, await small_json(request))

    @app.get("/v1/rooms/{name}/receipt")
    async def receipt(name: str, room: User) -> Response:
        return await forward(room, "GET", "/receipt")

    @app.get("/v1/rooms/{name}/runs/{number}/receipt")
    async def run_receipt(name: str, number: int, room: User) -> Response:
        return await forward(room, "GET", f"/runs/{number}/receipt")

    @app.post("/v1/rooms/{name}/budget")
    async def budget(name: str, request: Request, room: User) -> Response:
        return await forward(room, "POST", "/budget", await small_json(request))

    @app.post("/v1/rooms/{name}/sessions/{session_id}/upload")
    async def upload(name: str, session_id: str, request: Request, room: User) -> Response:
        worker = hosted(room)
        path = f"/sessions/{session(session_id)}/upload"
        try:
            # The frames go on unparsed, in pieces of about a record: the Worker checks them.
            response = await worker.client.send_stream("POST", path, request.stream(), FRAMES)
        except EnclaveUnreachable as error:
            return problem(502, f"the Worker of {name!r} did not answer: {error}")
        return _relay(response)

    @app.post("/v1/rooms/{name}/sessions/{session_id}/download")
    async def download(name: str, session_id: str, room: User) -> Response:
        worker = hosted(room)
        path = f"/sessions/{session(session_id)}/download"
        try:
            upstream = await worker.client.open_stream("POST", path)
        except EnclaveUnreachable as error:
            return problem(502, f"the Worker of {name!r} did not answer: {error}")
        if upstream.status != 200:
            return _relay(await upstream.read())
        return StreamingResponse(
            upstream.chunks(), media_type=FRAMES, background=BackgroundTask(upstream.close)
        )

    return app


def _part(name: str, who: str, outcome: Answer | BaseException) -> tuple[int, bytes]:
    """One enclave's part of a fan-out: (status, JSON body); a transport failure is a 502."""
    if isinstance(outcome, Answer):
        return outcome.status, outcome.content
    if isinstance(outcome, EnclaveProcessError):
        status, detail = outcome.status, str(outcome)
    elif isinstance(outcome, EnclaveUnreachable):
        status, detail = 502, f"the {who} of {name!r} did not answer: {outcome}"
    else:
        raise outcome
    body = outcome.body if isinstance(outcome, EnclaveProcessError) else None
    if not isinstance(body, dict):
        body = {"type": "about:blank", "status": status, "detail": detail}
    return status, json.dumps(body).encode()


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


async def merge_session(
    name: str,
    evidence: Answer | BaseException,
    handshake: Answer | BaseException,
    collateral: CollateralCache | None,
) -> Response:
    """``{"evidence": …, "handshake": …}`` from the Attester's and the Worker's answers,
    each relayed unparsed (unless collateral from a PCCS is added to the evidence).

    If either refused, the answer is that refusal (the Worker's first) with its status,
    and the evidence beside it when the Attester answered: the client checks the
    evidence before it shows the refusal, which it never believes.
    """
    evidence_status, evidence_body = _part(name, "Attester", evidence)
    handshake_status, handshake_body = _part(name, "Worker", handshake)
    if evidence_status == 200 and collateral is not None:
        document = _json_object(evidence_body)
        if document is not None:
            evidence_body = json.dumps(await add_collateral(document, collateral)).encode()
    if evidence_status == 200 and handshake_status == 200:
        return Response(
            b'{"evidence":' + evidence_body + b',"handshake":' + handshake_body + b"}",
            media_type="application/json",
        )
    refused_handshake = handshake_status != 200
    status, refusal = (
        (handshake_status, handshake_body)
        if refused_handshake
        else (evidence_status, evidence_body)
    )
    body = _json_object(refusal) or {
        "type": "about:blank",
        "status": status,
        "detail": refusal[:300].decode(errors="replace"),
    }
    if refused_handshake and evidence_status == 200:
        body["evidence"] = _json_object(evidence_body)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def _fetch_bundle(
    manager_url: str,
    digest: str,
    link: ManagerLink,
    transport: httpx.AsyncBaseTransport | None,
    destination: Path,
) -> None:
    """The function bundle from the manager, with this server's own ``compute`` token
    (the manager gives it only the bundles of rooms scheduled here), streamed into
    ``destination`` (never held whole in memory).

    Not checked here: the Worker recomputes the function ID from these bytes.
    """
    if not DIGEST.fullmatch(digest):
        raise Refused(422, "spec.function is not an fs:// function ID")
    url = f"{manager_url}/v1/functions/{digest}"
    for attempt in (1, 2):
        try:
            headers = await run_in_threadpool(link.headers)
        except CheckFailed as error:
            raise Refused(502, f"no token from the manager: {error}") from error
        try:
            async with (
                httpx.AsyncClient(
                    transport=transport, timeout=60.0, verify=tls_context()
                ) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 401 and attempt == 1:
                    await response.aread()
                    link.forget()  # expired or rotated meanwhile: once more with a new one
                    continue
                if response.status_code != 200:
                    await response.aread()
                    raise Refused(
                        502,
                        f"the manager refused the function bundle: {response.status_code}",
                    )
                size = 0
                with destination.open("wb") as file:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_BUNDLE:
                            raise Refused(413, "function bundle too large")
                        file.write(chunk)
                return
        except httpx.TransportError as error:
            raise Refused(502, f"cannot reach the manager at {manager_url}: {error}") from error
    raise Refused(502, "the manager refused this compute server's token")
