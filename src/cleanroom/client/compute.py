"""The wire client of a compute server's Controller (docs/api.md, "Controller").

Everything it returns came through the untrusted Controller: callers check it
(:mod:`cleanroom.client.phase1` for evidence, the handshake for the Worker's
answer, the record layer for data). Use :class:`cleanroom.client.CleanRoomClient`
for the whole flow; this class only moves messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from cleanroom.answers import IDENTITY_ONLY, Connections, Deadline
from cleanroom.client import bounded
from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.renewal import renew_for_retry
from cleanroom.client.tls import tls_context
from cleanroom.dpop import DPoPAuth, ProofKey
from cleanroom.protocol.encoding import b64u, from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.framing import MEDIA_TYPE, decode_frames, encode_frames


@dataclass(frozen=True)
class Evidence:
    """The Attester's answer as relayed: not yet checked."""

    claims: Any
    quote: bytes
    collateral: str | None  # None: the server has none to serve (see collateral_error)
    collateral_error: Any = None


@dataclass(frozen=True)
class SessionAnswer:
    """The Controller's merged answer to a v2 session request: not yet checked.

    ``refusal`` is set when the Attester or the Worker refused; ``evidence`` is then
    whatever evidence came beside it (so the client can check it first), if any.
    """

    evidence: Evidence | None
    resp: Any = None
    signature: bytes = b""
    refusal: ServerError | None = None


UPLOAD_WRITE_TIMEOUT_S = 60.0
"""The longest one write of an upload's body may wait for the compute server to take
more (it had none: a Controller that stopped reading held the upload for ever)."""


def _evidence(document: dict[str, Any]) -> Evidence:
    collateral = document.get("collateral")
    return Evidence(
        claims=document.get("claims"),
        quote=from_b64u(_text(document, "quote", "evidence"), "quote"),
        collateral=None if collateral is None else _text(document, "collateral", "evidence"),
        collateral_error=document.get("collateral_error"),
    )


def _object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        document = response.json()
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise MessageFormatError(what, "a JSON object", "not JSON", "bad answer") from error
    if not isinstance(document, dict):
        raise MessageFormatError(what, "a JSON object", type(document).__name__, "bad answer")
    return document


def _text(document: dict[str, Any], name: str, what: str) -> str:
    value = document.get(name)
    if not isinstance(value, str):
        raise MessageFormatError(what, f"a text field {name!r}", sorted(document), "bad answer")
    return value


