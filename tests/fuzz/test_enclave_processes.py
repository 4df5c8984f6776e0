"""Every message the Attester and the Worker parse, fuzzed against the real processes.

Bodies are arbitrary bytes, arbitrary JSON and mutations of the valid message, sent
over the enclaves' own Unix sockets exactly as a hostile Controller could. Every
answer must be 2xx only for the valid message, and otherwise a 4xx problem body
naming a check; never a 5xx; and the process must keep serving: after each target
the honest flow still works and nothing fuzzed was kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import strategies as st

from cleanroom.protocol.acks import open_ack
from cleanroom.protocol.encoding import b64u, canonical, from_b64u
from cleanroom.protocol.framing import encode_frames
from cleanroom.protocol.handshake import ClientHandshake, SessionKeys
from cleanroom.protocol.handshake_v2 import ClientHandshakeV2
from cleanroom.protocol.keys import load_spki, sign
from cleanroom.protocol.manifest import SALT_BYTES, UPLOAD_MANIFEST_TYPE
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.run_request import seal_run_request
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, UploadPurpose
from tests.fuzz.conftest import BUDGETS, fuzz, json_values, mutated, mutated_document
from tests.fuzz.processes import Deployment, deployment
from tests.protocol.fixtures import ALICE

FILES = {"emails.csv": b"a@x\nb@x\n"}


@pytest.fixture(scope="module")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("fuzz-processes")) as running:
        yield running


def bodies(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated_document(valid).map(lambda d: json.dumps(d).encode()),
        mutated(json.dumps(valid).encode()),
        st.just(b"[" * 100_000),  # found: RecursionError in json.loads was a 500
    )


def refused(response: httpx.Response) -> bool:
    """True for a 4xx problem body naming a check; fails on a 5xx or an unnamed error."""
    assert response.status_code < 500, response.text[:500]
    if response.status_code < 400:
        return False
    assert response.headers["content-type"] == "application/problem+json", response.text
    assert isinstance(response.json().get("check"), str), response.text
    return True


def still_serving(enclave: Deployment) -> None:
    assert enclave.attester.alive() and enclave.worker.alive()
    assert enclave.attester.client.get("/target-info").status_code == 200
    state = enclave.worker.client.get("/state").json()
    assert state["admitted"] is True and state["state"] == "collecting", state


def handshake(enclave: Deployment, purpose: Any) -> tuple[ClientHandshake, dict[str, Any]]:
    worker_key = enclave.admission["claims"]["worker_key"]
    client = ClientHandshake(
        user_key=ALICE,
        work_id=enclave.spec.work_id,
        worker_id=enclave.worker_id,
        worker_key=load_spki(_b64(worker_key), "worker_key"),
        quote_sha256=bytes(32),
        purpose=purpose,
    )
    return client, {"init": client.init, "signature": b64u(client.init_signature)}


def _b64(text: str) -> bytes:
    from cleanroom.protocol.encoding import from_b64u

    return from_b64u(text, "b64u")


def session(enclave: Deployment, purpose: Any) -> SessionKeys:
    client, body = handshake(enclave, purpose)
    answer = enclave.worker.client.post("/sessions", json=body)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    return client.finish(document["resp"], _b64(document["signature"]))


def upload_manifest(files: dict[str, bytes] = FILES) -> dict[str, Any]:
    return {
        "type": UPLOAD_MANIFEST_TYPE,
        "input": "input_1",
        "salt": b64u(bytes(SALT_BYTES)),
        "files": {
            n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
        },
    }


def manifest_digest(files: dict[str, bytes] = FILES) -> str:
    return hashlib.sha256(canonical(upload_manifest(files))).hexdigest()


def upload_body(keys: SessionKeys, files: dict[str, bytes] = FILES) -> bytes:
    sender = RecordSender(keys.client_to_worker, keys.session_id)
    frames = [sender.seal(f"input_1/{n}", d, final=True) for n, d in files.items()]
    frames.append(sender.seal("input_1/.manifest", canonical(upload_manifest(files)), final=True))
    return b"".join(encode_frames(frames))


# --------------------------------------------------------------- Attester


@pytest.mark.parametrize("budget", BUDGETS)
def test_attester_admit(enclave: Deployment, budget: int) -> None:
    valid = enclave.admission

    def admit(body: bytes) -> None:
        answer = enclave.attester.client.post("/admit", content=body)
        if not refused(answer):
            assert canonical(json.loads(body)) == canonical(valid)

    fuzz(budget, bodies(valid), admit)
    still_serving(enclave)


@pytest.mark.parametrize("budget", BUDGETS)
def test_attester_attest(enclave: Deployment, budget: int) -> None:
    valid = {"worker_id": enclave.worker_id, "nonce": b64u(bytes(32))}

    def attest(body: bytes) -> None:
        answer = enclave.attester.client.post("/attest", content=body)
        if not refused(answer):
            document = json.loads(body)
            assert document["worker_id"] == enclave.worker_id
            assert answer.json()["claims"]["nonce"] == document["nonce"]

    fuzz(budget, bodies(valid), attest)
    still_serving(enclave)


@pytest.mark.parametrize("budget", BUDGETS)
def test_attester_forget_and_routes(enclave: Deployment, budget: int) -> None:
    paths = st.sampled_from(["/forget", "/admit", "/attest", "/target-info", "/x", "/"])
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE"])
    strategy = st.tuples(
        methods,
        paths | st.text(max_size=30).map(lambda t: "/" + t),
        bodies({"worker_id": "someone-else"}),
    )

    def call(message: tuple[str, str, bytes]) -> None:
        method, path, body = message
        if path == "/forget":
            try:  # never forget the real Worker: that is denial of service, tested elsewhere
                if enclave.worker_id in body.decode(errors="replace"):
                    return
            except ValueError:
                pass
        try:
            answer = enclave.attester.client.request(method, path, content=body)
        except httpx.InvalidURL:
            return
        refused(answer)

    fuzz(budget, strategy, call)
    still_serving(enclave)


# ----------------------------------------------------------------- Worker


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_admission_messages(enclave: Deployment, budget: int) -> None:
    target = enclave.attester.client.get("/target-info").json()
    complete = {"report": enclave.answer["report"]}
    strategy = st.one_of(
        st.tuples(st.just("/admission/request"), bodies(target)),
        st.tuples(st.just("/admission/complete"), bodies(complete)),
    )

    def call(message: tuple[str, bytes]) -> None:
        path, body = message
        answer = enclave.worker.client.post(path, content=body)
        if not refused(answer) and path == "/admission/complete":
            assert canonical(json.loads(body)) == canonical(complete)

    fuzz(budget, strategy, call)
    still_serving(enclave)


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_handshake_init(enclave: Deployment, budget: int) -> None:
    _client, valid = handshake(enclave, UploadPurpose(op="upload", input="input_1"))

    def init(body: bytes) -> None:
        answer = enclave.worker.client.post("/sessions", content=body)
        if not refused(answer):
            # Only the one valid init (with any valid signature over it) opens a session.
            assert canonical(json.loads(body)["init"]) == canonical(valid["init"])

    fuzz(budget, bodies(valid), init)
    still_serving(enclave)


@pytest.mark.parametrize(
    "where",
    ['{"init": {', '"purpose": {', "{"],
    ids=["init", "purpose", "body"],
)
def test_a_lone_surrogate_key_in_a_handshake_is_a_4xx_not_a_500(
    enclave: Deployment, where: str
) -> None:
    """JSON may escape a lone surrogate (\\ud800), which no UTF-8 or UTF-16 text holds:
    as an object key it must be refused like any malformed message."""
    _client, valid = handshake(enclave, UploadPurpose(op="upload", input="input_1"))
    text = json.dumps(valid)
    assert where in text
    body = text.replace(where, where + '"\\ud800": 1, ', 1).encode()
    answer = enclave.worker.client.post("/sessions", content=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["check"]
    still_serving(enclave)


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_handshake_v2_init(enclave: Deployment, budget: int) -> None:
    """v2 inits, and each bad input v2 names, signed again by the user (only the check on
    what changed may refuse them): refused with that check, and nothing kept."""
    client = ClientHandshakeV2(
        user_key=ALICE,
        work_id=enclave.spec.work_id,
        purpose=UploadPurpose(op="upload", input="input_1"),
    )
    valid = {"init": client.init, "signature": b64u(client.init_signature)}

    def resigned(change: dict[str, Any]) -> bytes:
        init = {**client.init, **change}
        return json.dumps({"init": init, "signature": b64u(sign(ALICE, canonical(init)))}).encode()

    attacks = {
        "handshake-suite": [{"suite": "P256"}],
        "protocol-version": [{"version": 1}],
        "mlkem-encapsulation-key": [{"client_mlkem": b64u(bytes(1183))}],
    }
    named = st.sampled_from([(check, c) for check, cs in attacks.items() for c in cs])
    strategy = st.one_of(
        named.map(lambda item: (item[0], resigned(item[1]))), bodies(valid).map(lambda b: ("", b))
    )

    def init(message: tuple[str, bytes]) -> None:
        check, body = message
        answer = enclave.worker.client.post("/sessions", content=body)
        if check:
            assert refused(answer) and answer.json()["check"] == check, answer.text
        elif not refused(answer):
            assert canonical(json.loads(body)["init"]) == canonical(valid["init"])

    fuzz(budget, strategy, init)
    still_serving(enclave)
    # Nothing a refusal kept: the honest init opens its session now (unless a fuzzed
    # copy of that very init was accepted above, which used its nonce).
    answer = enclave.worker.client.post("/sessions", json=valid)
    assert answer.status_code == 200 or answer.json()["check"] == "nonce", answer.text


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_upload_frame_streams(enclave: Deployment, budget: int) -> None:
    # Each example gets a fresh upload session (a refused upload consumes it).
    def upload(message: tuple[bool, Any]) -> None:
        garbage, draw = message
        keys = session(enclave, UploadPurpose(op="upload", input="input_1"))
        body = draw if garbage else _mutate(upload_body(keys), draw)
        answer = enclave.worker.client.post(f"/sessions/{keys.session_id}/upload", content=body)
        assert refused(answer)

    def _mutate(valid: bytes, seed: bytes) -> bytes:
        # A deterministic mutation of this session's valid body, driven by hypothesis' bytes.
        data = bytearray(valid)
        if not seed:
            return valid[: len(valid) // 2]
        for i in range(0, len(seed) - 1, 2):
            position = (seed[i] << 8 | seed[i + 1]) % len(data)
            if seed[i] % 3 == 0:
                data[position] ^= seed[i + 1] | 1
            elif seed[i] % 3 == 1:
                del data[position:]
                if not data:
                    break
            else:
                data[position:position] = bytes([seed[i + 1]])
        if bytes(data) == valid:
            data.append(0)
        return bytes(data)

    fuzz(budget, st.tuples(st.booleans(), st.binary(max_size=64)), upload)
    still_serving(enclave)
    # Nothing fuzzed was kept: the one sealed file is the function bundle, sealed at start.
    assert [p.name for p in (enclave.room_dir / "sealed").iterdir()] == ["00000000.sealed"]


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_status(enclave: Deployment, budget: int) -> None:
    valid = {"nonce": b64u(bytes(32))}

    def status(body: bytes) -> None:
        answer = enclave.worker.client.post("/status", content=body)
        if not refused(answer):  # signed for exactly the 32-byte nonce sent
            nonce = json.loads(body)["nonce"]
            assert len(from_b64u(nonce, "nonce")) == 32
            assert answer.json()["status"]["nonce"] == nonce

    fuzz(budget, bodies(valid), status)
    still_serving(enclave)


@pytest.mark.parametrize("budget", BUDGETS)
def test_worker_run_download_receipt(enclave: Deployment, budget: int) -> None:
    sessions = st.text(max_size=40) | st.binary(max_size=16).map(b64u)
    strategy = st.tuples(
        st.sampled_from(["run", "download", "upload", "receipt", "state", "unknown"]),
        sessions,
        st.sampled_from(["GET", "POST", "PUT"]),
    )

    def call(message: tuple[str, str, str]) -> None:
        op, session_id, method = message
        segment = quote(session_id, safe="")
        path = {"receipt": "/receipt", "state": "/state"}.get(op, f"/sessions/{segment}/{op}")
        try:
            answer = enclave.worker.client.request(method, path)
        except httpx.InvalidURL:
            return
        if not refused(answer):
            assert (method, op) == ("GET", "state")

    fuzz(budget, strategy, call)
    # Valid sessions for the run and a download are refused for the state they are in.
    run = session(enclave, RunPurpose(op="run"))
    # Only with a request sealed under the session's key (the Controller sees the id
    # alone); a made-up one leaves the session unused.
    other = session(enclave, RunPurpose(op="run"))
    for name, body in [("none", None), ("another session's", seal_run_request(other))]:
        forged = {} if body is None else {"json": {"request": b64u(body)}}
        answer = enclave.worker.client.post(f"/sessions/{run.session_id}/run", **forged)
        assert answer.status_code == 400 and answer.json()["check"] in (
            "request-format",
            "record-authentication",
        ), f"a run request {name}: expected a refusal, got {answer.status_code} {answer.text}"
    request = {"request": b64u(seal_run_request(run))}
    answer = enclave.worker.client.post(f"/sessions/{run.session_id}/run", json=request)
    assert answer.json()["check"] == "inputs-missing", answer.text
    download = session(enclave, DownloadPurpose(op="download", output="output_1"))
    refusal = enclave.worker.client.post(f"/sessions/{download.session_id}/download")
    assert refusal.status_code == 409 and refusal.json()["check"] == "run-state"
    still_serving(enclave)


def test_after_fuzzing_the_honest_upload_still_works(enclave: Deployment) -> None:
    keys = session(enclave, UploadPurpose(op="upload", input="input_1"))
    answer = enclave.worker.client.post(
        f"/sessions/{keys.session_id}/upload", content=upload_body(keys)
    )
    assert answer.status_code == 200, answer.text
    ack = from_b64u(answer.json()["ack"], "ack")
    size = sum(len(data) for data in FILES.values())
    assert not open_ack(keys, ack, input_id="input_1", sha256=manifest_digest(), size=size).already
    assert len(list((enclave.room_dir / "sealed").iterdir())) == 2  # the bundle and input_1


@pytest.mark.parametrize("constant", [b"Infinity", b"NaN", b"-Infinity"])
def test_json_constants_are_refused_not_a_500(enclave: Deployment, constant: bytes) -> None:
    # Found by test_attester_admit: {"claims": Infinity} was refused with the value in
    # "actual", which JSON cannot carry: the refusal itself became a 500.
    body = (
        b'{"report": "' + enclave.admission["report"].encode() + b'", "claims": ' + constant + b"}"
    )
    answer = enclave.attester.client.post("/admit", content=body)
    assert answer.status_code == 400 and answer.json()["check"] == "request-format"
