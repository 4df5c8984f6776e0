"""A hostile Controller (a tampering proxy in front of it) against real processes.

Each test changes exactly one thing the Controller relays and expects the client
or the enclave to refuse with the specific check — and, where data is at stake,
that nothing was sent or accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cleanroom.attestation import AttestationError
from cleanroom.cli.main import main
from cleanroom.client.errors import ServerError
from cleanroom.client.rooms import CleanRoomClient
from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u, canonical, from_b64u
from cleanroom.protocol.framing import decode_frames, encode_frames
from cleanroom.protocol.manifest import input_salt
from tests.adversarial.proxy import Message, TamperingProxy
from tests.auth import dpop
from tests.e2e.conftest import User
from tests.e2e.helpers import HANDLER, approve, deploy, write

Frames = list[bytes]


@pytest.fixture
def room(
    request: pytest.FixtureRequest, alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy
) -> Iterator[str]:
    """A fresh clean room for Alice and Bob, approved by both, deleted afterwards."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    deploy(alice, bob, tmp_path, name)
    approve(bob, name)
    yield name
    proxy.reset()
    alice.client.delete(name)


def refused(action: Callable[[], object], check: str) -> CheckFailed | ServerError:
    """Run ``action``; it must be refused by the named check (client- or enclave-side)."""
    with pytest.raises((CheckFailed, ServerError)) as caught:
        action()
    error = caught.value
    assert error.check == check, f"refused by {error.check!r}, not {check!r}: {error}"
    return error


def unconfirmed(action: Callable[[], object], proxy: TamperingProxy, check: str) -> None:
    """Run the upload ``action`` while the Controller also answers the uploader's fate
    question itself (``502``): refused ``upload-unconfirmed``, naming ``check``, the
    check that refused the Controller's answer to the upload. (With the question
    relayed, the Worker's sealed answer settles the upload: tests/adversarial/
    test_upload_fate.py.)"""

    def withhold(message: Message) -> None:
        if message.path.endswith("/fate"):
            message.relay = False
            message.status, message.response = 502, b'{"status":502,"title":"Bad Gateway"}'

    proxy.on_request = withhold
    error = refused(action, "upload-unconfirmed")
    assert f"{check}:" in str(error) or f"({check}" in str(error), f"{check} not named: {error}"


def on_path(suffix: str, change: Callable[[Message], None]) -> Callable[[Message], None]:
    def hook(message: Message) -> None:
        if message.path.endswith(suffix):
            change(message)

    return hook


def json_change(
    change: Callable[[dict[str, object]], None], *, response: bool
) -> Callable[[Message], None]:
    def apply(message: Message) -> None:
        document = json.loads(message.response if response else message.body)
        change(document)
        encoded = json.dumps(document).encode()
        if response:
            message.response = encoded
        else:
            message.body = encoded

    return apply


def frames_change(
    change: Callable[[Frames], Frames], *, response: bool
) -> Callable[[Message], None]:
    def apply(message: Message) -> None:
        if response and message.status != 200:
            return
        body = message.response if response else message.body
        tampered = b"".join(encode_frames(change(list(decode_frames([body])))))
        if response:
            message.response = tampered
        else:
            message.body = tampered

    return apply


def flip_b64u(value: str, position: int) -> str:
    raw = bytearray(from_b64u(value, "value"))
    raw[position] ^= 0x01
    return b64u(bytes(raw))


# ------------------------------------------------------------- the deploy


def test_a_swapped_access_map_yields_another_work_id(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy
) -> None:
    def swap_owners(document: dict[str, object]) -> None:
        spec = document["spec"]
        assert isinstance(spec, dict)
        inputs = spec["inputs"]
        spec["inputs"] = {"input_1": inputs["input_2"], "input_2": inputs["input_1"]}

    proxy.on_request = on_path("/v1/rooms/swapped-access", json_change(swap_owners, response=False))
    deploy(alice, bob, tmp_path, "swapped-access")
    refused(
        lambda: alice.client.upload("swapped-access", "input_1", write(tmp_path / "a", "a\n")),
        "work-id",
    )
    assert proxy.paths("/sessions") == [] and proxy.paths("/upload") == []