class ComputeClient:
    """Talks to one Controller about one room on behalf of one user.

    ``token`` is the user's token for that room on that server (from the manager:
    :meth:`cleanroom.client.manager.ManagerClient.fetch_token` with the server's URL
    as ``resource``), bound to ``dpop_key``, which signs a DPoP proof for every
    request: the Controller cannot use the token anywhere else, nor again. ``token``
    may be a function, asked for the token of each request (one renewed before it
    expires: :meth:`cleanroom.client.profile.Profile.renewed_token`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | Callable[[], str],
        dpop_key: ProofKey,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._client = httpx.Client(
            base_url=self.base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            event_hooks=bounded.refusing_redirects("compute server"),
            auth=DPoPAuth(dpop_key, token),
            verify=tls_context(),
            headers=IDENTITY_ONLY,  # answers in a coding are refused (bounded.encoded)
        )
        # Every connection this client opens, for the deadline of an answer
        # (bounded.ANSWER_DEADLINE_S): httpx's timeouts are per read, and a Controller
        # that sent a byte now and then held the command for as long as it liked.
        self._connections = Connections()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, whole_within: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """The answer to ``method path``, whole within ``bounded.ANSWER_DEADLINE_S``
        (``answer-time``) unless not ``whole_within`` (an upload: its body takes as
        long as it takes).

        A token refused at authentication is renewed and the request sent once more
        (:mod:`cleanroom.client.renewal`), where the token source can renew it."""
        try:
            return self._send(method, path, whole_within=whole_within, **kwargs)
        except ServerError as error:
            if not renew_for_retry(error, self._token, kwargs):
                raise
        return self._send(method, path, whole_within=whole_within, **kwargs)

    def _send(self, method: str, path: str, *, whole_within: bool, **kwargs: Any) -> httpx.Response:
        try:
            response = bounded.send(
                self._client,
                method,
                path,
                limit=bounded.MAX_ANSWER_BYTES,
                who="compute server",
                deadline=bounded.ANSWER_DEADLINE_S if whole_within else None,
                connections=self._connections,
                **kwargs,
            )
        except httpx.HTTPError as error:
            raise ServerError.unreachable("compute server", self.base_url, error) from error
        if response.status_code >= 400:
            raise ServerError.from_response(response, "compute server")
        return response

    def state(self, name: str) -> dict[str, Any]:
        """The Worker's state as the Controller reports it (informational only)."""
        return _object(self._request("GET", f"/v1/rooms/{name}"), "room-state")

    def status(self, name: str, nonce: bytes) -> tuple[Any, bytes]:
        """The Worker's signed status for ``nonce``, as relayed: (status, signature), unchecked."""
        document = _object(
            self._request("POST", f"/v1/rooms/{name}/status", json={"nonce": b64u(nonce)}),
            "room-status",
        )
        signature = _text(document, "signature", "room-status")
        return document.get("status"), from_b64u(signature, "status signature")

    def attestation(self, name: str, nonce: bytes) -> Evidence:
        """Phase 1 evidence for ``name``'s Worker, bound to ``nonce``."""
        document = _object(
            self._request("POST", f"/v1/rooms/{name}/attestation", json={"nonce": b64u(nonce)}),
            "evidence",
        )
        return _evidence(document)

    def attested_session(
        self, name: str, nonce: bytes, init: dict[str, Any], signature: bytes
    ) -> SessionAnswer:
        """Protocol v2 in one round trip: evidence for ``nonce`` and the Worker's answer
        to the signed ``init``, as the Controller merged them (unchecked)."""
        body = {"nonce": b64u(nonce), "init": init, "signature": b64u(signature)}
        try:
            response = self._request("POST", f"/v1/rooms/{name}/attested-sessions", json=body)
        except ServerError as refusal:
            beside = refusal.problem.get("evidence")
            evidence = _evidence(beside) if isinstance(beside, dict) else None
            return SessionAnswer(evidence=evidence, refusal=refusal)
        document = _object(response, "attested-session")
        evidence, handshake = document.get("evidence"), document.get("handshake")
        if not isinstance(evidence, dict) or not isinstance(handshake, dict):
            raise MessageFormatError(
                "attested-session", ["evidence", "handshake"], sorted(document), "bad answer"
            )
        return SessionAnswer(
            evidence=_evidence(evidence),
            resp=handshake.get("resp"),
            signature=from_b64u(_text(handshake, "signature", "handshake-resp"), "resp signature"),
        )

    def open_session(self, name: str, init: dict[str, Any], signature: bytes) -> tuple[Any, bytes]:
        """Phase 2: send the signed init; the Worker's (unchecked) resp and signature."""
        document = _object(
            self._request(
                "POST",
                f"/v1/rooms/{name}/sessions",
                json={"init": init, "signature": b64u(signature)},
            ),
            "handshake-resp",
        )
        signature_text = _text(document, "signature", "handshake-resp")
        return document.get("resp"), from_b64u(signature_text, "resp signature")

    def upload(self, name: str, session_id: str, frames: Iterable[bytes]) -> bytes:
        """Stream record frames into the Worker; its sealed acknowledgement (unchecked)."""
        return self.upload_stream(name, session_id, encode_frames(frames))

    def upload_stream(
        self,
        name: str,
        session_id: str,
        stream: Iterable[bytes | bytearray],
        *,
        answer_within: float | None = None,
    ) -> bytes:
        """Stream a frame stream (frames already length-prefixed) into the Worker; its
        sealed acknowledgement (unchecked), whole within ``answer_within`` seconds of the
        body's end (``answer-time``; the body itself takes as long as it takes)."""
        timer = None if answer_within is None else Deadline(answer_within, self._connections)

        def body() -> Iterator[bytes | bytearray]:
            yield from stream
            if timer is not None:
                timer.start()

        try:
            response = self._request(
                "POST",
                f"/v1/rooms/{name}/sessions/{session_id}/upload",
                content=body(),
                headers={"content-type": MEDIA_TYPE},
                timeout=httpx.Timeout(60.0, read=None, write=UPLOAD_WRITE_TIMEOUT_S),
                whole_within=False,
            )
        except ServerError as error:
            if isinstance(error.__cause__, httpx.WriteTimeout):
                raise UntrustedAnswerError(
                    "upload-time",
                    f"each part of the upload taken within {UPLOAD_WRITE_TIMEOUT_S:g} s",
                    f"none taken for {UPLOAD_WRITE_TIMEOUT_S:g} s",
                    "the compute server stopped taking the upload",
                ) from error
            if timer is None or not timer.expired:
                raise
            raise UntrustedAnswerError(
                "answer-time",
                f"an acknowledgement within {answer_within:g} s of the upload's end",
                f"none after {answer_within:g} s",
                "the compute server did not answer the upload in time",
            ) from error
        finally:
            if timer is not None:
                timer.__exit__(None, None, None)
        return from_b64u(_text(_object(response, "upload"), "ack", "upload"), "upload ack")

    def run(self, name: str, session_id: str, request: bytes) -> dict[str, Any]:
        """Start a function room's run: ``request`` is the run session's sealed run
        request (:func:`cleanroom.protocol.run_request.seal_run_request`)."""
        path = f"/v1/rooms/{name}/sessions/{session_id}/run"
        return _object(self._request("POST", path, json={"request": b64u(request)}), "run")

    def fate(self, name: str, session_id: str, request: bytes) -> bytes:
        """Ask what became of a run session: ``request`` is the fate session's sealed
        question (:func:`cleanroom.protocol.fate.seal_fate_request`); the sealed answer."""
        path = f"/v1/rooms/{name}/sessions/{session_id}/fate"
        document = _object(self._request("POST", path, json={"request": b64u(request)}), "fate")
        return from_b64u(_text(document, "fate", "fate"), "session fate")

    def download(self, name: str, session_id: str) -> Iterator[bytes]:
        """The record frames of an output, as they arrive, at the pace
        :class:`bounded.Pace` holds a download to (``download-time``)."""
        # The Worker sends the first record at once and the next as fast as the client
        # reads. The client's timeouts are per read, so a Controller that sent a byte
        # of each record now and then held the download for ever: what the client
        # waits for the Controller (not its own writing) is bounded by what came.
        pace = bounded.Pace("record", "the download", "compute server")
        path = f"/v1/rooms/{name}/sessions/{session_id}/download"
        try:
            response = self._head(path, pace)
            if response.status_code >= 400:
                # A token refused at authentication (nothing done, no record sent yet):
                # renewed and the request sent once more, as by _request.
                refusal = ServerError.from_response(response, "compute server")
                if not renew_for_retry(refusal, self._token, {}):
                    raise refusal
                response = self._head(path, pace)
        except httpx.HTTPError as error:
            raise ServerError.unreachable("compute server", self.base_url, error) from error
        if response.status_code >= 400:
            raise ServerError.from_response(response, "compute server")
        try:
            # The chunks as they come off the socket: the frame decoder joins each frame
            # once, whatever the chunks (re-chunking them first was one more copy of
            # every byte).
            frames = decode_frames(response.iter_raw())
            yield from bounded.paced(frames, pace, self._connections)
        except httpx.HTTPError as error:
            raise ServerError.unreachable("compute server", self.base_url, error) from error
        finally:
            response.close()

    def _head(self, path: str, pace: bounded.Pace) -> httpx.Response:
        request = self._client.build_request("POST", path)
        return bounded.head(self._client, request, pace, self._connections)

    def receipt(self, name: str) -> tuple[Any, bytes]:
        """The signed run receipt as relayed: (receipt, signature), not yet checked."""
        document = _object(self._request("GET", f"/v1/rooms/{name}/receipt"), "receipt")
        return document.get("receipt"), from_b64u(
            _text(document, "signature", "receipt"), "receipt signature"
        )

    # -- SQL rooms -----------------------------------------------------------------

    def query(self, name: str, session_id: str, frame: bytes) -> dict[str, Any]:
        """Start a query in a SQL room: ``frame`` is the encrypted query request."""
        path = f"/v1/rooms/{name}/sessions/{session_id}/run"
        return _object(self._request("POST", path, json={"query": b64u(frame)}), "run")

    def run_receipt(self, name: str, run: int) -> tuple[Any, bytes, bytes]:
        """A query run's signed receipt and its sealed detail as relayed, not yet checked."""
        document = _object(self._request("GET", f"/v1/rooms/{name}/runs/{run}/receipt"), "receipt")
        return (
            document.get("receipt"),
            from_b64u(_text(document, "signature", "receipt"), "receipt signature"),
            from_b64u(_text(document, "detail", "receipt"), "query detail"),
        )

    def budget(self, name: str, nonce: str) -> tuple[Any, bytes]:
        """The signed privacy budget statement for ``nonce``, not yet checked."""
        document = _object(
            self._request("POST", f"/v1/rooms/{name}/budget", json={"nonce": nonce}), "budget"
        )
        return document.get("budget"), from_b64u(
            _text(document, "signature", "budget"), "budget signature"
        )
