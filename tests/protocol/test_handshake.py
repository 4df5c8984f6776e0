"""Phase 2 handshake and the Work-ID: vectors, then one test per check that must fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.protocol.claims import report_data, worker_claims
from cleanroom.protocol.encoding import b64u, canonical, from_b64u
from cleanroom.protocol.errors import (
    AccessDenied,
    BindingError,
    MessageFormatError,
    ProtocolError,
    ReplayError,
    SignatureError,
)
from cleanroom.protocol.handshake import AcceptedHandshake, ClientHandshake, SeenNonces, respond
from cleanroom.protocol.keys import spki
from cleanroom.protocol.spec import (
    DownloadPurpose,
    RunPurpose,
    UploadPurpose,
    WorkSpec,
    authorize,
)

from .fixtures import (
    ALICE,
    ALICE_ID,
    BOB,
    BOB_ID,
    CLIENT_EPH,
    MALLORY,
    NONCE,
    QUOTE_SHA256,
    SESSION_ID,
    SPEC,
    SPEC_DOCUMENT,
    WORKER,
    WORKER_EPH,
    WORKER_ID,
    fixed_key,
)

UPLOAD_1 = UploadPurpose(op="upload", input="input_1")


def client(**changes: Any) -> ClientHandshake:
    arguments: dict[str, Any] = {
        "user_key": ALICE,
        "work_id": SPEC.work_id,
        "worker_id": WORKER_ID,
        "worker_key": WORKER.public_key(),
        "quote_sha256": QUOTE_SHA256,
        "purpose": UPLOAD_1,
        "nonce": NONCE,
        "ephemeral": CLIENT_EPH,
    }
    arguments.update(changes)
    return ClientHandshake(**arguments)


def worker(init: object, signature: bytes, **changes: Any) -> AcceptedHandshake:
    arguments: dict[str, Any] = {
        "spec": SPEC,
        "worker_id": WORKER_ID,
        "worker_key": WORKER,
        "seen": SeenNonces(),
        "ephemeral": WORKER_EPH,
        "session_id": SESSION_ID,
    }
    arguments.update(changes)
    return respond(init, signature, **arguments)


# ------------------------------------------------------------------- vectors


def test_identifier_vectors() -> None:
    assert ALICE_ID == "x2EDdYeMsbr-vQTUxRCSSOlyiUw0Z_pK6N4q8nXPin0"
    assert SPEC.work_id == "bBs5qI6QIrLcWjg1hXZTwt6JMwpr8iIiQLkffj7JhVY"
    claims = worker_claims(SPEC.work_id, spki(WORKER.public_key()))
    assert report_data(claims).hex() == (
        "b504fe6ea07c6cbccb82b0963d63e56b70419a6d73cd2f1d13eca72f4e125725"
        "fb4a158095f01ad32c5016e3ffba0a32c0248fab5e83b1bcd9bb854bdddfcc70"
    )


def test_handshake_vectors() -> None:
    start = client()
    accepted = worker(start.init, start.init_signature)
    keys = start.finish(accepted.resp, accepted.resp_signature)
    assert keys == accepted.keys
    assert accepted.user_id == ALICE_ID and accepted.purpose == UPLOAD_1
    assert canonical(accepted.resp) == (
        b'{"init_sha256":"WefS1_NcEQqi7_RkI3DfgmeL3XPmICMmyr6Sd0k3bb0",'
        b'"session_id":"Xl5eXl5eXl5eXl5eXl5eXg","type":"cleanroom/handshake-resp/v1",'
        b'"worker_eph":"BFccBchAIe3OxLGsmZgp7NgPghayOcZ_Jp-I_1eujM4r-TJa_BdTMhkt-z2fMF9Jmv_MDPimuy3brAEowoSrgRU"}'
    )
    assert keys.transcript_sha256.hex() == (
        "e3fdf6c3e1b00b6da7dc4daaf3a700502be31260a50f66b4c68c375b71e103e1"
    )
    assert keys.client_to_worker.hex() == (
        "762d6976a41f8b5cefcd97bcf983d71d2ac87d377a687681c7192768c99c78f8"
    )
    assert keys.worker_to_client.hex() == (
        "44d53e55c1d946f1c67304465c98cf5b9ed314a52b2720d1ba9b469f22ca10c2"
    )


def test_fresh_sessions_differ() -> None:
    first, second = ClientHandshake(
        user_key=ALICE, work_id=SPEC.work_id, worker_id=WORKER_ID,
        worker_key=WORKER.public_key(), quote_sha256=QUOTE_SHA256, purpose=UPLOAD_1,
    ), client(nonce=None, ephemeral=None)  # fmt: skip
    seen = SeenNonces()
    keys = [
        hs.finish(*_answer(respond(hs.init, hs.init_signature, spec=SPEC, worker_id=WORKER_ID,
                                   worker_key=WORKER, seen=seen)))
        for hs in (first, second)
    ]  # fmt: skip
    assert keys[0].client_to_worker != keys[1].client_to_worker
    assert keys[0].session_id != keys[1].session_id


def _answer(accepted: AcceptedHandshake) -> tuple[dict[str, Any], bytes]:
    return accepted.resp, accepted.resp_signature


# ------------------------------------------------------- the Worker's checks


def test_init_for_another_work_is_refused() -> None:
    other = WorkSpec.parse({**SPEC_DOCUMENT, "nonce": b64u(b"\x01" + bytes(15))})
    start = client(work_id=other.work_id)
    with pytest.raises(BindingError) as caught:
        worker(start.init, start.init_signature)
    assert caught.value.check == "work-id"
    assert caught.value.expected == SPEC.work_id


def test_init_for_another_worker_is_refused() -> None:
    start = client(worker_id="worker-2")
    with pytest.raises(BindingError) as caught:
        worker(start.init, start.init_signature)
    assert caught.value.check == "worker-id"


@pytest.mark.parametrize("field", ["nonce", "purpose", "client_eph", "quote_sha256"])
def test_tampered_init_fails_the_signature(field: str) -> None:
    start = client()
    init = copy.deepcopy(start.init)
    if field == "purpose":
        init[field] = {"op": "upload", "input": "input_2"}
    elif field == "client_eph":
        init[field] = b64u(
            bytes([4])
            + bytes(CLIENT_EPH.public_key().public_numbers().x.to_bytes(32, "big"))
            + MALLORY.public_key().public_numbers().y.to_bytes(32, "big")
        )
    else:
        init[field] = b64u(bytes([0x42]) * 32)
    with pytest.raises(ProtocolError) as caught:
        worker(init, start.init_signature)
    assert caught.value.check == "handshake-init-signature"


def test_init_signed_by_another_key_is_refused() -> None:
    start = client()
    forged = client(user_key=MALLORY)
    init = dict(start.init)  # Alice's key named, Mallory's signature
    with pytest.raises(SignatureError) as caught:
        worker(init, forged.init_signature)
    assert caught.value.check == "handshake-init-signature"


def test_replayed_init_is_refused() -> None:
    start = client()
    seen = SeenNonces()
    worker(start.init, start.init_signature, seen=seen)
    with pytest.raises(ReplayError) as caught:
        worker(start.init, start.init_signature, seen=seen)
    assert caught.value.check == "nonce"


def test_refused_init_does_not_burn_its_nonce() -> None:
    seen = SeenNonces()
    refused = client(user_key=MALLORY)
    with pytest.raises(AccessDenied):
        worker(refused.init, refused.init_signature, seen=seen)
    start = client()
    worker(start.init, start.init_signature, seen=seen)


@pytest.mark.parametrize(
    ("user_key", "purpose", "check"),
    [
        (BOB, UploadPurpose(op="upload", input="input_1"), "input-owner"),
        (MALLORY, UploadPurpose(op="upload", input="input_2"), "input-owner"),
        (ALICE, UploadPurpose(op="upload", input="output_1"), "purpose"),
        (BOB, DownloadPurpose(op="download", output="output_1"), "output-recipient"),
        (ALICE, DownloadPurpose(op="download", output="input_1"), "purpose"),
        (BOB, RunPurpose(op="run"), "runner"),
    ],
)
def test_user_must_be_allowed_the_purpose(user_key: Any, purpose: Any, check: str) -> None:
    start = client(user_key=user_key, purpose=purpose)
    with pytest.raises(AccessDenied) as caught:
        worker(start.init, start.init_signature)
    assert caught.value.check == check


def test_allowed_purposes_pass() -> None:
    authorize(SPEC, BOB_ID, UploadPurpose(op="upload", input="input_2"))
    authorize(SPEC, ALICE_ID, DownloadPurpose(op="download", output="output_1"))
    authorize(SPEC, ALICE_ID, RunPurpose(op="run"))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("nonce"),
        lambda m: m.update(extra="x"),
        lambda m: m.update(type="cleanroom/handshake-init/v2"),
        lambda m: m.update(nonce="not b64u!"),
        lambda m: m.update(nonce=b64u(bytes(31))),
        lambda m: m.update(user_key=b64u(b"junk")),
        lambda m: m.update(purpose={"op": "delete"}),
    ],
)
def test_malformed_init_is_refused(mutate: Any) -> None:
    start = client()
    init = copy.deepcopy(start.init)
    mutate(init)
    with pytest.raises((MessageFormatError, SignatureError)):
        worker(init, start.init_signature)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=60),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
VALID = client()


@settings(max_examples=300)
@given(
    field=st.sampled_from(sorted(VALID.init)),
    value=JSON_VALUES | st.sampled_from([b64u(bytes(n)) for n in (16, 32, 65)]),
    signature=st.sampled_from([VALID.init_signature, b""]) | st.binary(max_size=80),
)
def test_mutated_init_gives_only_protocol_errors(
    field: str, value: object, signature: bytes
) -> None:
    init = dict(VALID.init, **{field: value})
    if init == VALID.init and signature == VALID.init_signature:
        return
    with pytest.raises(ProtocolError):
        worker(init, signature)


@settings(max_examples=200)
@given(JSON_VALUES)
def test_arbitrary_init_gives_only_protocol_errors(init: object) -> None:
    with pytest.raises(ProtocolError):
        worker(init, VALID.init_signature)


# ------------------------------------------------------- the client's checks


def test_resp_not_signed_by_the_attested_key_is_refused() -> None:
    start = client()
    impostor = worker(start.init, start.init_signature, worker_key=fixed_key(0xBAD))
    with pytest.raises(SignatureError) as caught:
        start.finish(impostor.resp, impostor.resp_signature)
    assert caught.value.check == "handshake-resp-signature"


def test_tampered_resp_is_refused() -> None:
    start = client()
    accepted = worker(start.init, start.init_signature)
    resp = dict(accepted.resp, session_id=b64u(bytes(16)))
    with pytest.raises(SignatureError):
        start.finish(resp, accepted.resp_signature)


def test_resp_to_another_init_is_refused() -> None:
    ours, theirs = client(), client(nonce=bytes(32))
    accepted = worker(theirs.init, theirs.init_signature)
    with pytest.raises(BindingError) as caught:
        ours.finish(accepted.resp, accepted.resp_signature)
    assert caught.value.check == "init-sha256"


def test_handshake_finishes_once() -> None:
    start = client()
    accepted = worker(start.init, start.init_signature)
    start.finish(accepted.resp, accepted.resp_signature)
    with pytest.raises(ReplayError):
        start.finish(accepted.resp, accepted.resp_signature)


# ----------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"function": "http://x"}, "function"),
        ({"outputs": {}}, "outputs"),
        ({"runners": []}, "runners"),
        ({"inputs": {"input_1": ALICE_ID}, "outputs": {"input_1": ALICE_ID}}, "spec"),
        ({"logs": "input_1"}, "spec"),
        ({"nonce": "CCCCCCCCCCCCCCCCCCCCCC"}, "spec"),  # 22 chars but non-canonical b64u
        ({"surprise": 1}, "surprise"),
        ({"parameters": {"k": 2**53 + 1}}, "spec"),  # JCS cannot represent it exactly
        ({"resources": {"memory_mib": "2048", "timeout_s": 1}}, "resources"),
    ],
)
def test_bad_specs_are_refused_before_anything_runs(change: dict[str, Any], where: str) -> None:
    with pytest.raises(MessageFormatError) as caught:
        WorkSpec.parse({**SPEC_DOCUMENT, **change})
    assert caught.value.check == "work-spec"


@pytest.mark.parametrize(
    "change",
    [
        {"function": "fs://" + b64u(bytes([1]) * 32)},
        {"inputs": {"input_1": BOB_ID, "input_2": ALICE_ID}},
        {"outputs": {"output_1": BOB_ID}},
        {"runners": [ALICE_ID, BOB_ID]},
        {"parameters": {"k": 11}},
        {"nonce": b64u(bytes([1]) + bytes(15))},
    ],
)
def test_every_part_of_the_spec_changes_the_work_id(change: dict[str, Any]) -> None:
    assert WorkSpec.parse({**SPEC_DOCUMENT, **change}).work_id != SPEC.work_id


def test_b64u_is_strict() -> None:
    assert from_b64u(b64u(b"\xff\x00"), "x") == b"\xff\x00"
    assert from_b64u("AAE", "x") == b"\x00\x01"
    for bad in ["AA==", "A", "AB", "a+b/", "AAF"]:  # padding, length, stray bits, alphabet
        with pytest.raises(MessageFormatError):
            from_b64u(bad, "x")
    with pytest.raises(MessageFormatError, match="wrong length"):
        from_b64u("AAE", "x", size=3)
