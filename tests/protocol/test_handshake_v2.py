"""Protocol v2's handshake: the documented vector, and one refusal per check."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cleanroom.errors import CheckFailed
from cleanroom.protocol import handshake_v2 as v2
from cleanroom.protocol.encoding import b64u, canonical, sha256
from cleanroom.protocol.handshake import SeenNonces
from cleanroom.protocol.keys import sign
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, UploadPurpose
from tests.protocol.fixtures import ALICE, BOB, MALLORY, NONCE, SESSION_ID, SPEC, WORKER

VECTOR = json.loads((Path(__file__).parent / "vectors" / "handshake-v2.json").read_text())
UPLOAD = UploadPurpose(op="upload", input="input_1")


def vector_keys() -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(VECTOR["mlkem_seed"])),
        x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR["client_x25519_private"])),
    )


def recorded_encapsulation(_key: mlkem.MLKEM768PublicKey) -> tuple[bytes, bytes]:
    return bytes.fromhex(VECTOR["mlkem_shared_secret"]), bytes.fromhex(VECTOR["mlkem_ciphertext"])


def client(**overrides: Any) -> v2.ClientHandshakeV2:
    arguments: dict[str, Any] = {
        "user_key": ALICE,
        "work_id": SPEC.work_id,
        "purpose": UPLOAD,
    }
    return v2.ClientHandshakeV2(**{**arguments, **overrides})


def respond(init: Any, signature: bytes, seen: SeenNonces | None = None, **kw: Any) -> Any:
    return v2.respond(
        init, signature, spec=SPEC, worker_key=WORKER, seen=seen or SeenNonces(), **kw
    )


def refused(check: str, action: Any) -> CheckFailed:
    with pytest.raises(CheckFailed) as caught:
        action()
    assert caught.value.check == check, caught.value
    return caught.value


# ------------------------------------------------------------------ vector


def test_handshake_v2_vector() -> None:
    mlkem_key, x25519_key = vector_keys()
    hello = client(nonce=NONCE, mlkem_key=mlkem_key, x25519_key=x25519_key)
    assert canonical(hello.init).decode() == VECTOR["init_jcs"]
    accepted = respond(
        hello.init,
        hello.init_signature,
        x25519_key=x25519.X25519PrivateKey.from_private_bytes(
            bytes.fromhex(VECTOR["worker_x25519_private"])
        ),
        session_id=SESSION_ID,
        encapsulate=recorded_encapsulation,
    )
    assert canonical(accepted.resp).decode() == VECTOR["resp_jcs"]
    keys = hello.finish(accepted.resp, accepted.resp_signature, worker_key=WORKER.public_key())
    assert keys == accepted.keys
    assert keys.transcript_sha256.hex() == VECTOR["transcript_sha256"]
    assert keys.client_to_worker.hex() == VECTOR["k_c2w"]
    assert keys.worker_to_client.hex() == VECTOR["k_w2c"]


DOCUMENTED = {
    "ss_mlkem": "mlkem_shared_secret",
    "ss_x25519": "x25519_shared_secret",
    "init_sha256": "init_sha256",
    "th": "transcript_sha256",
    "k_c2w": "k_c2w",
    "k_w2c": "k_w2c",
}


def test_the_documented_values_are_the_vectors() -> None:
    """docs/protocol.md prints the vector's values: they are the ones tested here."""
    document = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = document[document.index("## Session (v2)") : document.index("## Record stream")]
    printed = {
        match["name"]: match["value"]
        for match in re.finditer(r"^(?P<name>\w+) *= (?P<value>[0-9a-f]{64})$", section, re.M)
    }
    assert printed == {name: VECTOR[key] for name, key in DOCUMENTED.items()}


def test_the_vector_recomputed_as_documented() -> None:
    """docs/protocol.md, step by step, with nothing of cleanroom's but the bytes."""
    mlkem_key, x25519_key = vector_keys()
    ciphertext = bytes.fromhex(VECTOR["mlkem_ciphertext"])
    mlkem_secret = mlkem_key.decapsulate(ciphertext)
    assert mlkem_secret.hex() == VECTOR["mlkem_shared_secret"]
    worker_share = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex(VECTOR["worker_x25519_private"])
    ).public_key()
    x25519_secret = x25519_key.exchange(worker_share)
    assert x25519_secret.hex() == VECTOR["x25519_shared_secret"]
    init, resp = VECTOR["init_jcs"].encode(), VECTOR["resp_jcs"].encode()
    assert sha256(init).hex() == VECTOR["init_sha256"]
    transcript = sha256(init + resp)
    assert transcript.hex() == VECTOR["transcript_sha256"]
    for info, name in ((b"cleanroom/v2/c2w", "k_c2w"), (b"cleanroom/v2/w2c", "k_w2c")):
        key = HKDF(hashes.SHA256(), 32, salt=transcript, info=info).derive(
            mlkem_secret + x25519_secret  # ML-KEM's secret first, as X25519MLKEM768
        )
        assert key.hex() == VECTOR[name]
    document = json.loads(resp)
    assert document["suite"] == "X25519MLKEM768" and document["version"] == 2
    assert document["worker_mlkem_ciphertext"] == b64u(ciphertext)


