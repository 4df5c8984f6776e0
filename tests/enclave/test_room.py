"""A clean room's data plane end to end in one process: upload, run, download, receipt.

Needs what the sandbox needs (root, bubblewrap, util-linux, /usr/bin/python3.11).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.client.rooms import CleanRoomClient, _input_files, _Upload
from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.errors import RunError, UploadError
from cleanroom.enclave.room import SESSION_LIFETIME_S, CleanRoom, seal_bundle
from cleanroom.enclave.runner import Sandbox, installed_runtime
from cleanroom.enclave.store import SealedStore
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.enclave.worker_service import WorkerService
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.acks import open_ack
from cleanroom.protocol.bundle import function_id, pack
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import AccessDenied, MessageFormatError, ProtocolError
from cleanroom.protocol.handshake import ClientHandshake, SessionKeys
from cleanroom.protocol.handshake_v2 import ClientHandshakeV2
from cleanroom.protocol.keys import load_spki, user_id
from cleanroom.protocol.manifest import SALT_BYTES, UPLOAD_MANIFEST_TYPE
from cleanroom.protocol.receipt import verify_receipt
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.run_request import seal_run_request
from cleanroom.protocol.spec import (
    DownloadPurpose,
    RunPurpose,
    UploadPurpose,
    WorkSpec,
)
from cleanroom.protocol.status import verify_status
from cleanroom.tee.measure import measure
from tests.protocol.fixtures import ALICE, ALICE_ID, BOB, SPEC_DOCUMENT
from tests.sandbox import confined

HANDLER = """
import pathlib

def run():
    a = set(pathlib.Path("inputs/input_1/emails.csv").read_text().split())
    b = set(pathlib.Path("inputs/input_2/emails.csv").read_text().split())
    pathlib.Path("outputs/output_1/overlap.txt").write_text(str(len(a & b)))
"""
ALICE_DATA = b"a@x\nb@x\nc@x\n"
BOB_DATA = b"b@x\nc@x\nd@x\n"


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


@pytest.fixture
def room(tmp_path: Path, confinement: Sandbox) -> CleanRoom:
    return make_room(tmp_path, confinement, HANDLER)


def make_room(tmp_path: Path, confinement: Sandbox, handler: str, **spec_fields: Any) -> CleanRoom:
    source = tmp_path / "function"
    source.mkdir()
    (source / "handler.py").write_text(handler)
    bundle = pack(source)
    spec = WorkSpec.parse({**SPEC_DOCUMENT, "function": function_id(bundle), **spec_fields})
    platform = SimulatedPlatform.init(tmp_path / "platform", now=int(time.time()))
    attester_image, worker_image = measure("attester"), measure("worker")
    attester = Attester(
        platform.enclave(attester_image.identity()),
        WorkerAllowList.from_manifest_config(attester_image.manifest["config"]),
    )
    store = SealedStore(tmp_path / "worker" / "sealed")
    sealed_id = seal_bundle(store, io.BytesIO(bundle))
    worker = WorkerEnclave(platform.enclave(worker_image.identity()), spec, sealed_id)
    admission = attester.admit(*worker.admission_request(attester.target_info()))
    worker.complete_admission(
        admission.report.to_bytes(), attester_mr_signer=worker_image.mr_signer
    )
    return CleanRoom(
        worker,
        store,
        sandbox=confinement,
        runtime=installed_runtime("python3.11"),
        scratch_root=tmp_path / "worker" / "run",
    )


def session(room: CleanRoom, user: ec.EllipticCurvePrivateKey, purpose: Any) -> SessionKeys:
    client = ClientHandshake(
        user_key=user,
        work_id=room.worker.spec.work_id,
        worker_id=room.worker.worker_id,
        worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        quote_sha256=bytes(32),
        purpose=purpose,
    )
    return client.finish(*room.open_session(client.init, client.init_signature))


def manifest(input_id: str, files: dict[str, bytes]) -> bytes:
    return canonical(
        {
            "type": UPLOAD_MANIFEST_TYPE,
            "input": input_id,
            "salt": b64u(bytes(SALT_BYTES)),  # a client's own choice: any 32 bytes
            "files": {
                n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                for n, d in files.items()
            },
        }
    )


def upload_frames(keys: SessionKeys, input_id: str, files: dict[str, bytes]) -> list[bytes]:
    sender = RecordSender(keys.client_to_worker, keys.session_id)
    frames = [sender.seal(f"{input_id}/{name}", data, final=True) for name, data in files.items()]
    frames.append(sender.seal(f"{input_id}/.manifest", manifest(input_id, files), final=True))
    return frames


def run(room: CleanRoom, user: ec.EllipticCurvePrivateKey = ALICE) -> tuple[dict[str, Any], bytes]:
    """The run, by ``user``'s run session and its sealed run request."""
    keys = session(room, user, RunPurpose(op="run"))
    return room.run(keys.session_id, seal_run_request(keys))


