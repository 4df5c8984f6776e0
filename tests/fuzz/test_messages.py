"""Every message the Attester and the Worker parse, fuzzed at the function level.

For each parser: arbitrary input and mutations of the one valid message. Only the
project's own typed errors may come out (``CheckFailed``), and whatever is accepted
must be the valid message itself (or, for parsers with no secret, a message that
passes every check the protocol states).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from cleanroom.enclave.errors import AdmissionError
from cleanroom.enclave.store import SealedStore
from cleanroom.enclave.uploads import MANIFEST_NAME, MANIFEST_TYPE, Upload
from cleanroom.errors import CheckFailed
from cleanroom.protocol import handshake_v2
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.framing import FrameDecoder, encode_frames
from cleanroom.protocol.handshake import ClientHandshake, SeenNonces, respond
from cleanroom.protocol.keys import load_spki, sign
from cleanroom.protocol.manifest import SALT_BYTES, check_salt
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.spec import UploadPurpose, WorkSpec
from tests.fuzz.conftest import (
    BUDGETS,
    Enclaves,
    fuzz,
    json_values,
    mutated,
    mutated_document,
)
from tests.protocol.fixtures import ALICE, SPEC_DOCUMENT

KEY = bytes(range(32))
SESSION = "Xl5eXl5eXl5eXl5eXl5eXg"


def refused_or(valid: bool, call: Any) -> bool:
    """True if ``call()`` was accepted; a CheckFailed is a refusal; anything else fails."""
    try:
        call()
    except CheckFailed:
        return False
    return True


# ------------------------------------------------------------ admission


@pytest.mark.parametrize("budget", BUDGETS)
def test_attester_admit(enclaves: Enclaves, budget: int) -> None:
    _, claims = enclaves.worker.admission_request(enclaves.attester.target_info())
    valid_claims = canonical(claims)
    strategy = st.one_of(
        st.tuples(st.binary(max_size=600), json_values),
        st.tuples(mutated(enclaves.report), st.just(claims)),
        st.tuples(st.just(enclaves.report), mutated_document(claims)),
        st.tuples(st.just(enclaves.report), json_values),
    )

    def admit(message: tuple[bytes, Any]) -> None:
        report, fuzzed_claims = message
        if refused_or(True, lambda: enclaves.attester.admit(report, fuzzed_claims)):
            assert report == enclaves.report
            assert canonical(fuzzed_claims) == valid_claims

    fuzz(budget, strategy, admit)


@pytest.mark.parametrize("budget", BUDGETS)
def test_attester_attest(enclaves: Enclaves, budget: int) -> None:
    strategy = st.tuples(
        st.text(max_size=60) | st.just(enclaves.worker.worker_id), st.binary(max_size=64)
    )

    def attest(message: tuple[str, bytes]) -> None:
        worker_id, nonce = message
        if refused_or(True, lambda: enclaves.attester.attest(worker_id, nonce)):
            assert worker_id == enclaves.worker.worker_id and len(nonce) == 32

    fuzz(budget, strategy, attest)


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_admission_request(enclaves: Enclaves, budget: int) -> None:
    target = enclaves.attester.target_info()

    def request(target_info: bytes) -> None:
        # Any 512 bytes are a TARGETINFO: the REPORT is MACed for that target, which
        # only that enclave can verify; nothing else may be accepted.
        if refused_or(True, lambda: enclaves.worker.admission_request(target_info)):
            assert len(target_info) == 512

    fuzz(budget, st.binary(max_size=600) | mutated(target), request)


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_complete_admission(enclaves: Enclaves, budget: int) -> None:
    def complete(answer: bytes) -> None:
        call = lambda: enclaves.worker.complete_admission(  # noqa: E731
            answer, attester_mr_signer=enclaves.worker_mr_signer
        )
        with pytest.raises(AdmissionError):
            call()

    fuzz(budget, st.binary(max_size=600) | mutated(enclaves.answer), complete)


# ------------------------------------------------------------ handshake


@pytest.mark.parametrize("budget", BUDGETS)
def test_handshake_init(enclaves: Enclaves, budget: int) -> None:
    worker = enclaves.worker
    client = ClientHandshake(
        user_key=ALICE,
        work_id=enclaves.spec.work_id,
        worker_id=worker.worker_id,
        worker_key=load_spki(worker.worker_key_spki, "worker_key"),
        quote_sha256=bytes(32),
        purpose=UploadPurpose(op="upload", input="input_1"),
    )
    valid = canonical(client.init)
    strategy = st.one_of(
        st.tuples(mutated_document(client.init), st.just(client.init_signature)),
        st.tuples(st.just(client.init), mutated(client.init_signature)),
        st.tuples(json_values, st.binary(max_size=80)),
    )

    def init(message: tuple[Any, bytes]) -> None:
        document, signature = message
        seen = SeenNonces()

        def call() -> None:
            respond(
                document,
                signature,
                spec=enclaves.spec,
                worker_id=worker.worker_id,
                worker_key=worker._key,
                seen=seen,
            )

        if refused_or(True, call):
            assert canonical(document) == valid

    fuzz(budget, strategy, init)


# The bad inputs protocol v2 names, each signed again by the key that signs that
# message: only the check on what changed may refuse them.
V2_INIT_ATTACKS = {
    "a v2 message with a v1 suite": {"suite": handshake_v2.V1_SUITE},
    "a v2 message with version 1": {"version": 1},
    "an ML-KEM key of the wrong length": {"client_mlkem": b64u(bytes(1183))},
    "an invalid ML-KEM key": {"client_mlkem": b64u(b"\xff" * 1184)},
    "a low-order X25519 share": {"client_x25519": b64u(bytes(32))},
}
V2_RESP_ATTACKS = {
    "a v2 message with a v1 suite": {"suite": handshake_v2.V1_SUITE},
    "an ML-KEM ciphertext of the wrong length": {"worker_mlkem_ciphertext": b64u(bytes(1087))},
    "a response for another client's nonce": {"nonce": b64u(bytes(32))},
    "a response to another init": {"init_sha256": b64u(bytes(32))},
}


def _v2_client(enclaves: Enclaves) -> handshake_v2.ClientHandshakeV2:
    return handshake_v2.ClientHandshakeV2(
        user_key=ALICE,
        work_id=enclaves.spec.work_id,
        purpose=UploadPurpose(op="upload", input="input_1"),
    )


def resigned_init(document: Any) -> tuple[Any, bytes]:
    try:
        return document, sign(ALICE, canonical(document))
    except CheckFailed:  # no canonical form: nothing can have signed it
        return document, b""


@pytest.mark.parametrize("budget", BUDGETS)
def test_handshake_v2_init(enclaves: Enclaves, budget: int) -> None:
    worker = enclaves.worker
    client = _v2_client(enclaves)
    valid = canonical(client.init)

    def resigned(change: dict[str, Any]) -> tuple[Any, bytes]:
        document = {**client.init, **change}
        return document, sign(ALICE, canonical(document))

    strategy = st.one_of(
        st.sampled_from(sorted(V2_INIT_ATTACKS)).map(lambda k: resigned(V2_INIT_ATTACKS[k])),
        st.tuples(  # the suite changed in transit, not signed again
            st.just({**client.init, "suite": handshake_v2.V1_SUITE}),
            st.just(client.init_signature),
        ),
        st.tuples(mutated_document(client.init), st.just(client.init_signature)),
        mutated_document(client.init).map(resigned_init),
        st.tuples(st.just(client.init), mutated(client.init_signature)),
        st.tuples(json_values, st.binary(max_size=80)),
    )

    def init(message: tuple[Any, bytes]) -> None:
        document, signature = message
        seen = SeenNonces()

        def call() -> None:
            handshake_v2.respond(
                document, signature, spec=enclaves.spec, worker_key=worker._key, seen=seen
            )

        accepted = refused_or(True, call)
        if accepted:
            # A re-signed init may change what its user may change (e.g. another
            # purpose it is allowed): never the version, the suite or a key share's form.
            assert document["version"] == 2 and document["suite"] == handshake_v2.SUITE
            assert canonical(document) == valid or signature != client.init_signature
        else:
            # Nothing kept: the honest init with the same nonce is still accepted.
            handshake_v2.respond(
                client.init,
                client.init_signature,
                spec=enclaves.spec,
                worker_key=worker._key,
                seen=seen,
            )

    fuzz(budget, strategy, init)


@pytest.mark.parametrize("budget", BUDGETS)
def test_handshake_v2_resp(enclaves: Enclaves, budget: int) -> None:
    worker = enclaves.worker
    worker_key = load_spki(worker.worker_key_spki, "worker_key")
    client = _v2_client(enclaves)
    accepted = handshake_v2.respond(
        client.init, client.init_signature, spec=enclaves.spec, worker_key=worker._key,
        seen=SeenNonces(),
    )  # fmt: skip
    valid = accepted.resp

    def resigned(document: Any) -> tuple[Any, bytes]:
        try:
            return document, sign(worker._key, canonical(document))
        except CheckFailed:  # no canonical form: nothing can have signed it
            return document, b""

    strategy = st.one_of(
        st.sampled_from(sorted(V2_RESP_ATTACKS)).map(
            lambda k: resigned({**valid, **V2_RESP_ATTACKS[k]})
        ),
        st.tuples(mutated_document(valid), st.just(accepted.resp_signature)),
        mutated_document(valid).map(resigned),
        st.tuples(st.just(valid), mutated(accepted.resp_signature)),
        st.tuples(json_values, st.binary(max_size=80)),
    )

    def resp(message: tuple[Any, bytes]) -> None:
        document, signature = message
        fresh = handshake_v2.ClientHandshakeV2(
            user_key=ALICE,
            work_id=enclaves.spec.work_id,
            purpose=UploadPurpose(op="upload", input="input_1"),
            nonce=client.nonce,
            mlkem_key=client._mlkem,
            x25519_key=client._x25519,
        )
        if refused_or(True, lambda: fresh.finish(document, signature, worker_key=worker_key)):
            # Only what the Worker signed, for this nonce and this init, in v2's suite.
            for field in ("type", "version", "suite", "nonce", "init_sha256"):
                assert document[field] == valid[field]

    fuzz(budget, strategy, resp)


# -------------------------------------------------------- records, frames


def _valid_stream() -> list[bytes]:
    sender = RecordSender(KEY, SESSION)
    return [
        sender.seal("input_1/a.csv", b"alpha", final=False),
        sender.seal("input_1/a.csv", b"beta", final=True),
        sender.seal("input_1/.manifest", b"{}", final=True),
    ]


@pytest.mark.parametrize("budget", BUDGETS)
def test_records(budget: int) -> None:
    frames = _valid_stream()
    strategy = st.tuples(st.integers(0, len(frames) - 1), mutated(frames[0]))
    strategy = st.one_of(
        st.integers(0, len(frames) - 1).flatmap(
            lambda i: st.tuples(st.just(i), mutated(frames[i]))
        ),
        st.tuples(st.integers(0, len(frames) - 1), st.binary(max_size=120)),
    )

    def record(message: tuple[int, bytes]) -> None:
        position, frame = message
        receiver = RecordReceiver(KEY, SESSION)
        for earlier in frames[:position]:
            receiver.open(earlier)
        with pytest.raises(CheckFailed):
            receiver.open(frame)

    fuzz(budget, strategy, record)


@pytest.mark.parametrize("budget", BUDGETS)
def test_frame_streams(budget: int) -> None:
    frames = _valid_stream()
    body = b"".join(encode_frames(frames))
    cuts = st.lists(st.integers(0, len(body)), max_size=8).map(sorted)

    def split(points: list[int], data: bytes) -> list[bytes]:
        edges = [0, *points, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(edges)]

    def stream(message: tuple[bool, list[int], bytes]) -> None:
        honest, points, garbage = message
        data = body if honest else garbage
        decoder, receiver, got = FrameDecoder(), RecordReceiver(KEY, SESSION), []
        try:
            for chunk in split([p for p in points if p <= len(data)], data):
                for frame in decoder.feed(chunk):
                    got.append(receiver.open(frame)[3])
            decoder.close()
            receiver.close()
        except CheckFailed:
            assert not honest
            return
        # Accepted: the honest stream, however it was split, or a prefix of it that ends
        # between objects (the upload's manifest check refuses those: upload-truncated).
        assert got in ([], [b"alpha", b"beta"], [b"alpha", b"beta", b"{}"])

    strategy = st.tuples(st.booleans(), cuts, st.binary(max_size=300) | mutated(body))
    fuzz(budget, strategy, stream)


# ------------------------------------------------------- upload manifests


def _manifest(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "type": MANIFEST_TYPE,
        "input": "input_1",
        "salt": b64u(bytes(SALT_BYTES)),
        "files": {
            n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
        },
    }


FILES = {"a.csv": b"alpha", "dir/b.csv": b"beta"}


@pytest.mark.parametrize("budget", BUDGETS)
def test_upload_manifests(tmp_path: Path, budget: int) -> None:
    store = SealedStore(tmp_path / "sealed")
    valid = _manifest(FILES)

    def nested(document: Any) -> Any:
        return {**valid, "files": {**valid["files"], "a.csv": document}}

    strategy = st.one_of(
        mutated_document(valid).map(lambda d: json.dumps(d).encode()),
        mutated_document(valid["files"]).map(lambda d: json.dumps({**valid, "files": d}).encode()),
        mutated_document(valid["files"]["a.csv"]).map(lambda d: json.dumps(nested(d)).encode()),
        mutated(canonical(valid)),
        st.binary(max_size=200),
        st.just(b"[" * 5000 + b"]" * 5000),
    )

    def upload(manifest: bytes) -> None:
        job = Upload(store, "input_1", "alice")
        for name, data in FILES.items():
            job.feed(f"input_1/{name}", True, data)
        try:
            done = job.feed(f"input_1/{MANIFEST_NAME}", True, manifest)
        except CheckFailed:
            assert store.objects("input_1") == []  # a refused upload leaves nothing
            return
        assert done is not None
        try:
            accepted = json.loads(manifest)
            # The salt is the uploader's to choose (any 32 bytes); the rest is exactly
            # the files that arrived.
            check_salt(accepted["salt"], "salt")
            assert canonical({**accepted, "salt": valid["salt"]}) == canonical(valid)
        finally:
            for stored in done.files:
                store.discard(stored.name)

    fuzz(budget, strategy, upload)


@pytest.mark.parametrize("budget", BUDGETS)
def test_upload_record_paths(tmp_path: Path, budget: int) -> None:
    store = SealedStore(tmp_path / "sealed")
    names = st.text(
        st.characters(codec="utf-8", exclude_characters="\x00") | st.sampled_from("/.\\"),
        min_size=0,
        max_size=300,
    )

    def upload(message: tuple[list[str], bool]) -> None:
        paths, prefixed = message
        files = {p: p.encode() for p in paths}
        job = Upload(store, "input_1", "alice")
        try:
            for path, data in files.items():
                job.feed(f"input_1/{path}" if prefixed else path, True, data)
            manifest = _manifest(files)
            done = job.feed(f"input_1/{MANIFEST_NAME}", True, canonical(manifest))
        except CheckFailed:
            assert store.objects("input_1") == []
            return
        assert done is not None and prefixed
        # Accepted paths are safe to lay out under inputs/input_1/ as they are.
        for path in paths:
            parts = path.split("/")
            assert all(p not in ("", ".", "..") and len(p.encode()) <= 255 for p in parts)
        laid_out = set(paths)
        for path in paths:
            assert not any(other.startswith(path + "/") for other in laid_out)
        for stored in done.files:
            store.discard(stored.name)

    fuzz(budget, st.tuples(st.lists(names, min_size=1, max_size=4), st.booleans()), upload)


# -------------------------------------------------------- specs, store


@pytest.mark.parametrize("budget", BUDGETS)
def test_work_specs(budget: int) -> None:
    def parse(document: Any) -> None:
        try:
            spec = WorkSpec.parse(document)
        except CheckFailed:
            return
        assert WorkSpec.parse(json.loads(spec.canonical())).work_id == spec.work_id

    fuzz(budget, mutated_document(SPEC_DOCUMENT) | json_values, parse)


@pytest.mark.parametrize("budget", BUDGETS)
def test_sealed_store_at_rest(tmp_path: Path, budget: int) -> None:
    # The room directory belongs to the untrusted Controller: its sealed files are input too.
    store = SealedStore(tmp_path / "sealed")
    writer = store.create("input_1/data")
    writer.write(b"x" * 3000)
    stored = writer.close()
    store.record(stored)
    path = next((tmp_path / "sealed").iterdir())
    original = path.read_bytes()

    def read(disk: bytes) -> None:
        path.write_bytes(disk)
        try:
            data = b"".join(store.read("input_1/data"))
        except CheckFailed:
            return
        finally:
            path.write_bytes(original)
        assert disk == original and data == b"x" * 3000

    fuzz(budget, mutated(original), read)


@pytest.mark.parametrize(
    ("paths", "check"),
    [
        (["a", "a/b"], "upload-path"),  # found: accepted, then the run failed on mkdir
        (["a/b", "a"], "upload-path"),
        (["x" * 256], "upload-path"),  # found: accepted, then ENAMETOOLONG in the run
    ],
)
def test_upload_paths_the_run_could_not_lay_out(
    tmp_path: Path, paths: list[str], check: str
) -> None:
    store = SealedStore(tmp_path / "sealed")
    job = Upload(store, "input_1", "alice")
    with pytest.raises(CheckFailed) as caught:
        for path in paths:
            job.feed(f"input_1/{path}", True, b"data")
    assert caught.value.check == check
    assert store.objects("input_1") == []


@pytest.mark.parametrize(
    "entry",
    [
        {"size": True, "sha256": hashlib.sha256(b"x").hexdigest()},  # found: accepted
        {"size": 1, "sha256": "é" * 64},  # found: TypeError (a 500) in compare_digest
        {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest().upper()},
    ],
)
def test_manifest_entries_are_exact(tmp_path: Path, entry: dict[str, Any]) -> None:
    store = SealedStore(tmp_path / "sealed")
    job = Upload(store, "input_1", "alice")
    job.feed("input_1/f", True, b"x")
    manifest = {**_manifest({}), "files": {"f": entry}}
    with pytest.raises(CheckFailed) as caught:
        job.feed(f"input_1/{MANIFEST_NAME}", True, canonical(manifest))
    assert caught.value.check in {"manifest-size", "manifest-sha256"}
    assert store.objects("input_1") == []


def test_a_chunk_header_that_claims_more_than_the_file_is_refused(tmp_path: Path) -> None:
    # Found by test_sealed_store_at_rest: a larger size in the last chunk's header read
    # the rest of the file and decrypted it, so a changed header was accepted.
    store = SealedStore(tmp_path / "sealed")
    writer = store.create("input_1/data")
    writer.write(b"x" * 3000)
    store.record(writer.close())
    path = next((tmp_path / "sealed").iterdir())
    disk = bytearray(path.read_bytes())
    disk[1] = 1
    path.write_bytes(bytes(disk))
    with pytest.raises(CheckFailed) as caught:
        b"".join(store.read("input_1/data"))
    assert caught.value.check == "sealed-truncated"


def test_a_float_parameter_with_no_exact_json_form_is_refused() -> None:
    # Found by test_work_specs: 2.0**53 was accepted, but its JCS text (an integer
    # beyond 2^53) did not parse back, so the spec could not be checked against its Work-ID.
    with pytest.raises(CheckFailed) as caught:
        WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": 2.0**53}})
    assert caught.value.check == "work-spec"
    assert WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": 2.0**52}})