def test_a_swapped_function_yields_another_work_id(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy
) -> None:
    deploy(alice, bob, tmp_path, "decoy", handler=HANDLER + "\n# the decoy\n")
    decoy = alice.client.manager.room("decoy").function

    def swap_function(document: dict[str, object]) -> None:
        spec = document["spec"]
        assert isinstance(spec, dict)
        spec["function"] = decoy

    proxy.on_request = on_path(
        "/v1/rooms/swapped-function", json_change(swap_function, response=False)
    )
    deploy(alice, bob, tmp_path, "swapped-function")
    assert alice.client.manager.room("swapped-function").function != decoy
    refused(lambda: alice.client.attest("swapped-function"), "work-id")


# ------------------------------------------- Phase 1 (in the v2 session)

SESSIONS = "/attested-sessions"  # protocol v2: evidence and handshake in one round trip


def upload_a(alice: User, tmp_path: Path, room: str) -> Callable[[], object]:
    return lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a\n"))


def part_change(
    part: str, change: Callable[[dict[str, object]], None]
) -> Callable[[Message], None]:
    """Change one part ("evidence" or "handshake") of the Controller's merged answer."""

    def apply(document: dict[str, object]) -> None:
        inner = document[part]
        assert isinstance(inner, dict)
        change(inner)

    return on_path(SESSIONS, json_change(apply, response=True))