def upload(room: CleanRoom, user: ec.EllipticCurvePrivateKey, input_id: str, data: bytes) -> str:
    keys = session(room, user, UploadPurpose(op="upload", input=input_id))
    room.upload(keys.session_id, upload_frames(keys, input_id, {"emails.csv": data}))
    return hashlib.sha256(manifest(input_id, {"emails.csv": data})).hexdigest()


def test_the_whole_data_plane(room: CleanRoom) -> None:
    alice_digest = upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, signature = run(room)
    verify_receipt(
        receipt,
        signature,
        worker_key=load_spki(room.worker.worker_key_spki, "worker_key"),
        spec=room.worker.spec,
        own_inputs={"input_1": alice_digest},
    )
    assert receipt["status"] == "succeeded"
    assert receipt["inputs"]["input_2"]["by"] == user_id(BOB.public_key())

    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1"))
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received = {
        path: data for path, _i, _f, data in map(receiver.open, room.download(keys.session_id))
    }
    receiver.close()
    assert received["output_1/overlap.txt"] == b"2"
    listed = json.loads(received["output_1/.manifest"])
    assert hashlib.sha256(canonical(listed)).hexdigest() == receipt["outputs"]["output_1"]["sha256"]


def test_run_before_every_input_is_refused(room: CleanRoom) -> None:
    upload(room, ALICE, "input_1", ALICE_DATA)
    with pytest.raises(RunError) as caught:
        run(room)
    assert caught.value.check == "inputs-missing"


def test_upload_after_the_run_and_second_run_are_refused(room: CleanRoom) -> None:
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    run(room)
    keys = session(room, BOB, UploadPurpose(op="upload", input="input_2"))
    with pytest.raises(UploadError) as caught:
        room.upload(keys.session_id, upload_frames(keys, "input_2", {"x": b""}))
    assert caught.value.check == "input-complete"
    with pytest.raises(RunError) as second:
        run(room)
    assert second.value.check == "run-state"


def test_input_is_uploaded_once(room: CleanRoom) -> None:
    upload(room, ALICE, "input_1", ALICE_DATA)
    with pytest.raises(UploadError) as caught:
        upload(room, ALICE, "input_1", b"other data\n")
    assert caught.value.check == "input-complete"
    assert "other content" in str(caught.value)


def test_the_same_input_again_is_acknowledged_as_already_there(room: CleanRoom) -> None:
    """A retry after a lost acknowledgement: measured, compared, nothing stored again."""
    digest = upload(room, ALICE, "input_1", ALICE_DATA)
    stored = sorted(room._store._directory.iterdir())
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}):
        stream.feed(frame)
    completed = stream.finish()
    assert completed.sha256 == digest and stream.already
    ack = open_ack(keys, stream.acknowledgement(), input_id="input_1", sha256=digest,
                   size=len(ALICE_DATA))  # fmt: skip
    assert ack.already and ack.rows is None
    assert sorted(room._store._directory.iterdir()) == stored  # nothing new on disk
    # Other content is still refused, and the input is what was first uploaded.
    with pytest.raises(UploadError):
        upload(room, ALICE, "input_1", ALICE_DATA + b"e@x\n")
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["inputs"]["input_1"]["sha256"] == digest


def test_a_first_upload_is_acknowledged_as_new_under_its_session(room: CleanRoom) -> None:
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    stream = room.begin_upload(keys.session_id)
    for frame in upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}):
        stream.feed(frame)
    completed = stream.finish()
    assert not stream.already
    ack = open_ack(keys, stream.acknowledgement(), input_id="input_1",
                   sha256=completed.sha256, size=len(ALICE_DATA))  # fmt: skip
    assert not ack.already
    other = session(room, BOB, UploadPurpose(op="upload", input="input_2"))
    with pytest.raises(ProtocolError):  # sealed for its own session only
        open_ack(other, stream.acknowledgement(), input_id="input_1", sha256=completed.sha256,
                 size=len(ALICE_DATA))  # fmt: skip


