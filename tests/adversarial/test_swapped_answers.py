"""A hostile Controller that answers with a genuine answer of another room, another
party or another session, cuts a download at its edges, answers a run itself, or sends
the client elsewhere (h13's red team; the tamper table of docs/threat-model.md).

Each answer here is one the Worker really signed or sealed, for someone: only the
binding to this room, this party and this session stops it. Two rooms of the same
parties and the same function, each run once, give the Controller everything to swap.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cleanroom.errors import CheckFailed
from cleanroom.insecure.localstack import LocalStack
from cleanroom.protocol.framing import decode_frames, encode_frames
from tests.adversarial.proxy import Message, TamperingProxy
from tests.adversarial.test_hostile_controller import SESSIONS, on_path, refused
from tests.auth import dpop
from tests.e2e.conftest import User
from tests.e2e.helpers import approve, deploy, write


@pytest.fixture(scope="module")
def rooms(
    alice: User,
    bob: User,
    hostile_stack: tuple[LocalStack, TamperingProxy],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str]]:
    """Two rooms of Alice and Bob with the same function, each run once, on other data."""
    hostile_stack[1].reset()
    tmp = tmp_path_factory.mktemp("swapped")
    names = ("swapped-one", "swapped-two")
    for name, emails in zip(names, ("a@x\nb@x\n", "a@x\nc@x\nd@x\n"), strict=True):
        deploy(alice, bob, tmp, name)
        approve(bob, name)
        alice.client.upload(name, "input_1", write(tmp / f"a-{name}", emails))
        bob.client.upload(name, "input_2", write(tmp / f"b-{name}", "b@x\nc@x\n"))
        assert alice.client.run(name, wait=True, poll_s=0.1).succeeded
    yield names
    hostile_stack[1].reset()
    for name in names:
        alice.client.delete(name)


def captured(proxy: TamperingProxy, suffix: str, action: Callable[[], object]) -> Message:
    """The message of ``action`` whose path ends with ``suffix``, relayed honestly."""
    proxy.reset()
    action()
    (message,) = [m for m in proxy.seen if m.path.endswith(suffix)]
    proxy.reset()
    return message


def answered_with(response: bytes) -> Callable[[Message], None]:
    def swap(message: Message) -> None:
        message.response = response

    return swap


def nothing_written(target: Path) -> None:
    assert not target.exists()
    assert [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")] == []


# ------------------------------------------------------------ another room


def test_the_receipt_of_another_room_is_refused(
    alice: User, proxy: TamperingProxy, rooms: tuple[str, str]
) -> None:
    one, two = rooms
    other = captured(proxy, "/receipt", lambda: alice.client.receipt(two))
    proxy.on_response = on_path("/receipt", answered_with(other.response))
    refused(lambda: alice.client.receipt(one), "receipt-signature")


def test_a_status_another_rooms_worker_signed_for_this_very_nonce_is_refused(
    alice: User, proxy: TamperingProxy, rooms: tuple[str, str]
) -> None:
    """Fresh (the client's own nonce), and signed by a genuine Worker of the same
    parties: of the other room."""
    one, two = rooms
    token = alice.profile.access_token(resource=proxy.url, room=two, project="acme")

    def reroute(message: Message) -> None:
        if message.path == f"/v1/rooms/{one}/status":
            message.path = f"/v1/rooms/{two}/status"
            message.headers = dpop(alice.profile.proof_key, token, "POST", proxy.url + message.path)

    proxy.on_request = reroute
    answer = alice.client.status(one)
    assert [m.path for m in proxy.seen if m.path.endswith("/status")] == [f"/v1/rooms/{two}/status"]
    assert answer.worker is None and answer.unverified is not None
    assert answer.unverified.startswith("status-signature:"), answer.unverified


def test_the_workers_answer_of_another_room_beside_this_rooms_evidence_is_refused(
    alice: User, proxy: TamperingProxy, rooms: tuple[str, str], tmp_path: Path
) -> None:
    """Alice's own session in the other room: a response signed by a genuine Worker,
    for her, spliced beside this room's evidence for this nonce."""
    one, two = rooms
    other = captured(
        proxy, SESSIONS, lambda: alice.client.download(two, "output_1", tmp_path / "two")
    )
    handshake = json.loads(other.response)["handshake"]

    def splice(message: Message) -> None:
        document = json.loads(message.response)
        document["handshake"] = handshake
        message.response = json.dumps(document).encode()

    proxy.on_response = on_path(SESSIONS, splice)
    target = tmp_path / "one"
    refused(lambda: alice.client.download(one, "output_1", target), "handshake-resp-signature")
    assert proxy.paths("/download") == []
    nothing_written(target)


# ------------------------------------------- another party, another session


@pytest.mark.parametrize("whose", ["another party's", "her own earlier"])
def test_a_download_answered_with_another_sessions_records_is_refused(
    alice: User,
    bob: User,
    proxy: TamperingProxy,
    rooms: tuple[str, str],
    tmp_path: Path,
    whose: str,
) -> None:
    one, _ = rooms
    if whose == "another party's":
        other = captured(
            proxy, "/download", lambda: bob.client.download(one, "output_2", tmp_path / "bob")
        )
    else:
        other = captured(
            proxy, "/download", lambda: alice.client.download(one, "output_1", tmp_path / "e")
        )
    proxy.on_response = on_path("/download", answered_with(other.response))
    target = tmp_path / "out"
    refused(lambda: alice.client.download(one, "output_1", target), "record-authentication")
    nothing_written(target)


# ------------------------------------------------------ a download's edges


def frames_then(change: Callable[[list[bytes]], bytes]) -> Callable[[Message], None]:
    def apply(message: Message) -> None:
        if message.status == 200:
            message.response = change(list(decode_frames([message.response])))

    return apply


def joined(frames: list[bytes]) -> bytes:
    return b"".join(encode_frames(frames))


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda f: joined([*f, f[-1]]), "record-counter"),  # the manifest again
        (lambda f: joined([*f[:-1], f[-2]]), "record-counter"),  # a file's end for the manifest
        (lambda f: joined(f[-1:]), "record-counter"),  # the manifest alone
        (lambda f: joined(f) + b"\x00\x00\x00\x05junk!", "record-frame"),  # bytes after the end
        (lambda f: joined(f) + b"\x00\x00", "frame-truncated"),  # half a length after the end
        (lambda f: b"", "record-truncated"),  # an empty body
    ],
    ids=[
        "manifest-twice",
        "file-end-for-manifest",
        "manifest-alone",
        "junk-after",
        "cut-after",
        "empty",
    ],
)
def test_a_download_changed_at_its_edges_is_refused_and_nothing_is_written(
    alice: User,
    proxy: TamperingProxy,
    rooms: tuple[str, str],
    tmp_path: Path,
    change: Callable[[list[bytes]], bytes],
    check: str,
) -> None:
    one, _ = rooms
    proxy.on_response = on_path("/download", frames_then(change))
    target = tmp_path / "out"
    refused(lambda: alice.client.download(one, "output_1", target), check)
    nothing_written(target)