def test_the_worker_of_another_clean_room_is_refused(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    deploy(alice, bob, tmp_path, "other-room")
    # A hostile Controller checks no token; the honest one behind this proxy does, so the
    # proxy stands in with a valid token and proof for the room it serves instead.
    token = alice.profile.access_token(resource=proxy.url, room="other-room", project="acme")

    def redirect(message: Message) -> None:
        if f"/v1/rooms/{room}/" not in message.path:
            return
        message.path = message.path.replace(f"/v1/rooms/{room}/", "/v1/rooms/other-room/")
        url = proxy.url + message.path
        message.headers = dpop(alice.profile.proof_key, token, message.method, url)

    proxy.on_request = redirect
    # The other room's Worker refuses the init too; the client's own check comes first.
    error = refused(upload_a(alice, tmp_path, room), "work-id")
    assert isinstance(error, CheckFailed)
    refused(lambda: alice.client.attest(room), "work-id")  # Phase 1 alone
    assert proxy.paths("/upload") == []


def test_a_replayed_attestation_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    # inputs-missing in the clear, then the Worker's sealed answer: the session is closed
    refused(lambda: alice.client.run(room), "fate-closed")
    recorded = json.loads(next(m for m in proxy.seen if m.path.endswith(SESSIONS)).response)

    def replay(document: dict[str, object]) -> None:
        document.clear()
        document.update(recorded["evidence"])

    proxy.on_response = part_change("evidence", replay)
    refused(upload_a(alice, tmp_path, room), "nonce")
    assert proxy.paths("/upload") == []


def test_a_tampered_quote_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def tamper(document: dict[str, object]) -> None:
        quote = document["quote"]
        assert isinstance(quote, str)
        document["quote"] = flip_b64u(quote, 48 + 64)  # a byte of the report body's MRENCLAVE

    proxy.on_response = part_change("evidence", tamper)
    with pytest.raises(AttestationError) as caught:
        upload_a(alice, tmp_path, room)()
    assert caught.value.check == "quote-verification", caught.value
    assert proxy.paths("/upload") == []


def test_tampered_claims_are_refused(
    alice: User, mallory: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    from cleanroom.protocol.keys import spki

    def tamper(document: dict[str, object]) -> None:
        claims = document["claims"]
        assert isinstance(claims, dict)
        claims["worker"]["worker_key"] = b64u(spki(mallory.profile.user_key.public_key()))

    proxy.on_response = part_change("evidence", tamper)
    refused(upload_a(alice, tmp_path, room), "report-data")


def test_phase_1_alone_refuses_a_replayed_attestation(
    alice: User, proxy: TamperingProxy, room: str
) -> None:
    alice.client.attest(room)
    recorded = next(m for m in proxy.seen if m.path.endswith("/attestation"))

    def replay(message: Message) -> None:
        message.response = recorded.response

    proxy.on_response = on_path("/attestation", replay)
    refused(lambda: alice.client.attest(room), "nonce")


# ------------------------------------------- the handshake (v2, hybrid)


def resp_change(change: Callable[[dict[str, object]], None]) -> Callable[[Message], None]:
    def apply(handshake: dict[str, object]) -> None:
        resp = handshake["resp"]
        assert isinstance(resp, dict)
        change(resp)

    return part_change("handshake", apply)


def test_a_tampered_handshake_signature_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def tamper(document: dict[str, object]) -> None:
        signature = document["signature"]
        assert isinstance(signature, str)
        document["signature"] = flip_b64u(signature, len(from_b64u(signature, "s")) - 1)

    proxy.on_response = part_change("handshake", tamper)
    refused(upload_a(alice, tmp_path, room), "handshake-resp-signature")
    assert proxy.paths("/upload") == []


def test_a_tampered_init_is_refused_by_the_worker(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def widen(document: dict[str, object]) -> None:
        init = document["init"]
        assert isinstance(init, dict)
        init["purpose"] = {"op": "download", "output": "output_2"}  # Bob's output

    proxy.on_request = on_path(SESSIONS, json_change(widen, response=False))
    refused(upload_a(alice, tmp_path, room), "handshake-init-signature")


def test_a_replayed_init_is_refused_by_the_worker(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a\n"))
    first = json.loads(next(m for m in proxy.seen if m.path.endswith(SESSIONS)).body)

    def replay(document: dict[str, object]) -> None:  # the fresh nonce for the Attester
        document["init"], document["signature"] = first["init"], first["signature"]

    proxy.on_request = on_path(SESSIONS, json_change(replay, response=False))
    error = refused(lambda: alice.client.run(room), "nonce")
    assert isinstance(error, ServerError)  # the Worker's own refusal, relayed


def test_a_response_for_another_clients_nonce_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    refused(lambda: alice.client.run(room), "fate-closed")  # a session, then refused
    earlier = json.loads(next(m for m in proxy.seen if m.path.endswith(SESSIONS)).response)

    def swap(handshake: dict[str, object]) -> None:
        handshake.clear()
        handshake.update(earlier["handshake"])  # signed by the same Worker, another nonce

    proxy.on_response = part_change("handshake", swap)
    refused(upload_a(alice, tmp_path, room), "resp-nonce")
    assert proxy.paths("/upload") == []


@pytest.mark.parametrize(
    ("field", "value", "check"),
    [
        ("suite", "P256", "handshake-suite"),  # a v2 message with v1's suite
        ("version", 1, "protocol-version"),
        ("worker_mlkem_ciphertext", b64u(bytes(1087)), "mlkem-ciphertext"),
    ],
    ids=["v1-suite", "v1-version", "short-ciphertext"],
)
def test_a_downgraded_or_malformed_response_is_refused(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    field: str,
    value: object,
    check: str,
) -> None:
    proxy.on_response = resp_change(lambda resp: resp.__setitem__(field, value))
    refused(upload_a(alice, tmp_path, room), check)
    assert proxy.paths("/upload") == []


def test_an_init_with_the_suite_changed_is_refused_by_the_worker(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def downgrade(document: dict[str, object]) -> None:
        init = document["init"]
        assert isinstance(init, dict)
        init["suite"] = "P256"

    proxy.on_request = on_path(SESSIONS, json_change(downgrade, response=False))
    refused(upload_a(alice, tmp_path, room), "handshake-suite")


def test_a_controller_that_hides_v2_gets_no_v1_session(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def hide(message: Message) -> None:
        message.status = 404
        message.response = b'{"type":"about:blank","status":404,"detail":"Not Found"}'

    proxy.on_response = on_path(SESSIONS, hide)
    refused(upload_a(alice, tmp_path, room), "protocol-version")
    v1_sessions = [p for p in proxy.paths("/sessions") if not p.endswith(SESSIONS)]
    assert proxy.paths("/attestation") == v1_sessions == []
    assert proxy.paths("/upload") == []


def test_v1_where_the_policy_allows_it(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def hide(message: Message) -> None:
        message.status = 404
        message.response = b'{"type":"about:blank","status":404,"detail":"Not Found"}'

    proxy.on_response = on_path(SESSIONS, hide)
    allowing = alice.client.__class__(alice.profile.updated(allow_protocol_v1=True))
    try:
        allowing.upload(room, "input_1", write(tmp_path / "a", "a\n"))
    finally:
        alice.profile.updated(allow_protocol_v1=False)
    assert len(proxy.paths("/attestation")) == 1  # v1: Phase 1, then Phase 2
    assert len([p for p in proxy.paths("/sessions") if not p.endswith(SESSIONS)]) == 1
    assert len(proxy.paths("/upload")) == 1


# --------------------------------------------------------------- records

BIG = "x" * (2 * 1024 * 1024 + 5) + "\n"  # three records, then the manifest


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda f: [f[1], f[0], *f[2:]], "record-counter"),  # reordered
        (lambda f: [f[0], *f[2:]], "record-counter"),  # one dropped
        (lambda f: [f[0], f[0], *f[1:]], "record-counter"),  # duplicated
        (lambda f: f[:2], "record-truncated"),  # cut inside the file
        (lambda f: f[:-1], "upload-truncated"),  # the manifest dropped
    ],
    ids=["reordered", "dropped", "duplicated", "truncated", "no-manifest"],
)
def test_tampered_upload_records_are_refused_and_nothing_is_kept(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    room: str,
    change: Callable[[Frames], Frames],
    check: str,
) -> None:
    data = write(tmp_path / "a", BIG)
    proxy.on_request = on_path("/upload", frames_change(change, response=False))
    refused(lambda: alice.client.upload(room, "input_1", data), check)
    # The refusal travels back through the Controller in the clear: it names no file
    # (the records seal their paths; an error must not give them back).
    (answer,) = [m.response for m in proxy.seen if m.path.endswith("/upload")]
    assert b"emails" not in answer, answer
    proxy.reset()
    alice.client.upload(room, "input_1", data)  # the refused upload left nothing behind


def test_a_body_cut_inside_a_frame_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def cut(message: Message) -> None:
        message.body = message.body[:-7]

    proxy.on_request = on_path("/upload", cut)
    refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a\n")),
        "frame-truncated",
    )


def test_a_lost_acknowledgement_is_retried_and_the_worker_says_it_has_exactly_this(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """The Controller garbles the Worker's acknowledgement (and answers the uploader's
    fate question itself): the client refuses it (it is sealed in the session), and a
    retry of the same data is acknowledged as already there, again under a session
    key; other data is still refused."""
    data = write(tmp_path / "a", "a@x\nb@x\n")

    def garble(message: Message) -> None:
        document = json.loads(message.response)
        document["ack"] = flip_b64u(document["ack"], 40)
        message.response = json.dumps(document).encode()

    proxy.on_response = on_path("/upload", garble)
    unconfirmed(lambda: alice.client.upload(room, "input_1", data), proxy, "record-authentication")
    proxy.reset()
    retried = alice.client.upload(room, "input_1", data)
    assert retried.already
    fresh = alice.client.status(room).worker
    assert fresh is not None and fresh.inputs["input_1"]["sha256"] == retried.sha256
    refused(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "b", "c@x\n")),
        "input-complete",
    )


def test_an_acknowledgement_from_another_upload_is_refused(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    acks: list[bytes] = []
    proxy.on_response = on_path("/upload", lambda message: acks.append(message.response))
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))

    def replay(message: Message) -> None:
        message.response = acks[0]  # alice's, sealed in her session: not bob's

    proxy.on_response = on_path("/upload", replay)
    unconfirmed(
        lambda: bob.client.upload(room, "input_2", write(tmp_path / "b", "b@x\n")),
        proxy,
        "record-authentication",
    )


def test_a_status_the_worker_did_not_sign_now_is_refused(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    """A Controller cannot say a room holds an input, or replay what it once held."""
    before: list[bytes] = []
    proxy.on_response = on_path("/status", lambda message: before.append(message.response))
    status = alice.client.status(room)
    assert status.worker is not None and status.worker.inputs == {}
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))

    def replay(message: Message) -> None:
        message.response = before[0]

    def claim_done(message: Message) -> None:
        document = json.loads(message.response)
        document["status"]["state"] = "done"
        message.response = json.dumps(document).encode()

    for change, check in ((replay, "status-nonce"), (claim_done, "status-signature")):
        proxy.on_response = on_path("/status", change)
        answer = alice.client.status(room)
        assert answer.worker is None and answer.unverified is not None
        assert answer.unverified.startswith(f"{check}:")
    # What run (and run --wait) says is that status too: a forged "done" is refused.
    proxy.reset()
    bob.client.upload(room, "input_2", write(tmp_path / "b", "b@x\n"))
    proxy.on_response = on_path("/status", claim_done)
    refused(lambda: alice.client.run(room, wait=True, poll_s=0.1), "status-signature")