def test_the_signed_status_says_what_the_room_holds(room: CleanRoom) -> None:
    nonce = bytes(range(32))
    key = load_spki(room.worker.worker_key_spki, "worker_key")
    spec = room.worker.spec

    def signed() -> dict[str, Any]:
        return verify_status(*room.status(nonce), worker_key=key, spec=spec, nonce=nonce)

    assert signed()["state"] == "collecting" and signed()["inputs"] == {}
    digest = upload(room, ALICE, "input_1", ALICE_DATA)
    held = signed()
    assert held["inputs"] == {"input_1": {"by": user_id(ALICE.public_key()), "sha256": digest}}
    assert held["outputs"] == [] and held["run"] is None
    upload(room, BOB, "input_2", BOB_DATA)
    run(room)
    ended = signed()
    assert (ended["state"], ended["outputs"]) == ("done", ["output_1"])
    assert ended["run"] == {"status": "succeeded", "exit_code": 0}
    with pytest.raises(MessageFormatError):
        room.status(b"short")


def test_tampered_upload_is_aborted_and_can_be_restarted(room: CleanRoom) -> None:
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    frames = upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA})
    with pytest.raises(ProtocolError):
        room.upload(keys.session_id, [frames[0], frames[0], frames[1]])  # a duplicated record
    with pytest.raises(UploadError):  # truncated: the manifest never came
        keys2 = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
        room.upload(
            keys2.session_id, upload_frames(keys2, "input_1", {"emails.csv": ALICE_DATA})[:1]
        )
    upload(room, ALICE, "input_1", ALICE_DATA)  # a fresh session starts over cleanly


def test_a_session_serves_its_purpose_once(room: CleanRoom) -> None:
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    with pytest.raises(UploadError) as caught:
        room.run(keys.session_id, seal_run_request(keys))
    assert caught.value.check == "session-purpose"
    # A refused misuse does not consume the session; a real use does.
    room.upload(keys.session_id, upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}))
    with pytest.raises(UploadError) as again:
        room.upload(keys.session_id, upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}))
    assert again.value.check == "session-used"


def test_an_upload_body_not_sealed_in_its_session_is_refused_and_keeps_the_session(
    room: CleanRoom,
) -> None:
    """The Controller sees an upload session's id in the clear and can send a body of
    its own to it before the uploader's arrives: a made-up frame, another session's
    records. Each is refused, and the uploader's own body is still taken in that session
    (the made-up body used to use it up: her upload was refused session-used)."""
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    other = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    for name, forged, check in [
        ("zeros", [bytes(120)], "record-frame"),
        ("another session's", upload_frames(other, "input_1", {"emails.csv": b"z@x\n"}),
         "record-authentication"),
    ]:  # fmt: skip
        with pytest.raises(ProtocolError) as caught:
            room.upload(keys.session_id, forged)
        assert caught.value.check == check, (
            f"{name} body: expected check {check}, got {caught.value.check}: {caught.value}"
        )
    completed = room.upload(
        keys.session_id, upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA})
    )  # the session is intact, and so is the input: no upload of it is left in progress
    assert (
        completed.sha256
        == hashlib.sha256(manifest("input_1", {"emails.csv": ALICE_DATA})).hexdigest()
    )
    with pytest.raises(UploadError) as used:
        room.upload(keys.session_id, upload_frames(keys, "input_1", {"emails.csv": ALICE_DATA}))
    assert used.value.check == "session-used"  # a real use does take it