# ----------------------------------------------------- a run, a version, a host


def test_a_run_the_controller_answers_itself_is_refused(
    alice: User, bob: User, proxy: TamperingProxy, tmp_path: Path
) -> None:
    """The run request never reaches the Worker; the Controller says 202 running."""
    name = "answered-by-the-controller"
    deploy(alice, bob, tmp_path, name)
    approve(bob, name)
    try:
        alice.client.upload(name, "input_1", write(tmp_path / "a", "a@x\n"))
        bob.client.upload(name, "input_2", write(tmp_path / "b", "a@x\n"))

        def answer_itself(message: Message) -> None:
            if message.path.endswith("/run"):
                message.relay = False
                message.status, message.response = 202, b'{"state":"running"}'

        proxy.on_request = answer_itself
        refused(lambda: alice.client.run(name), "run-started")
        proxy.reset()
        status = alice.client.status(name).worker
        assert status is not None and status.state == "collecting"
    finally:
        proxy.reset()
        alice.client.delete(name)


def test_a_controller_that_hides_v2_behind_a_405_gets_no_v1_session(
    alice: User, proxy: TamperingProxy, rooms: tuple[str, str], tmp_path: Path
) -> None:
    one, _ = rooms

    def hide(message: Message) -> None:
        message.status = 405
        message.response = b'{"type":"about:blank","status":405,"detail":"Method Not Allowed"}'

    proxy.on_response = on_path(SESSIONS, hide)
    refused(lambda: alice.client.download(one, "output_1", tmp_path / "v"), "protocol-version")
    assert proxy.paths("/attestation") == proxy.paths("/download") == []


class Elsewhere:
    """Another host, which records every request that reaches it."""

    def __init__(self) -> None:
        seen: list[tuple[str, str, dict[str, str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append((self.command, self.path, dict(self.headers)))
                self.send_response(200)
                self.end_headers()

            do_GET = do_POST = _any

            def log_message(self, *_args: object) -> None:
                pass

        self.seen = seen
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("code", [302, 307, 308])
def test_a_redirect_to_another_host_is_not_followed(
    alice: User, proxy: TamperingProxy, rooms: tuple[str, str], tmp_path: Path, code: int
) -> None:
    """The session request (a signed init, a token, a DPoP proof) and the receipt's are
    sent nowhere else: a redirect is not an answer (``answer-redirect``)."""
    one, _ = rooms
    elsewhere = Elsewhere()

    def redirect(message: Message) -> None:
        message.status, message.response = code, b""
        message.answer_headers = {"location": elsewhere.url + message.path}

    try:
        for suffix, action in (
            (SESSIONS, lambda: alice.client.download(one, "output_1", tmp_path / "r")),
            ("/receipt", lambda: alice.client.receipt(one)),
        ):
            proxy.on_response = on_path(suffix, redirect)
            with pytest.raises(CheckFailed) as refused:
                action()
            assert refused.value.check == "answer-redirect", refused.value
        assert elsewhere.seen == []
    finally:
        elsewhere.server.shutdown()