def test_what_only_the_controller_says_is_never_shown_as_verified(
    alice: User,
    proxy: TamperingProxy,
    room: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The Worker's status is forged (so not verified) and the Controller's own answer
    claims to be verified and done: the command line says neither."""

    def forge(message: Message) -> None:
        document = json.loads(message.response)
        document["status"]["state"] = "done"
        message.response = json.dumps(document).encode()

    def boast(message: Message) -> None:
        if message.method == "GET" and message.path == f"/v1/rooms/{room}":
            message.response = json.dumps({"state": "done", "verified": True}).encode()

    def both(message: Message) -> None:
        if message.path.endswith("/status"):
            forge(message)
        boast(message)

    proxy.on_response = both
    monkeypatch.setenv("CLEANROOM_HOME", str(alice.home))
    code = main(["status", room, "--output", "json", "--profile", alice.name])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["worker"]["verified"] is False
    assert document["worker"]["error"].startswith("status-signature:")
    assert document["controller"] == {
        "verified": False,
        "says": {"state": "done", "verified": True},
    }
    code = main(["status", room, "--profile", alice.name])
    text = capsys.readouterr().out
    assert code == 1
    assert "  Worker state:   done  [the Controller says: not verified]" in text
    assert "[signed by the Worker]" not in text


def test_what_the_controller_says_cannot_pad_itself_into_lines_of_its_own(
    alice: User,
    proxy: TamperingProxy,
    room: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Spaces are the one character a terminal acts on that is printed as it is: a
    Controller's state padded to the width of a terminal wrapped into lines that read
    as the Worker's signed ones."""
    width = 80
    prefix = "  Worker state:   running"
    spoof = "  state:          done  [signed by the Worker]"
    said = (
        "running"
        + " " * (width - len(prefix))
        + spoof
        + " " * (width - len(spoof))
        + "  run:            succeeded, exit status 0"
    )

    def claim_done(document: dict[str, object]) -> None:
        status = document["status"]
        assert isinstance(status, dict)
        status["state"] = "done"

    forge = json_change(claim_done, response=True)

    def tamper(message: Message) -> None:
        if message.path.endswith("/status"):
            forge(message)
        if message.method == "GET" and message.path == f"/v1/rooms/{room}":
            message.response = json.dumps({"state": said}).encode()

    proxy.on_response = tamper
    monkeypatch.setenv("CLEANROOM_HOME", str(alice.home))
    assert main(["status", room, "--profile", alice.name]) == 1
    text = capsys.readouterr().out
    # The lines a terminal of that width shows.
    shown = [line[i : i + width] for line in text.splitlines() for i in range(0, len(line), width)]
    assert not [line for line in shown if line.lstrip().startswith(("state:", "run:"))], shown
    (line,) = [line for line in text.splitlines() if line.startswith("  Worker state:")]
    assert "  " not in line.removeprefix("  Worker state:   ").split("  [the Controller")[0]
    assert "[signed by the Worker]" not in text

    # The same padding in a refusal that quotes the Controller's answer.
    def unsigned(message: Message) -> None:
        if message.path.endswith("/status"):
            message.response = json.dumps({"status": {}, said: 1}).encode()

    proxy.on_response = unsigned
    assert main(["status", room, "--profile", alice.name]) == 1
    text = capsys.readouterr().out
    shown = [line[i : i + width] for line in text.splitlines() for i in range(0, len(line), width)]
    assert not [line for line in shown if line.lstrip().startswith(("state:", "run:"))], shown
    (line,) = [line for line in text.splitlines() if line.startswith("  Worker:")]
    assert "running state: done" in line
    assert "  " not in line.removeprefix("  Worker:         NOT VERIFIED: ")


@pytest.fixture
def finished(alice: User, bob: User, tmp_path: Path, room: str) -> str:
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\nb@x\n"))
    bob.client.upload(room, "input_2", write(tmp_path / "b", "b@x\nc@x\n"))
    assert alice.client.run(room, wait=True, poll_s=0.1).succeeded
    return room


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (lambda f: [f[1], f[0], *f[2:]], "record-counter"),
        (lambda f: f[1:], "record-counter"),
        (lambda f: [f[0], f[0], *f[1:]], "record-counter"),
        (lambda f: f[:-1], "record-truncated"),
    ],
    ids=["reordered", "dropped", "duplicated", "truncated"],
)
def test_tampered_download_records_are_refused_and_nothing_is_written(
    alice: User,
    tmp_path: Path,
    proxy: TamperingProxy,
    finished: str,
    change: Callable[[Frames], Frames],
    check: str,
) -> None:
    proxy.on_response = on_path("/download", frames_change(change, response=True))
    target = tmp_path / "out"
    refused(lambda: alice.client.download(finished, "output_1", target), check)
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")] == []