def test_fresh_sessions_differ_and_interoperate() -> None:
    first, second = client(), client()
    keys = []
    for hello in (first, second):
        accepted = respond(hello.init, hello.init_signature)
        keys.append(
            hello.finish(accepted.resp, accepted.resp_signature, worker_key=WORKER.public_key())
        )
        assert keys[-1] == accepted.keys
    assert keys[0].client_to_worker != keys[1].client_to_worker


def test_either_secret_alone_changes_the_keys() -> None:
    """Hybrid: the keys depend on both exchanges (what one broken exchange leaves)."""
    init, resp = json.loads(VECTOR["init_jcs"]), json.loads(VECTOR["resp_jcs"])
    mlkem_secret = bytes.fromhex(VECTOR["mlkem_shared_secret"])
    x25519_secret = bytes.fromhex(VECTOR["x25519_shared_secret"])
    reference = v2.derive_session_keys(mlkem_secret, x25519_secret, init, resp)
    assert reference.client_to_worker.hex() == VECTOR["k_c2w"]
    for changed in (
        v2.derive_session_keys(bytes(32), x25519_secret, init, resp),
        v2.derive_session_keys(mlkem_secret, bytes(32), init, resp),
        v2.derive_session_keys(x25519_secret, mlkem_secret, init, resp),  # order is fixed
    ):
        assert changed.client_to_worker != reference.client_to_worker


# ---------------------------------------------------------- the Worker's checks


def signed(init: dict[str, Any], key: Any = ALICE) -> tuple[dict[str, Any], bytes]:
    return init, sign(key, canonical(init))


def changed_init(**fields: Any) -> tuple[dict[str, Any], bytes]:
    """An init with ``fields`` changed and signed again by its user: only the check fails."""
    init = copy.deepcopy(client(nonce=NONCE).init)
    init.update(fields)
    return signed(init)


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"suite": v2.V1_SUITE}, "handshake-suite"),  # a v2 message with v1's suite
        ({"suite": "X25519"}, "handshake-suite"),
        ({"version": 1}, "protocol-version"),
        ({"version": True}, "protocol-version"),
        ({"type": "cleanroom/handshake-init/v1"}, "type"),
        ({"client_mlkem": b64u(bytes(1183))}, "mlkem-encapsulation-key"),
        ({"client_mlkem": b64u(bytes(1185))}, "mlkem-encapsulation-key"),
        ({"client_mlkem": b64u(b"\xff" * 1184)}, "mlkem-encapsulation-key"),  # FIPS 203 check
        ({"client_x25519": b64u(bytes(31))}, "x25519-share"),
        ({"client_x25519": b64u(bytes(32))}, "x25519-share"),  # low order: all-zero secret
        ({"nonce": b64u(bytes(31))}, "nonce"),
        ({"work_id": "A" * 43}, "work-id"),
        ({"purpose": {"op": "upload", "input": "input_2"}}, "input-owner"),
        ({"purpose": {"op": "upload", "input": "output_1"}}, "purpose"),
    ],
)
def test_a_bad_init_is_refused_and_keeps_nothing(fields: dict[str, Any], check: str) -> None:
    seen = SeenNonces()
    init, signature = changed_init(**fields)
    refused(check, lambda: respond(init, signature, seen))
    good = client(nonce=NONCE)
    respond(good.init, good.init_signature, seen)  # the refused init burnt no nonce


def test_an_init_changed_in_transit_fails_its_signature() -> None:
    hello = client()
    tampered = copy.deepcopy(hello.init)
    tampered["purpose"] = {"op": "run"}
    refused("handshake-init-signature", lambda: respond(tampered, hello.init_signature))


