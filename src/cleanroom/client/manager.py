"""The management server's client: tokens, the user key, functions and clean rooms,
and for a project's owners its members and clients.

A small synchronous SDK over docs/api.md ("Tokens", "Management server"). The
manager is not trusted with anything that matters, so what the client can check
itself it checks: an uploaded or downloaded bundle must hash to its function ID,
a room's Work-ID must be the one its spec hashes to, a deployed room must carry
the spec that was sent. Those refusals are :class:`UntrustedAnswerError` (a
:class:`cleanroom.errors.CheckFailed`); everything the server refuses is a
:class:`ServerError`.

Tokens are DPoP-bound (RFC 9449): the client holds a key (:class:`cleanroom.dpop.ProofKey`,
the profile's own, or a fresh one) and every request carries a proof made with it,
so a token is worthless to whoever copies it. A token is for one server
(RFC 8707): :meth:`ManagerClient.fetch_token` without ``resource`` gets this
client's token for the manager; with a compute server's URL and a room, a token
for that room on that server (which the client hands to
:class:`cleanroom.client.compute.ComputeClient`).

Example::

    with ManagerClient("https://manager.example") as manager:
        manager.fetch_token(client_id, client_secret)
        upload = manager.upload_function(bundle)
        room = manager.deploy(spec)
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.answers import IDENTITY_ONLY, MAX_TOKEN_LIFETIME_S, Connections, Deadline
from cleanroom.cleartext import check_secret_transport
from cleanroom.client import bounded
from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.renewal import renew_for_retry
from cleanroom.client.tls import tls_context
from cleanroom.dpop import DPoPAuth, ProofKey
from cleanroom.protocol.bundle import FUNCTION_ID_PREFIX
from cleanroom.protocol.bundle import function_id as function_id_of
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.keys import sign, spki
from cleanroom.protocol.keys import user_id as user_id_of
from cleanroom.protocol.spec import WorkSpec

WHO = "manager"
KEY_REGISTRATION_TYPE = "cleanroom/key-registration/v3"
_FUNCTION_ID = re.compile(r"fs://([A-Za-z0-9_-]{43})")
_ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as WorkSpec.name
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")  # as the manager's
_CLIENT_ID = re.compile(r"[0-9a-f]{32}")
SLOW_DOWN_RETRIES = 3
DEFAULT_MAX_FUNCTION_BYTES = 1 << 30
"""The largest bundle :meth:`ManagerClient.download_function` reads unless told otherwise:
the largest a manager accepts unless its operator configured another limit."""
MAX_TOKEN_CHARS = 16384
"""The longest access token the client takes (and caches in the profile): the manager's
are JWTs of about a kilobyte."""
MAX_RETRY_AFTER_S = 10.0
"""The longest ``Retry-After`` of the token endpoint the client waits out itself."""


@dataclass(frozen=True)
class AccessToken:
    """A DPoP-bound access token from the manager, when it expires and when it was asked
    for (Unix seconds, this client's clock; ``issued_at`` None when not known): the
    manager issued it no earlier, so ``expires_at`` is no later than its ``exp``."""

    access_token: str
    expires_at: int
    issued_at: int | None = None


@dataclass(frozen=True)
class FunctionUpload:
    """The manager's answer to an upload; ``created`` is False when it had the bundle."""

    function_id: str
    size: int
    created: bool


@dataclass(frozen=True)
class Room:
    """A clean room as the manager reports it (docs/api.md, "A room").

    ``spec`` is the spec document; :attr:`work_spec` parses it. ``state`` is
    ``deploying``, ``deployed``, ``failed`` or ``lost`` (then ``reason`` says why:
    its compute server stopped answering or no longer hosts it) or ``deleted``.
    Only ``work_id`` is checked here (it must be the Work-ID of ``spec``); before
    trusting a room, review its spec and function and pin its Work-ID.
    """

    name: str
    project: str
    spec: dict[str, Any]
    work_id: str
    function: str
    state: str
    compute_url: str
    deployer: str
    created: int
    reason: str | None = None

    @property
    def work_spec(self) -> WorkSpec:
        """The spec, parsed and validated."""
        return WorkSpec.parse(self.spec)

    @classmethod
    def from_json(cls, document: object) -> Room:
        """A room from the manager's JSON; refuses a shape or a Work-ID that is wrong."""
        if not isinstance(document, dict):
            raise MessageFormatError("room", "a JSON object", type(document).__name__, "bad room")
        texts = ("name", "project", "work_id", "function", "state", "compute_url", "deployer")
        for field in texts:
            if not isinstance(document.get(field), str):
                raise MessageFormatError(
                    "room", f"a text field {field!r}", repr(document.get(field))[:80], "bad room"
                )
        if not _ROOM_NAME.fullmatch(document["project"]):  # it is shown, and kept
            raise MessageFormatError(
                "room", "a project name", repr(document["project"])[:80], "bad room"
            )
        created = document.get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            raise MessageFormatError("room", "an integer 'created'", repr(created), "bad room")
        reason = document.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MessageFormatError("room", "a text or null 'reason'", repr(reason), "bad room")
        spec_document = document.get("spec")
        if not isinstance(spec_document, dict):
            raise MessageFormatError(
                "room", "an object 'spec'", repr(spec_document)[:80], "bad room"
            )
        spec = WorkSpec.parse(spec_document)
        if document["work_id"] != spec.work_id:
            raise UntrustedAnswerError(
                "work-id",
                spec.work_id,
                document["work_id"],
                "the manager's Work-ID for this room is not the hash of its spec",
            )
        if document["name"] != spec.name or document["function"] != spec.function:
            raise UntrustedAnswerError(
                "room-spec",
                f"name {spec.name!r} and function {spec.function}",
                f"name {document['name']!r} and function {document['function']}",
                "the manager's room does not match its own spec",
            )
        return cls(
            name=document["name"],
            project=document["project"],
            spec=spec_document,
            work_id=document["work_id"],
            function=document["function"],
            state=document["state"],
            compute_url=document["compute_url"],
            deployer=document["deployer"],
            created=created,
            reason=reason,
        )


def _object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        document = response.json()
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise MessageFormatError(what, "a JSON object", "not JSON", "bad answer") from error
    if not isinstance(document, dict):
        raise MessageFormatError(what, "a JSON object", type(document).__name__, "bad answer")
    return document


def _the_room(room: Room, name: str, project: str | None) -> Room:
    """``room``, if it is the room ``name`` (of ``project``, if named) that was asked for:
    another one would be reviewed, approved or acted on under the name the user gave."""
    if room.name != name or (project is not None and room.project != project):
        raise UntrustedAnswerError(
            "room",
            f"room {name!r}" + ("" if project is None else f" of project {project!r}"),
            f"room {room.name!r} of project {room.project!r}",
            "the manager answered another room than the one asked for",
        )
    return room


def _room_path(name: str) -> str:
    if not _ROOM_NAME.fullmatch(name):
        raise MessageFormatError(
            "room-name", "1-63 lowercase letters, digits or '-'", name[:80], "bad room name"
        )
    return f"/v1/rooms/{name}"


def _project_query(project: str | None) -> dict[str, str]:
    if project is None:
        return {}
    _project_path(project)  # the same rule
    return {"project": project}


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before asking the token endpoint again, if it said slow down."""
    if response.status_code != 429:
        return None
    text = response.headers.get("retry-after", "")
    try:
        wait = float(text)
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER_S else None


def _project_path(project: str) -> str:
    if not _ROOM_NAME.fullmatch(project):  # project names follow the same rule
        raise MessageFormatError(
            "project-name", "1-63 lowercase letters, digits or '-'", project[:80], "bad name"
        )
    return f"/v1/projects/{project}"


def _member_path(project: str, name: str) -> str:
    if not _MEMBER_NAME.fullmatch(name):
        raise MessageFormatError(
            "member-name", "1-200 letters, digits or '._@+-'", name[:80], "bad member name"
        )
    return f"{_project_path(project)}/members/{name}"


def _client_path(project: str, client_id: str) -> str:
    if not _CLIENT_ID.fullmatch(client_id):
        raise MessageFormatError("client-id", "32 hex digits", client_id[:80], "bad client id")
    return f"{_project_path(project)}/clients/{client_id}"


def _fields(document: object, what: str, kinds: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """``document`` if it is an object whose fields have these JSON types, else refused."""
    if not isinstance(document, dict):
        raise MessageFormatError(what, "a JSON object", type(document).__name__, f"bad {what}")
    for field, allowed in kinds.items():
        value = document.get(field)
        # JSON true is no integer, though Python's bool is an int.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise MessageFormatError(
                what,
                f"a field {field!r} of type {' or '.join(kind.__name__ for kind in allowed)}",
                repr(value)[:80],
                f"bad {what}",
            )
    return document


@dataclass(frozen=True)
class ProjectClient:
    """A client (one credential) of a project's member, as an owner sees it: no secret."""

    client_id: str
    project: str
    member: str | None
    name: str | None
    disabled: bool
    user_id: str | None
    created: int

    @classmethod
    def from_json(cls, document: object) -> ProjectClient:
        """A client from the manager's JSON; refuses a wrong shape."""
        fields = _fields(
            document,
            "client",
            {
                "client_id": (str,),
                "project": (str,),
                "member": (str, type(None)),
                "name": (str, type(None)),
                "disabled": (bool,),
                "user_id": (str, type(None)),
                "created": (int,),
            },
        )
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ProjectMember:
    """A member of a project (a person or system), its role and its clients."""

    name: str
    project: str
    role: str
    created: int
    clients: tuple[ProjectClient, ...]

    @classmethod
    def from_json(cls, document: object) -> ProjectMember:
        """A member from the manager's JSON; refuses a wrong shape."""
        fields = _fields(
            document,
            "member",
            {
                "name": (str,),
                "project": (str,),
                "role": (str,),
                "created": (int,),
                "clients": (list,),
            },
        )
        return cls(
            name=fields["name"],
            project=fields["project"],
            role=fields["role"],
            created=fields["created"],
            clients=tuple(ProjectClient.from_json(client) for client in fields["clients"]),
        )


@dataclass(frozen=True)
class NewCredentials:
    """A client just created or rotated. ``client_secret`` is shown this once: store it."""

    client_id: str
    client_secret: str
    project: str
    member: str
    name: str | None

    @classmethod
    def from_json(cls, document: object) -> NewCredentials:
        """New credentials from the manager's JSON; refuses a wrong shape."""
        fields = _fields(
            document,
            "new-client",
            {
                "client_id": (str,),
                "client_secret": (str,),
                "project": (str,),
                "member": (str,),
                "name": (str, type(None)),
            },
        )
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


def _token_id(token: str) -> str:
    """The ``jti`` of an access token this client holds, read without checking it (the
    manager checks it when the token comes back; this client only names it)."""
    try:
        jti = jwt.decode(token, options={"verify_signature": False}).get("jti")
    except jwt.PyJWTError as error:
        raise UntrustedAnswerError(
            "token-jti", "a JWT access token", "no JWT", "the manager's token cannot be read"
        ) from error
    if not isinstance(jti, str) or not jti:
        raise UntrustedAnswerError(
            "token-jti", "a jti in the token", jti, "the manager's token has no jti"
        )
    return jti


def _digest(function_id: str) -> str:
    match = _FUNCTION_ID.fullmatch(function_id)
    if match is None:
        raise MessageFormatError(
            "function-id", "fs:// and 43 base64url characters", function_id[:80], "bad function ID"
        )
    return match.group(1)


class ManagerClient:
    """A client of one management server, with an optional access token.

    ``dpop_key`` is the key its tokens are bound to and its requests' DPoP proofs
    are signed with (default: a fresh one, which only this client holds: give the
    key a ``token`` was bound to). ``token_source``, if given, is asked for the token of
    each request instead of ``token`` (:meth:`cleanroom.client.profile.Profile.manager`:
    renewed before it expires). ``transport`` replaces httpx's network transport
    (tests); ``timeout`` is each read's and each write's, in seconds. A JSON answer
    must besides be whole within :data:`bounded.ANSWER_DEADLINE_S` of its request
    (``answer-time``; a bundle's upload, of the bundle's end), and a bundle's download
    keep :class:`bounded.Pace` (``download-time``). Use it as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        dpop_key: ProofKey | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        token_source: Callable[[], str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.token_source = token_source
        self._timeout = timeout
        self.dpop_key = dpop_key if dpop_key is not None else ProofKey.generate()
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            event_hooks=bounded.refusing_redirects("manager"),
            verify=tls_context(),
            headers=IDENTITY_ONLY,  # answers in a coding are refused (bounded.encoded)
        )
        # Every connection this client opens, for the deadline of an answer
        # (bounded.ANSWER_DEADLINE_S): httpx's timeouts are per read, and a manager
        # that sent a byte now and then held the command for as long as it liked.
        self._connections = Connections()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _auth(self) -> DPoPAuth | None:
        """A request's authentication: this client's token (or its source's), if any."""
        if self.token_source is not None:
            return DPoPAuth(self.dpop_key, self.token_source)
        return DPoPAuth(self.dpop_key, self.token) if self.token is not None else None

    def _request(
        self,
        method: str,
        path: str,
        *,
        limit: int = bounded.MAX_ANSWER_BYTES,
        whole_within: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """The answer to ``method path``, whole within ``whole_within`` seconds (default
        :data:`bounded.ANSWER_DEADLINE_S`; ``answer-time``), or with
        ``whole_within=0`` within no time of its own (a bundle: its body takes as long
        as it takes, each read or write within the client's timeout).

        A token refused at authentication is renewed and the request sent once more
        (:mod:`cleanroom.client.renewal`), where the token source can renew it."""
        try:
            return self._send(method, path, limit=limit, whole_within=whole_within, **kwargs)
        except ServerError as error:
            if not renew_for_retry(error, self.token_source, kwargs):
                raise
        return self._send(method, path, limit=limit, whole_within=whole_within, **kwargs)

    def _send(
        self, method: str, path: str, *, limit: int, whole_within: float | None, **kwargs: Any
    ) -> httpx.Response:
        auth = self._auth()
        if whole_within is None:
            whole_within = bounded.ANSWER_DEADLINE_S
        try:
            response = bounded.send(
                self._client,
                method,
                path,
                limit=limit,
                who=WHO,
                auth=auth,
                deadline=whole_within or None,
                connections=self._connections,
                **kwargs,
            )
        except httpx.HTTPError as error:
            raise ServerError.unreachable(WHO, self.base_url, error) from error
        if response.status_code >= 400:
            raise ServerError.from_response(response, WHO)
        return response

    def fetch_token(
        self,
        client_id: str,
        client_secret: str,
        *,
        resource: str | None = None,
        room: str | None = None,
        project: str | None = None,
    ) -> AccessToken:
        """Log in with client credentials (RFC 6749 §4.4), the token bound to ``dpop_key``.

        Without ``resource``: a token for the manager, which this client then uses.
        With a compute server's URL (RFC 8707) and ``room`` (of ``project``, where
        several projects' rooms you see share the name): a token for that room on
        that server only, returned and not kept. Raises :class:`ServerError` (401
        ``invalid_client`` for a wrong secret, an unknown or a disabled client,
        which the manager does not tell apart; 400 ``invalid_target`` for a server
        or room the client may not have a token for). A ``slow_down`` answer is
        waited out (at most a few seconds, a few times).
        """
        check_secret_transport(self.base_url)  # also for a profile of an earlier version
        form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        if resource is not None:
            form["resource"] = resource
        if room is not None:
            form["room"] = room
        if project is not None:
            form["project"] = project
        url = f"{self.base_url}/oauth/token"
        for attempt in range(SLOW_DOWN_RETRIES + 1):
            asked = int(time.time())  # no later than the token's iat: its exp is not earlier
            proof = self.dpop_key.proof("POST", url)
            try:
                response = bounded.send(
                    self._client,
                    "POST",
                    url,
                    limit=bounded.MAX_ANSWER_BYTES,
                    who=WHO,
                    deadline=bounded.ANSWER_DEADLINE_S,
                    connections=self._connections,
                    data=form,
                    headers={"DPoP": proof},
                )
            except httpx.HTTPError as error:
                raise ServerError.unreachable(WHO, self.base_url, error) from error
            wait = _retry_after(response)
            if wait is None or attempt == SLOW_DOWN_RETRIES:
                break
            time.sleep(wait)
        if response.status_code >= 400:
            raise ServerError.from_response(response, WHO)
        document = _object(response, "token")
        access_token, expires_in = document.get("access_token"), document.get("expires_in")
        token_type = document.get("token_type")
        if (
            not isinstance(access_token, str)
            or not isinstance(expires_in, int)
            or not isinstance(token_type, str)
            or token_type.lower() != "dpop"
        ):
            raise MessageFormatError(
                "token", "{access_token, token_type: DPoP, expires_in}", sorted(document), "bad"
            )
        if not 0 < len(access_token) <= MAX_TOKEN_CHARS:
            raise MessageFormatError(
                "token",
                f"an access token of 1 to {MAX_TOKEN_CHARS} characters",
                f"{len(access_token)} characters",
                "bad access token",
            )
        if expires_in < 1:  # expired when issued: it would be sent, and refused
            raise MessageFormatError(
                "token", "expires_in of at least 1 s", expires_in, "bad token lifetime"
            )
        if expires_in > MAX_TOKEN_LIFETIME_S:  # past any clock: kept, it broke every later use
            raise MessageFormatError(
                "token", f"expires_in of at most {MAX_TOKEN_LIFETIME_S} s",
                f"more than {MAX_TOKEN_LIFETIME_S} s", "bad token lifetime",
            )  # fmt: skip
        if resource is None:
            self.token = access_token
        return AccessToken(access_token, expires_at=asked + expires_in, issued_at=asked)

    def revoke(
        self,
        token: str | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        """Revoke ``token`` (default: this client's own) at the manager (RFC 7009).

        Authenticated by the token itself, or by ``client_id`` and ``client_secret``
        (then it must be that client's token). The manager and, within their
        refresh interval, the Controllers refuse it from then on. An invalid or
        already revoked token is not an error. Revoking its own token leaves this
        client without one.
        """
        own = self.token_source() if self.token_source is not None else self.token
        revoked = token if token is not None else own
        if revoked is None:
            raise ValueError("no token to revoke: give one or fetch_token() first")
        form = {"token": revoked}
        if client_id is not None or client_secret is not None:
            if client_id is None or client_secret is None:
                raise ValueError("give both client_id and client_secret, or neither")
            form.update(client_id=client_id, client_secret=client_secret)
        self._request("POST", "/oauth/revoke", data=form)
        if revoked in (self.token, own):
            self.token = self.token_source = None

    def logout(self) -> int:
        """Log out this client's DPoP key at the manager: its own token, and every room token
        the manager issued the client bound to that key (kept here or not), are revoked;
        Controllers refuse them within their revocation list's refresh. How many room
        tokens were revoked. This client is left without a token; another key's tokens of
        the same client (another profile) are not touched."""
        answer = _object(self._request("POST", "/v1/whoami/logout"), "logout")
        revoked = answer.get("room_tokens_revoked")
        if isinstance(revoked, bool) or not isinstance(revoked, int) or revoked < 0:
            raise UntrustedAnswerError(
                "logout-answer",
                "a count of room tokens revoked",
                revoked,
                "the manager did not say what the logout revoked",
            )
        self.token = self.token_source = None
        return revoked

    def whoami(self) -> dict[str, Any]:
        """``{client_id, project, user_id}`` of the token's client (``user_id`` may be None)."""
        return _object(self._request("GET", "/v1/whoami"), "whoami")

    def register_user_key(self, user_key: ec.EllipticCurvePrivateKey, client_id: str) -> str:
        """Register the user's public key for ``client_id``, proving possession; its user_id.

        Signs JCS(``{"type": "cleanroom/key-registration/v3", "client_id", "user_key",
        "jkt", "jti"}``) with ``user_key``, where ``jkt`` is the thumbprint of this client's
        DPoP key and ``jti`` the id of the token the request is sent with: the user key
        vouches for that DPoP key, and only tokens bound to it are this user at the
        manager (anyone else with the client's secret is the project's member without a
        user_id); the signature counts with that one token only, so that it cannot be
        sent again once the token has expired or the user moved to another key. A client
        has one user key: registering another is a 409.
        """
        public = user_key.public_key()
        encoded = b64u(spki(public))
        path = "/v1/whoami/user-key"

        def body() -> dict[str, str]:
            # Signed for the token it is sent with: the one this client sends next.
            token = self.token_source() if self.token_source is not None else self.token
            if token is None:
                raise ValueError("no token to register the user key with: fetch_token() first")
            message = canonical(
                {
                    "type": KEY_REGISTRATION_TYPE,
                    "client_id": client_id,
                    "user_key": encoded,
                    "jkt": self.dpop_key.jkt,
                    "jti": _token_id(token),
                }
            )
            return {"user_key": encoded, "signature": b64u(sign(user_key, message))}

        limit = bounded.MAX_ANSWER_BYTES
        try:
            response = self._send("PUT", path, limit=limit, whole_within=None, json=body())
        except ServerError as error:
            # As _request: once more after a renewed token, signed for the new one.
            if not renew_for_retry(error, self.token_source, {}):
                raise
            response = self._send("PUT", path, limit=limit, whole_within=None, json=body())
        expected = user_id_of(public)
        answered = _object(response, "user-key").get("user_id")
        if answered != expected:
            raise UntrustedAnswerError(
                "user-id", expected, answered, "the manager named the key by another user_id"
            )
        return expected

    def upload_function(
        self, bundle: bytes | Path, *, progress: Callable[[int], None] | None = None
    ) -> FunctionUpload:
        """Upload a function bundle (:func:`cleanroom.protocol.bundle.pack`, or the file
        :func:`~cleanroom.protocol.bundle.pack_into` wrote, streamed from disk); re-upload
        is a no-op. ``progress`` is called with the bytes sent so far.

        The answered function ID must be the bundle's own
        (:class:`UntrustedAnswerError` ``function-id`` otherwise).
        """
        if isinstance(bundle, Path):
            expected, size = _file_id(bundle)
            content: Iterator[bytes] = _chunks(bundle, progress)
        else:
            expected, size = function_id_of(bundle), len(bundle)
            content = iter([bundle])
        # The body takes as long as it takes, each write within the client's timeout
        # (upload-time); the answer is whole within bounded.ANSWER_DEADLINE_S of its end.
        within = bounded.ANSWER_DEADLINE_S
        timer = Deadline(within, self._connections)

        def body() -> Iterator[bytes]:
            yield from content
            timer.start()

        try:
            response = self._request(
                "POST",
                "/v1/functions",
                content=body(),
                headers={"content-type": "application/octet-stream", "content-length": str(size)},
                whole_within=0,
            )
        except ServerError as error:
            if isinstance(error.__cause__, httpx.WriteTimeout):
                raise UntrustedAnswerError(
                    "upload-time",
                    f"each part of the bundle taken within {self._timeout:g} s",
                    f"none taken for {self._timeout:g} s",
                    "the manager stopped taking the bundle",
                ) from error
            if not timer.expired:
                raise
            raise UntrustedAnswerError(
                "answer-time",
                f"an answer within {within:g} s of the bundle's end",
                f"none after {within:g} s",
                "the manager did not answer the bundle's upload in time",
            ) from error
        finally:
            timer.__exit__(None, None, None)
        document = _object(response, "function-upload")
        if document.get("function_id") != expected:
            raise UntrustedAnswerError(
                "function-id",
                expected,
                document.get("function_id"),
                "the manager stored the bundle under another ID",
            )
        stored = document.get("size")
        if stored != size:
            raise UntrustedAnswerError(
                "function-size", size, stored, "the manager stored another number of bytes"
            )
        return FunctionUpload(function_id=expected, size=size, created=response.status_code == 201)

    def download_function(
        self, function_id: str, *, max_bytes: int = DEFAULT_MAX_FUNCTION_BYTES
    ) -> bytes:
        """The bundle of ``function_id`` (``fs://…``), checked to hash to that ID.

        Raises :class:`UntrustedAnswerError` ``function-id`` when the manager
        answers other bytes, ``answer-size`` when it answers more than ``max_bytes``
        (default: the largest bundle a manager accepts unless configured otherwise).
        The whole bundle is in memory: :meth:`download_function_to` writes it to a file.
        """
        chunks: list[bytes] = []
        self._download(function_id, max_bytes, chunks.append)
        return b"".join(chunks)

    def download_function_to(
        self,
        function_id: str,
        file: BinaryIO,
        *,
        max_bytes: int = DEFAULT_MAX_FUNCTION_BYTES,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the bundle of ``function_id`` into ``file`` (emptied first: a seekable
        file opened for writing), as it comes, and return its size; ``progress`` is
        called with the bytes received so far.

        Refuses as :meth:`download_function` does; ``function-id`` is known only once
        the last byte is written, so until this returns the file's bytes are the
        manager's word alone: on any error, discard them.
        """
        file.seek(0)
        file.truncate()
        size = 0

        def write(chunk: bytes) -> None:
            nonlocal size
            file.write(chunk)
            size += len(chunk)
            if progress is not None:
                progress(size)

        self._download(function_id, max_bytes, write)
        file.flush()
        return size

    def _download(self, function_id: str, max_bytes: int, deliver: Callable[[bytes], None]) -> None:
        """The bundle of ``function_id`` handed to ``deliver`` in parts as they come, at
        :class:`bounded.Pace`, up to ``max_bytes``, then checked to hash to that ID."""
        digest = _digest(function_id)
        # Up to a gigabyte, in no time known before it starts: at a pace (download-time).
        pace = bounded.Pace("part", "the bundle", WHO)
        hashed = hashlib.sha256()
        size = 0
        try:
            response = self._download_head(f"/v1/functions/{digest}", pace)
            try:
                for chunk in bounded.paced(response.iter_bytes(), pace, self._connections):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UntrustedAnswerError(
                            "answer-size",
                            f"at most {max_bytes} bytes",
                            f"more than {max_bytes}",
                            f"the {WHO} sent an answer larger than the client reads",
                        )
                    hashed.update(chunk)
                    deliver(chunk)
            finally:
                response.close()
        except httpx.HTTPError as error:
            raise ServerError.unreachable(WHO, self.base_url, error) from error
        actual = FUNCTION_ID_PREFIX + b64u(hashed.digest())
        if actual != function_id:
            raise UntrustedAnswerError(
                "function-id", function_id, actual, "the manager sent another function's bundle"
            )

    def _download_head(self, path: str, pace: bounded.Pace) -> httpx.Response:
        """The streamed answer to ``GET path``, its head within ``pace``. A token refused
        at authentication is renewed and the request sent once more, as by
        :meth:`_request`: the refusal came before any byte of the bundle did."""
        response = self._head(path, pace)
        if response.status_code >= 400:
            error = ServerError.from_response(response, WHO)
            if not renew_for_retry(error, self.token_source, {}):
                raise error
            response = self._head(path, pace)
            if response.status_code >= 400:
                raise ServerError.from_response(response, WHO)
        return response

    def _head(self, path: str, pace: bounded.Pace) -> httpx.Response:
        request = self._client.build_request("GET", path)
        return bounded.head(self._client, request, pace, self._connections, auth=self._auth())

    def deploy(self, spec: WorkSpec) -> Room:
        """Create the clean room ``spec`` describes; the manager schedules and deploys it.

        Raises :class:`ServerError`: 404 unknown function, 409 name in use, 422 bad
        spec, 503 no compute server, 502 the compute server failed (the room then
        exists in state ``failed`` with a ``reason``).
        """
        response = self._request("POST", "/v1/rooms", json={"spec": spec.document()})
        room = Room.from_json(_object(response, "room"))
        if room.work_id != spec.work_id:
            raise UntrustedAnswerError(
                "work-id", spec.work_id, room.work_id, "the manager deployed another spec"
            )
        return room

    def room(self, name: str, project: str | None = None) -> Room:
        """The clean room ``name`` (404 if none, or if this client may not see it).

        Names live per project: your project's room of that name, else the one
        other project's you take part in; ``project`` names it where several do
        (409 ``room-ambiguous`` otherwise). The answer must be that room
        (:class:`UntrustedAnswerError` ``room`` otherwise).
        """
        answer = self._request("GET", _room_path(name), params=_project_query(project))
        return _the_room(Room.from_json(_object(answer, "room")), name, project)

    def rooms(self, *, deleted: bool = False) -> list[Room]:
        """The rooms of this client's project and those whose spec names its user_id; the
        deleted ones too with ``deleted``."""
        params = {"deleted": "true"} if deleted else None
        document = _object(self._request("GET", "/v1/rooms", params=params), "rooms")
        rooms = document.get("rooms")
        if not isinstance(rooms, list):
            raise MessageFormatError("rooms", "a list 'rooms'", type(rooms).__name__, "bad answer")
        return [Room.from_json(room) for room in rooms]

    def delete(self, name: str, project: str | None = None) -> Room:
        """Delete the clean room ``name`` (its Worker erases keys and data); its project only."""
        answer = self._request("DELETE", _room_path(name), params=_project_query(project))
        return _the_room(Room.from_json(_object(answer, "room")), name, project)

    # -- projects: what an owner manages (docs/api.md, "Projects") ------------------------
    #
    # Every method below needs a token of an owner of ``project``: a member who is
    # not an owner gets ServerError 403 (check project-role), another project 404.

    def members(self, project: str) -> list[ProjectMember]:
        """The members of ``project``, each with its clients (never a secret)."""
        document = _object(self._request("GET", f"{_project_path(project)}/members"), "members")
        members = document.get("members")
        if not isinstance(members, list):
            raise MessageFormatError(
                "members", "a list 'members'", type(members).__name__, "bad answer"
            )
        return [ProjectMember.from_json(member) for member in members]

    def put_member(self, project: str, name: str, role: str = "member") -> ProjectMember:
        """Add the member ``name`` with ``role`` (``owner`` or ``member``), or change its role.

        The project's last owner cannot be demoted (ServerError 409, check last-owner).
        """
        response = self._request("PUT", _member_path(project, name), json={"role": role})
        return ProjectMember.from_json(_object(response, "member"))

    def remove_member(self, project: str, name: str) -> list[str]:
        """Remove the member ``name``: its clients are disabled at once; their ids.

        The project's last owner cannot be removed (ServerError 409, check last-owner).
        """
        document = _object(self._request("DELETE", _member_path(project, name)), "member")
        disabled = document.get("clients_disabled")
        if not isinstance(disabled, list) or not all(isinstance(c, str) for c in disabled):
            raise MessageFormatError(
                "member", "a list 'clients_disabled'", repr(disabled)[:80], "bad answer"
            )
        return disabled

    def create_client(
        self, project: str, member: str | None = None, name: str | None = None
    ) -> NewCredentials:
        """A new client (credential) of ``member``; its secret is in this answer only.

        Without ``member`` the client is its own member, named after its client id.
        """
        response = self._request(
            "POST",
            f"{_project_path(project)}/clients",
            json={"member": member, "name": name},
        )
        return NewCredentials.from_json(_object(response, "new-client"))

    def disable_client(self, project: str, client_id: str) -> ProjectClient:
        """Disable a client of ``project``: it cannot log in, its tokens are refused at once."""
        response = self._request("POST", f"{_client_path(project, client_id)}/disable")
        return ProjectClient.from_json(_object(response, "client"))

    def enable_client(self, project: str, client_id: str) -> ProjectClient:
        """Enable a disabled client again (its tokens issued before stay refused)."""
        response = self._request("POST", f"{_client_path(project, client_id)}/enable")
        return ProjectClient.from_json(_object(response, "client"))

    def rotate_client(self, project: str, client_id: str) -> NewCredentials:
        """A new secret for a client; the old secret and its tokens are refused at once."""
        response = self._request("POST", f"{_client_path(project, client_id)}/rotate")
        return NewCredentials.from_json(_object(response, "new-client"))


UPLOAD_CHUNK = 1 << 20


def _file_id(path: Path) -> tuple[str, int]:
    """The function ID and size of a bundle file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FUNCTION_ID_PREFIX + b64u(digest.digest()), size


def _chunks(path: Path, progress: Callable[[int], None] | None) -> Iterator[bytes]:
    sent = 0
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            sent += len(chunk)
            if progress is not None:
                progress(sent)
            yield chunk