def test_a_tampered_receipt_is_refused(alice: User, proxy: TamperingProxy, finished: str) -> None:
    def tamper(document: dict[str, object]) -> None:
        receipt = document["receipt"]
        assert isinstance(receipt, dict)
        receipt["status"] = "failed"

    proxy.on_response = on_path("/receipt", json_change(tamper, response=True))
    refused(lambda: alice.client.receipt(finished), "receipt-signature")


def _coded_twice(size: int) -> bytes:
    """``size`` zero digits gzipped twice: a few hundred bytes for hundreds of MiB."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"0" * (1 << 20)
    parts = [outer.compress(inner.compress(block)) for _ in range(size >> 20)]
    return b"".join([*parts, outer.compress(inner.flush()), outer.flush()])


@pytest.mark.parametrize("suffix", ["/receipt", "/download"])
def test_an_answer_coded_twice_is_refused_unread_and_nothing_is_written(
    alice: User, tmp_path: Path, proxy: TamperingProxy, finished: str, suffix: str
) -> None:
    """The Controller answers the receipt, or the download, with 256 MiB of zeros coded
    ``gzip, gzip`` in 587 bytes: httpx inflated the one part whole before the
    client's 64 MiB bound was checked (1 GiB from 1,828 bytes took 2.1 GiB of the
    client; found by h34). Refused unread; nothing of the download written."""
    body = _coded_twice(256 << 20)

    def coded(message: Message) -> None:
        message.response = body
        message.answer_headers = {"content-encoding": "gzip, gzip"}

    proxy.on_response = on_path(suffix, coded)
    target = tmp_path / "out"
    refused(lambda: alice.client.download(finished, "output_1", target), "answer-encoding")
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")] == []


def _relayed(proxy: TamperingProxy) -> tuple[bytes, set[bytes]]:
    """Everything the Controller relayed (requests and answers), and every 32-byte value
    written in base64url in its JSON: what it could try as a salt."""
    seen = b"\n".join(part for m in proxy.seen for part in (m.body, m.response))
    found: set[bytes] = {bytes(32)}

    def strings(value: object) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield key
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    for message in proxy.seen:
        for part in (message.body, message.response):
            try:
                document = json.loads(part)
            except ValueError:
                continue  # record frames: their payload is encrypted
            for text in strings(document):
                if len(text) == 43:
                    with contextlib.suppress(CheckFailed):
                        found.add(from_b64u(text, "salt", size=32))
    return seen, found


def _guesses(kind: str, object_id: str, files: dict[str, bytes], salts: set[bytes]) -> set[str]:
    """The digests of every manifest of ``files`` (of an ``input`` or an ``output``) that
    the Controller can write: in either version of the format, without a salt or with
    any it has seen."""
    listed = {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }
    manifest_type = "upload" if kind == "input" else "output"
    digests = set()
    for version in ("v1", "v2"):
        base = {"type": f"cleanroom/{manifest_type}-manifest/{version}", kind: object_id}
        for salt in [None, *salts]:
            manifest = {**base, "files": listed}
            if salt is not None:
                manifest["salt"] = b64u(salt)
            digests.add(hashlib.sha256(canonical(manifest)).hexdigest())
    return digests


def test_what_the_controller_relays_confirms_no_guess_of_the_data(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy, finished: str
) -> None:
    """The status and the receipts name each input and output by a digest, and the
    Controller relays them in the clear. Unsalted, the digest of an output such as
    ``{"overlap": 1, "k": 3}`` (whose names and format the function's code tells) would
    give the result away to whoever tries the few values it can take. Each manifest
    holds a salt that only the parties and the Worker see, so even a right guess of
    every input and output is confirmed by nothing the Controller relays."""
    outputs = {}
    for user, output_id in ((alice, "output_1"), (bob, "output_2")):
        result = user.client.download(finished, output_id, tmp_path / output_id)
        outputs[output_id] = {name: (result.directory / name).read_bytes() for name in result.files}
    alice.client.status(finished)  # the signed status names each input's digest too
    relayed, salts = _relayed(proxy)
    inputs = {"input_1": b"a@x\nb@x\n", "input_2": b"b@x\nc@x\n"}  # the fixture's
    receipt = alice.client.receipt(finished).receipt
    for input_id, data in inputs.items():
        assert receipt["inputs"][input_id]["sha256"].encode() in relayed  # it sees each
        guesses = _guesses("input", input_id, {"emails.csv": data}, salts)
        assert not {g for g in guesses if g.encode() in relayed}, input_id
    for output_id, files in outputs.items():
        assert receipt["outputs"][output_id]["sha256"].encode() in relayed
        guesses = _guesses("output", output_id, files, salts)
        assert not {g for g in guesses if g.encode() in relayed}, output_id
    # The guess the Controller cannot make: with the uploader's salt, the digest is the
    # receipt's (so the reconstruction above is the right one).
    salt = input_salt(alice.client.profile.user_key, receipt["work_id"], "input_1")
    right = _guesses("input", "input_1", {"emails.csv": inputs["input_1"]}, {salt})
    assert receipt["inputs"]["input_1"]["sha256"] in right


# --------------------------------------------------------------- access


def _sent(proxy: TamperingProxy) -> list[str]:
    """The paths the Controller was sent, but the manager's own health checks."""
    return [m.path for m in proxy.seen if m.path != "/v1/health"]


def _refused_before_and_by_the_worker(
    action: Callable[[], object],
    check: str,
    proxy: TamperingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client refuses ``action`` by the approved spec's rule ``check`` before anything
    reaches the Controller (saying so and whose rule it is); a client without that
    pre-check is refused by the Worker with the same rule, in its session."""
    proxy.reset()
    error = refused(action, check)
    assert _sent(proxy) == [], "the client sent something the approved spec does not allow"
    assert "by the spec of the Work-ID you approved; nothing was sent" in str(error), error
    assert isinstance(error, CheckFailed) and error.hint and "inspect" in error.hint
    with monkeypatch.context() as patched:
        patched.setattr(CleanRoomClient, "permitted", lambda *_args: None)
        worker = refused(action, check)
    assert isinstance(worker, ServerError), worker  # the Worker's own refusal, relayed
    assert _sent(proxy) != []


def test_upload_by_a_user_who_does_not_own_the_input(
    bob: User, tmp_path: Path, room: str, proxy: TamperingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write(tmp_path / "b", "b\n")
    _refused_before_and_by_the_worker(
        lambda: bob.client.upload(room, "input_1", data),
        "input-owner", proxy, monkeypatch,
    )  # fmt: skip


def test_upload_to_an_output_id(
    alice: User, tmp_path: Path, room: str, proxy: TamperingProxy
) -> None:
    # The client knows the spec it approved: it says so before any session (the
    # Worker's own refusal, `purpose`, is tested in tests/protocol/test_handshake.py).
    error = refused(
        lambda: alice.client.upload(room, "output_1", write(tmp_path / "a", "a\n")), "input-id"
    )
    assert str(error).startswith(
        f"input-id: no input output_1 in clean room {room} (it has input_1, input_2)"
    )
    assert proxy.paths("/sessions") == []


def test_download_by_a_non_recipient(
    bob: User, tmp_path: Path, finished: str, proxy: TamperingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused_before_and_by_the_worker(
        lambda: bob.client.download(finished, "output_1", tmp_path / "x"),
        "output-recipient", proxy, monkeypatch,
    )  # fmt: skip


def test_run_by_a_non_runner(
    bob: User, room: str, proxy: TamperingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refused_before_and_by_the_worker(lambda: bob.client.run(room), "runner", proxy, monkeypatch)