def test_an_init_with_the_suite_changed_in_transit_names_the_suite() -> None:
    hello = client()
    tampered = dict(hello.init, suite=v2.V1_SUITE)
    refused("handshake-suite", lambda: respond(tampered, hello.init_signature))


def test_an_init_with_extra_or_missing_fields_is_refused() -> None:
    hello = client()
    refused("handshake-init", lambda: respond({**hello.init, "quote_sha256": "x"}, b""))
    init = dict(hello.init)
    del init["suite"]
    refused("handshake-init", lambda: respond(init, b""))


def test_a_replayed_init_is_refused() -> None:
    seen, hello = SeenNonces(), client()
    respond(hello.init, hello.init_signature, seen)
    refused("nonce", lambda: respond(hello.init, hello.init_signature, seen))


@pytest.mark.parametrize(
    ("user", "purpose", "check"),
    [
        (BOB, UploadPurpose(op="upload", input="input_1"), "input-owner"),
        (BOB, DownloadPurpose(op="download", output="output_1"), "output-recipient"),
        (BOB, RunPurpose(op="run"), "runner"),
        (MALLORY, UploadPurpose(op="upload", input="input_2"), "input-owner"),
    ],
)
def test_the_user_must_be_allowed_the_purpose(user: Any, purpose: Any, check: str) -> None:
    hello = client(user_key=user, purpose=purpose)
    refused(check, lambda: respond(hello.init, hello.init_signature))


# ---------------------------------------------------------- the client's checks


def answered() -> tuple[v2.ClientHandshakeV2, dict[str, Any]]:
    hello = client()
    return hello, respond(hello.init, hello.init_signature).resp


def finish_resigned(hello: v2.ClientHandshakeV2, resp: dict[str, Any]) -> None:
    """The Worker's key signs ``resp`` as it is: only the check on the change may fail."""
    hello.finish(resp, sign(WORKER, canonical(resp)), worker_key=WORKER.public_key())


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"suite": v2.V1_SUITE}, "handshake-suite"),
        ({"version": 1}, "protocol-version"),
        ({"type": "cleanroom/handshake-resp/v1"}, "type"),
        ({"worker_mlkem_ciphertext": b64u(bytes(1087))}, "mlkem-ciphertext"),
        ({"worker_mlkem_ciphertext": b64u(bytes(1089))}, "mlkem-ciphertext"),
        ({"worker_x25519": b64u(bytes(33))}, "x25519-share"),
        ({"worker_x25519": b64u(bytes(32))}, "x25519-share"),
        ({"nonce": b64u(bytes(32))}, "resp-nonce"),
        ({"init_sha256": b64u(bytes(32))}, "init-sha256"),
        ({"session_id": b64u(bytes(15))}, "session_id"),
    ],
)
def test_a_bad_resp_is_refused(fields: dict[str, Any], check: str) -> None:
    hello, resp = answered()
    refused(check, lambda: finish_resigned(hello, {**resp, **fields}))


def test_a_resp_for_another_clients_nonce_is_refused() -> None:
    """The Worker signed it, for another client's init: the nonce names whose it is."""
    ours, _ = answered()
    theirs, resp = answered()
    refused(
        "resp-nonce",
        lambda: ours.finish(resp, sign(WORKER, canonical(resp)), worker_key=WORKER.public_key()),
    )
    assert resp["nonce"] == theirs.init["nonce"]


def test_a_resp_not_signed_by_the_attested_key_is_refused() -> None:
    hello, resp = answered()
    refused(
        "handshake-resp-signature",
        lambda: hello.finish(resp, sign(MALLORY, canonical(resp)), worker_key=WORKER.public_key()),
    )


def test_a_resp_changed_in_transit_is_refused() -> None:
    hello = client()
    accepted = respond(hello.init, hello.init_signature)
    for field, value in (("session_id", b64u(bytes(16))), ("worker_x25519", b64u(b"\x09" * 32))):
        tampered = {**accepted.resp, field: value}
        refused(
            "handshake-resp-signature",
            lambda tampered=tampered: hello.finish(
                tampered, accepted.resp_signature, worker_key=WORKER.public_key()
            ),
        )


def test_the_handshake_finishes_once() -> None:
    hello = client()
    accepted = respond(hello.init, hello.init_signature)
    hello.finish(accepted.resp, accepted.resp_signature, worker_key=WORKER.public_key())
    refused(
        "handshake-state",
        lambda: hello.finish(
            accepted.resp, accepted.resp_signature, worker_key=WORKER.public_key()
        ),
    )