def test_a_run_request_not_sealed_in_its_session_is_refused_and_keeps_the_session(
    room: CleanRoom,
) -> None:
    """Only whoever holds the run session's keys starts the run: the Controller sees the
    session id in the clear, and until the run request was a record under ``k_c2w`` it
    could start a run with a session the runner opened and never used."""
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    keys = session(room, ALICE, RunPurpose(op="run"))
    other = session(room, ALICE, RunPurpose(op="run"))
    another_path = RecordSender(keys.client_to_worker, keys.session_id).seal(
        "run/other", b"{}", final=True
    )
    for name, forged, check in [
        ("empty", b"", "record-frame"),
        ("zeros", bytes(120), "record-frame"),
        ("another session's", seal_run_request(other), "record-authentication"),
        ("another record", another_path, "run-request"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            room.begin_run(keys.session_id, forged)
        assert caught.value.check == check, (
            f"{name} request: expected check {check}, got {caught.value.check}: {caught.value}"
        )
        assert room.state == "collecting", f"{name} request: expected no run, got {room.state}"
    receipt, _ = room.run(keys.session_id, seal_run_request(keys))  # the session is intact
    assert receipt["status"] == "succeeded"


def test_a_run_init_replayed_into_another_worker_of_the_work_id_starts_nothing(
    room: CleanRoom, tmp_path: Path, confinement: Sandbox
) -> None:
    """A v2 init names no Worker (v1's named the quote and the Worker id): a Controller
    that started a second Worker of the same Work-ID can replay a runner's init there
    and get a session. It cannot make the run request, which needs the session's keys."""
    (tmp_path / "other").mkdir()
    other = make_room(tmp_path / "other", confinement, HANDLER)
    assert other.worker.spec.work_id == room.worker.spec.work_id
    for each in (room, other):
        upload(each, ALICE, "input_1", ALICE_DATA)
        upload(each, BOB, "input_2", BOB_DATA)
    handshake = ClientHandshakeV2(
        user_key=ALICE, work_id=room.worker.spec.work_id, purpose=RunPurpose(op="run")
    )
    resp, signature = room.open_session(handshake.init, handshake.init_signature)
    keys = handshake.finish(
        resp, signature, worker_key=load_spki(room.worker.worker_key_spki, "worker_key")
    )
    request = seal_run_request(keys)
    replayed, _ = other.open_session(handshake.init, handshake.init_signature)
    for forged in (request, b""):
        with pytest.raises(ProtocolError) as caught:
            other.begin_run(replayed["session_id"], forged)
        assert caught.value.check in ("record-authentication", "record-frame"), (
            f"run with a replayed init: expected record-authentication or record-frame, "
            f"got {caught.value.check}: {caught.value}"
        )
    assert other.state == "collecting", f"expected no run in the other Worker, got {other.state}"
    receipt, _ = room.run(keys.session_id, request)
    assert receipt["status"] == "succeeded"


def test_a_request_held_back_past_the_sessions_lifetime_is_refused(room: CleanRoom) -> None:
    """The Controller holds a runner's sealed run request back (it tells her the Worker
    refused) and sends it when it likes: only within the session's lifetime."""
    now = [1_000_000.0]
    room._clock = lambda: now[0]
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    keys = session(room, ALICE, RunPurpose(op="run"))
    held = seal_run_request(keys)
    now[0] += SESSION_LIFETIME_S + 1
    with pytest.raises(UploadError) as caught:
        room.begin_run(keys.session_id, held)
    assert caught.value.check == "session-expired", (
        f"a run request {SESSION_LIFETIME_S + 1} s after the handshake: expected "
        f"session-expired, got {caught.value.check}: {caught.value}"
    )
    assert room.state == "collecting", f"expected no run, got {room.state}"
    session(room, BOB, UploadPurpose(op="upload", input="input_2"))  # prunes the old one
    with pytest.raises(UploadError) as gone:
        room.begin_run(keys.session_id, held)
    assert gone.value.check == "session-used", f"expected session-used, got {gone.value}"
    fresh = session(room, ALICE, RunPurpose(op="run"))
    now[0] += SESSION_LIFETIME_S - 1
    receipt, _ = room.run(fresh.session_id, seal_run_request(fresh))
    assert receipt["status"] == "succeeded"


def test_download_by_a_non_recipient_and_before_the_run(room: CleanRoom) -> None:
    with pytest.raises(AccessDenied) as caught:
        session(room, BOB, DownloadPurpose(op="download", output="output_1"))
    assert caught.value.check == "output-recipient"
    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1"))
    with pytest.raises(RunError) as early:
        room.download(keys.session_id)
    assert early.value.check == "run-state"
    # Asked too early, the session is not used up: it downloads once the run is done.
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    run(room)
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received = {path: data for path, *_, data in map(receiver.open, room.download(keys.session_id))}
    assert received["output_1/overlap.txt"] == b"2"


def test_delete_erases_and_refuses_everything_after(room: CleanRoom, tmp_path: Path) -> None:
    upload(room, ALICE, "input_1", ALICE_DATA)
    room.delete()
    assert not (tmp_path / "worker" / "sealed").exists()
    with pytest.raises(RunError) as caught:
        session(room, ALICE, UploadPurpose(op="upload", input="input_2"))
    assert caught.value.check == "deleted"


def test_no_plaintext_left_on_disk(room: CleanRoom, tmp_path: Path) -> None:
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    run(room)
    for path in (tmp_path / "worker").rglob("*"):
        if path.is_file():
            assert b"a@x" not in path.read_bytes() and b"d@x" not in path.read_bytes()
    assert list((tmp_path / "worker" / "run").iterdir()) == []


def test_an_output_name_the_store_refuses_is_not_quoted_to_the_controller(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """A file named with a backslash, made of another party's data: the sealed store
    refuses such a name, and its refusal (the name, in the clear) became the room's
    failure, which its status and GET /state give the Controller. It is left out; so
    is a file named as the output's manifest, which made the download fail."""
    handler = r"""
import pathlib

def run():
    out = pathlib.Path("outputs/output_1")
    theirs = pathlib.Path("inputs/input_2/emails.csv").read_text().replace("\n", ",")
    (out / ("\\" + theirs)).write_text("x")
    (out / ".manifest").write_text("{}")
    (out / "overlap.txt").write_text("2")
"""
    room = make_room(tmp_path, confinement, handler)
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    assert room.failure is None
    document, _signature = room.status(bytes(32))
    assert "d@x" not in json.dumps(document)
    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1"))
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received = {
        path: data for path, _i, _f, data in map(receiver.open, room.download(keys.session_id))
    }
    receiver.close()
    assert sorted(received) == ["output_1/.manifest", "output_1/overlap.txt"]
    assert set(json.loads(received["output_1/.manifest"])["files"]) == {"overlap.txt"}


def test_the_log_is_never_stored_as_a_file_named_as_a_directory_of_the_output(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The function's log goes to its output as function.log, beside what the function
    wrote there. A function that wrote a directory of that name (function.log/x) had
    the log stored as a file of the same name: an output no recipient's disk can hold,
    signed "succeeded", whose every download failed. The log takes another name."""
    handler = """
import pathlib

def run():
    print("the function's log")
    (pathlib.Path("outputs/output_1/function.log")).mkdir()
    (pathlib.Path("outputs/output_1/function.log/x")).write_text("x")
"""
    room = make_room(tmp_path, confinement, handler, logs="output_1")
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1"))
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received = {
        path: data for path, _i, _f, data in map(receiver.open, room.download(keys.session_id))
    }
    receiver.close()
    files = sorted(json.loads(received.pop("output_1/.manifest"))["files"])
    assert files == ["function.1.log", "function.log/x"]
    assert received["output_1/function.1.log"] == b"the function's log\n"
    # What a recipient writes: every name a file, none a directory of another.
    for name in files:
        target = tmp_path / "download" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(received[f"output_1/{name}"])


def download_all(room: CleanRoom, output_id: str = "output_1") -> dict[str, bytes]:
    """Every object of an output's download, as its recipient opens them (an object
    in several records joined)."""
    keys = session(room, ALICE, DownloadPurpose(op="download", output=output_id))
    receiver = RecordReceiver(keys.worker_to_client, keys.session_id)
    received: dict[str, bytes] = {}
    for path, _index, _final, data in map(receiver.open, room.download(keys.session_id)):
        received[path] = received.get(path, b"") + data
    receiver.close()
    assert receiver.finished(f"{output_id}/.manifest")
    return received


def test_an_output_of_many_files_is_downloaded_with_its_whole_manifest(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """An output's manifest grows with its files (a name, a size, a digest each): 1,200
    files named in 600 bytes make it 0.8 MiB, 1,800 of them 1.2 MiB, past what one
    record holds (1 MiB). It was sent as one record, so the Worker's download failed at
    its end, every time, for a run signed "succeeded" (found by h16's red team). It is
    sent in records of at most 1 MiB, which the recipient joins."""
    handler = """
import pathlib

def run():
    out = pathlib.Path("outputs/output_1") / ("d" * 250) / ("e" * 250)
    out.mkdir(parents=True)
    for number in range(1800):
        (out / f"{number:04d}{'f' * 90}").write_text(str(number))
"""
    room = make_room(tmp_path, confinement, handler)
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    received = download_all(room)
    manifest = received.pop("output_1/.manifest")
    assert len(manifest) > 1 << 20
    assert hashlib.sha256(manifest).hexdigest() == receipt["outputs"]["output_1"]["sha256"]
    assert len(json.loads(manifest)["files"]) == len(received) == 1800


def test_an_output_file_whose_path_no_record_can_name_is_left_out(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """A record names its object in at most 1,024 bytes (records.MAX_PATH), output id
    and "/" included; the sandbox released a file named in up to 1,024 bytes below its
    output, so a name of 1,020 bytes was sealed, listed in the manifest and signed, and
    every download of the output failed on it (found by h16's red team). Such a file
    is left out, as names no output file may have are."""
    handler = """
import pathlib

def run():
    out = pathlib.Path("outputs/output_1")
    deep = out / ("a" * 200) / ("b" * 200) / ("c" * 200) / ("g" * 200)
    deep.mkdir(parents=True)
    (deep / ("d" * 215)).write_text("too long to name")  # 1,019 bytes, 1,028 in all
    (deep / ("e" * 200)).write_text("fits")  # 1,004 bytes, 1,013 in all
    (out / "overlap.txt").write_text("2")
"""
    room = make_room(tmp_path, confinement, handler)
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    received = download_all(room)
    fits = "output_1/" + "/".join(("a" * 200, "b" * 200, "c" * 200, "g" * 200, "e" * 200))
    assert sorted(received) == sorted(["output_1/.manifest", "output_1/overlap.txt", fits])
    files = json.loads(received["output_1/.manifest"])["files"]
    assert sorted(files) == sorted(["overlap.txt", fits.removeprefix("output_1/")])


def test_a_failed_run_names_no_input_file_in_the_clear(
    room: CleanRoom, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that fills the disk (or its inodes) under the run's scratch directory makes
    staging fail on an uploader's file, and the kernel's error names it: it became the
    room's failure (its signed status, GET /state) and the Worker's log, both in the clear
    (rt/failure_names_file.py did it to a real Worker with a tmpfs of 9 inodes)."""
    secret = "patients-hiv-positive.csv"
    for user, input_id in ((ALICE, "input_1"), (BOB, "input_2")):
        keys = session(room, user, UploadPurpose(op="upload", input=input_id))
        room.upload(keys.session_id, upload_frames(keys, input_id, {secret: b"x\n"}))

    def full_disk(scratch: Path) -> None:
        target = scratch / "inputs" / "input_1" / secret
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(room, "_stage", full_disk)
    keys = session(room, ALICE, RunPurpose(op="run"))
    service = SimpleNamespace(room=room)
    room.begin_run(keys.session_id, seal_run_request(keys))
    with caplog.at_level(logging.INFO, logger="cleanroom.enclave"):
        WorkerService._run(service)  # type: ignore[arg-type]
    assert room.state == "failed"
    document, _signature = room.status(bytes(32))
    assert document["detail"] == "OSError: No space left on device"
    assert secret not in json.dumps(document)
    assert secret not in caplog.text
    assert "run failed" in caplog.text


LEAKING_HANDLER = """
import pathlib
def run():
    # A secret of the data (the overlap's size) in what the run uses: its disk to the
    # page, its memory to the MiB, its CPU time; its outputs say nothing.
    a = set(pathlib.Path("inputs/input_1/emails.csv").read_text().split())
    b = set(pathlib.Path("inputs/input_2/emails.csv").read_text().split())
    secret = len(a & b)
    pathlib.Path("/tmp/pages").write_bytes(b"x" * (4096 * (100 + secret)))
    held = bytearray((64 + 8 * secret) << 20)
    pathlib.Path("outputs/output_1/nothing.txt").write_text("nothing")
"""


def test_the_workers_log_in_the_clear_names_no_figure_the_function_chose(
    tmp_path: Path, confinement: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The Worker's log is the host's to read (the Controller writes it to a file). It
    said each run's peak memory and disk to the byte and its CPU time to the
    nanosecond: figures the function sets as it likes, about 18 bits of disk and 19 of
    memory per run under the default limits, past the receipt and every recipient
    (h26's red team; the disk of this run was 4,096 x (100 + the overlap's size) bytes
    and some). It says the status, the exit status and the seconds, as the signed status
    and the receipt do."""
    room = make_room(tmp_path, confinement, LEAKING_HANDLER)
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    keys = session(room, ALICE, RunPurpose(op="run"))
    room.begin_run(keys.session_id, seal_run_request(keys))
    with caplog.at_level(logging.INFO, logger="cleanroom.enclave"):
        WorkerService._run(SimpleNamespace(room=room))  # type: ignore[arg-type]
    result = room.last_run
    assert result is not None and result.status == "succeeded", result
    assert result.disk_bytes is not None and result.disk_bytes >= 4096 * 102
    assert result.memory_peak_bytes is not None and result.memory_peak_bytes >= 80 << 20
    assert "run ended succeeded (exit 0)" in caplog.text
    for figure in (result.disk_bytes, result.memory_peak_bytes, result.cpu_seconds):
        assert str(figure) not in caplog.text
    said = f"run ended succeeded (exit 0) in {result.seconds:.2f} s; "
    assert said + "; ".join(result.confinement) in caplog.text


HOSTILE_NAMES = {
    "ansi": "a\x1b[31mred.csv",  # a terminal's colour, or an OSC sequence
    "newline": "line\nbreak.csv",
    "carriage-return": "fake.csv\rreal.csv",
    "delete": "del\x7f.csv",
    "c1": "c1\x9b31m.csv",
    "bidi-override": "report\u202ecsv.exe",  # shown as reportexe.csv
    "bidi-isolate": "x\u2066y.csv",
    "zero-width": "zero\u200bwidth.csv",
    "byte-order-mark": "\ufeffbom.csv",
    "private-use": "p\ue000.csv",
    "line-separator": "ls\u2028sep.csv",
    "in-a-directory": "dir\u202e/inner.csv",
    "option": "--checkpoint-action=exec=sh x.sh",  # `tar cf all.tar *` runs x.sh
    "option-directory": "-rf/x.csv",
    "git": ".git/config",  # core.fsmonitor: run by a prompt's `git status`
    "git-folded": ".GIT/hooks/post-checkout",
    # What Windows reads as more than a name: the console (the file's bytes written to
    # the recipient's terminal, raw), a hidden stream of a.csv, a.csv itself.
    "windows-device": "CON.csv",
    "windows-device-directory": "Lpt1 /x.csv",
    "windows-device-superscript": "com\u00b9",
    "alternate-stream": "a.csv:hidden",
    "windows-character": "what?.csv",
    "windows-dropped-end": "a.csv.",
}
TWINS = [
    ("Data.csv", "data.csv"),  # case
    ("caf\u00e9.csv", "cafe\u0301.csv"),  # NFC and NFD
    ("\ufb01le.csv", "file.csv"),  # NFKC: the ligature fi
    ("STRASSE.csv", "stra\u00dfe.csv"),  # case folding, not lower()
    ("same", "SAME/inner.csv"),  # a file and a directory
]


def test_output_names_a_terminal_acts_on_or_a_disk_holds_as_one_are_left_out(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """A function's author chooses its output files' names, and each recipient's disk and
    terminal get them: the Worker released every UTF-8 name byte for byte, so ESC, CR and
    bidirectional overrides reached a recipient's listing raw (``report\\u202ecsv.exe``
    reads ``reportexe.csv``), and two names that a case- or normalisation-insensitive disk
    holds as one (macOS, Windows) failed every download there, or had one file stand for
    the other (h16, h19's red team). Every such file is left out, both twins, and the
    log's recipient told how many; the others are released, and the client writes them."""
    written = [*HOSTILE_NAMES.values(), *(name for pair in TWINS for name in pair)]
    kept = [
        "ok.csv",
        "sub/x.csv",
        "SUB/y.csv",
        "caf\u00e9-only.csv",
        "\u00e9t\u00e9/r.csv",
        "x-y.csv",
        ".gitignore",
        "a/.github/x.csv",
        "console.csv",
        "com10.csv",
        "a.csv",
        "aux_data/x.csv",
    ]
    handler = f"""
import pathlib

def run():
    out = pathlib.Path("outputs/output_1")
    for name in {[*written, *kept]!r}:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
"""
    room = make_room(tmp_path, confinement, handler, logs="output_1")
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    received = download_all(room)
    listed = json.loads(received["output_1/.manifest"])["files"]
    assert sorted(listed) == sorted([*kept, "function.log"])
    # The log's recipient is told how many (sealed to it, as the log is).
    log = received["output_1/function.log"]
    assert f"[cleanroom] {len(written)} output file(s) left out for their names".encode() in log
    # The client writes what was released (its own checks pass on it).
    keys = session(room, ALICE, DownloadPurpose(op="download", output="output_1"))
    client: Any = CleanRoomClient.__new__(CleanRoomClient)
    target = tmp_path / "download"
    target.mkdir()
    files, _manifest = client._receive(
        iter(room.download(keys.session_id)), keys, "output_1", target, None
    )
    assert sorted(files) == sorted([*kept, "function.log"])
    on_disk = [p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()]
    assert sorted(on_disk) == sorted([*kept, "function.log"])


def test_an_output_named_as_a_windows_device_keeps_its_files(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """An output's id is the spec's, not the function's, and ``aux`` is one: the Worker
    checks the names below it as the supervisor does, so an output's id never leaves out
    its files (the Worker checked the whole name, and refused the run's stream as
    ``run-outputs``)."""
    handler = """
import pathlib

def run():
    pathlib.Path("outputs/aux/r.csv").write_text("kept")
"""
    room = make_room(tmp_path, confinement, handler, outputs={"aux": ALICE_ID})
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    received = download_all(room, "aux")
    assert received["aux/r.csv"] == b"kept"
    assert json.loads(received["aux/.manifest"])["files"].keys() == {"r.csv"}


def test_the_log_takes_no_name_a_disk_holds_as_one_of_the_functions_files(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """The Worker names the log function.log unless the function's files hold that name;
    it compared names exactly, so beside the function's FUNCTION.LOG the log was
    function.log, and a recipient on a case-insensitive disk got one file for two."""
    handler = """
import pathlib

def run():
    print("the function's log")
    pathlib.Path("outputs/output_1/FUNCTION.LOG").write_text("mine")
    pathlib.Path("outputs/output_1/Function.1.log").mkdir()
    pathlib.Path("outputs/output_1/Function.1.log/x").write_text("mine too")
"""
    room = make_room(tmp_path, confinement, handler, logs="output_1")
    upload(room, ALICE, "input_1", ALICE_DATA)
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    received = download_all(room)
    files = sorted(json.loads(received.pop("output_1/.manifest"))["files"])
    assert files == ["FUNCTION.LOG", "Function.1.log/x", "function.2.log"]
    assert received["output_1/function.2.log"] == b"the function's log\n"


def test_an_input_of_many_files_is_uploaded_with_its_whole_manifest(
    tmp_path: Path, confinement: Sandbox
) -> None:
    """An input's manifest grows with its files (a name, a size, a digest each): 20,000
    small files make 2.2 MiB, 12,000 of them 1.3 MiB, past what one record holds. The
    client sealed it as one, so the upload of a directory of 20,000 files failed with a
    ValueError once every file had been sent, and the Worker took at most 1 MiB of
    manifest (h16, h19's red team). The client's own upload, as it sends it, is taken,
    and the function sees every file."""
    handler = """
import pathlib

def run():
    names = sorted(p.name for p in pathlib.Path("inputs/input_1/customers").iterdir())
    pathlib.Path("outputs/output_1/count.txt").write_text(f"{len(names)} {names[-1]}")
"""
    source = tmp_path / "input"
    (source / "customers").mkdir(parents=True)
    for number in range(12_000):
        (source / "customers" / f"customer-{number:06d}.csv").write_text(f"{number}\n")
    room = make_room(tmp_path, confinement, handler)
    keys = session(room, ALICE, UploadPurpose(op="upload", input="input_1"))
    sending = _Upload(keys, "input_1", bytes(SALT_BYTES), _input_files(source), None)
    frames = [bytes(frame[4:]) for frame in sending.frames()]  # without the u32 length
    completed = room.upload(keys.session_id, frames)
    manifest = canonical(sending.manifest)
    assert len(manifest) > 1 << 20
    assert completed.sha256 == hashlib.sha256(manifest).hexdigest()
    upload(room, BOB, "input_2", BOB_DATA)
    receipt, _ = run(room)
    assert receipt["status"] == "succeeded"
    assert download_all(room)["output_1/count.txt"] == b"12000 customer-011999.csv"
