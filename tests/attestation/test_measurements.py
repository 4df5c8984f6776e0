"""The release's measurement file: its documented vector, every way it is refused, and a
client that takes its expected measurements from it (and from nothing else)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from cleanroom.attestation.errors import EvidenceError
from cleanroom.attestation.measurements import (
    EnclaveReference,
    MeasurementsError,
    ReleaseMeasurements,
    key_id,
    load_release_key,
    sign_measurements,
    verify_measurements,
)
from cleanroom.cli.main import main
from cleanroom.client.profile import Profile, ProfileError
from cleanroom.sgx import AttributeFlags, Attributes
from tests.tee.gramine.sigstructs import PRODUCTION, sign, unsigned

# The vector of docs/protocol.md, "Release measurement file".
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_ID = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
MEASUREMENTS = ReleaseMeasurements(
    release="0.1.0",
    issued_at=1767225600,
    backend="gramine-sgx",
    attester=EnclaveReference((b"\xaa" * 32,), b"\xcc" * 32, 1, 1),
    worker=EnclaveReference((b"\xbb" * 32,), b"\xcc" * 32, 2, 1),
    source={"commit": "0" * 40},
)
SIGNATURE = (
    "eyJhbGciOiJFZERTQSIsImI2NCI6ZmFsc2UsImNyaXQiOlsiYjY0Il0sImtpZCI6ImEwNTA4MzdkODUwNzA1ODJjY2"
    "Y3Mzk0YjA5ODg4NDdjYzMxMmNiODgyNTliODk0ODk5ZjZmMjM5Y2YxNzkxYTUiLCJ0eXAiOiJjbGVhbnJvb20tbWVh"
    "c3VyZW1lbnRzK2p3cyJ9..Kybqpo7AMMiP6yHxA3G3_mpW0wBhmMo1_xTS1sp3_gPMBuqflBXdLPGen4GbHmAieXt9"
    "ZoBrg--r2FoKf_shAQ"
)


def signed(
    measurements: ReleaseMeasurements = MEASUREMENTS, key: ed25519.Ed25519PrivateKey = KEY
) -> bytes:
    return sign_measurements(measurements, key)


def refused(
    data: bytes, check: str, key: ed25519.Ed25519PublicKey | None = None
) -> MeasurementsError:
    with pytest.raises(MeasurementsError) as caught:
        verify_measurements(data, key or KEY.public_key())
    assert caught.value.check == check, caught.value
    return caught.value


def edited(change: str, value: object) -> bytes:
    document = json.loads(signed())
    target = document["measurements"]
    *path, last = change.split(".")
    for part in path:
        target = target[part]
    target[last] = value
    return json.dumps(document).encode()


def test_the_documented_vector() -> None:
    assert key_id(KEY.public_key()) == KEY_ID
    document = json.loads(signed())
    assert document["signature"] == SIGNATURE
    # Recomputed without the module: JWS signing input with the unencoded payload.
    header_b64, empty, signature_b64 = SIGNATURE.split(".")
    assert empty == ""  # detached
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    assert header == {
        "alg": "EdDSA", "b64": False, "crit": ["b64"], "kid": KEY_ID,
        "typ": "cleanroom-measurements+jws",
    }  # fmt: skip
    signing_input = header_b64.encode() + b"." + rfc8785.dumps(document["measurements"])
    KEY.public_key().verify(base64.urlsafe_b64decode(signature_b64 + "=="), signing_input)
    assert verify_measurements(signed(), KEY.public_key()) == MEASUREMENTS


def test_any_serialisation_of_the_same_values_verifies() -> None:
    document = json.loads(signed())
    document["measurements"] = dict(reversed(list(document["measurements"].items())))
    compact = json.dumps(document, separators=(",", ":")).encode()
    assert verify_measurements(compact, KEY.public_key()) == MEASUREMENTS


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("worker.mrenclaves", ["dd" * 32]),
        ("attester.isv_svn", 2),
        ("issued_at", 1767225601),
        ("release", "0.1.1"),
        ("source.commit", "1" * 40),
    ],
)
def test_a_changed_value_is_refused(change: str, value: object) -> None:
    refused(edited(change, value), "measurements-signature")


def test_another_key_is_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    refused(signed(key=other), "measurements-signature")
    refused(signed(), "measurements-signature", other.public_key())


def test_another_algorithm_or_form_is_refused() -> None:
    document = json.loads(signed())
    header_b64, _, signature = document["signature"].split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    for changes in ({"alg": "none"}, {"alg": "HS256"}, {"b64": True}, {"typ": "JWT"}, {"crit": []}):
        forged = base64.urlsafe_b64encode(json.dumps({**header, **changes}).encode()).rstrip(b"=")
        document["signature"] = f"{forged.decode()}..{signature}"
        refused(json.dumps(document).encode(), "measurements-signature")
    # An attached payload is not this file's form either.
    document["signature"] = f"{header_b64}.e30.{signature}"
    refused(json.dumps(document).encode(), "measurements-signature")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"measurements": {}}',
        b'{"measurements": {}, "signature": 7}',
        b'{"measurements": {}, "signature": "x", "extra": 1}',
    ],
)
def test_a_file_of_another_shape_is_unusable(data: bytes) -> None:
    error = refused(data, "measurements-format")
    assert isinstance(error, EvidenceError)


def test_content_that_no_release_signs_is_refused() -> None:
    for measurements in (
        ReleaseMeasurements("0.1.0", 1, "sev-snp", MEASUREMENTS.attester, MEASUREMENTS.worker),
        ReleaseMeasurements(
            "0.1.0",
            1,
            "gramine-sgx",
            MEASUREMENTS.attester,
            EnclaveReference((b"\xbb" * 32,), b"\xee" * 32, 2, 1),  # another signer
        ),
    ):
        with pytest.raises(MeasurementsError) as caught:
            signed(measurements)
        assert caught.value.check == "measurements-format"
    # Signed by the release key, but not values a release writes: refused all the same.
    for change, value in (
        ("worker.mrenclaves", ["bb" * 32, "aa" * 32]),
        ("attester.mrsigner", "CC" * 32),
        ("attester.mrsigner", "cc" * 32 + "\n"),  # a pattern's "$" would let it through
        ("worker.mrenclaves", ["bb" * 32 + "\n"]),
        ("release", "0.1.0\n"),
        ("worker.isv_svn", True),
        ("extra", 1),
    ):
        refused(signed_as_is(change, value), "measurements-format")


def signed_as_is(change: str, value: object) -> bytes:
    """The measurement file with one change, signed as the release key signs (so only the
    content checks can refuse it)."""
    document = json.loads(signed())["measurements"]
    target = document
    *path, last = change.split(".")
    for part in path:
        target = target[part]
    target[last] = value
    signature = jwt.PyJWS().encode(
        rfc8785.dumps(document),
        KEY,
        algorithm="EdDSA",
        headers={"typ": "cleanroom-measurements+jws", "kid": KEY_ID, "b64": False, "crit": ["b64"]},
        is_payload_detached=True,
    )
    return json.dumps({"measurements": document, "signature": signature}).encode()


def test_only_an_ed25519_release_key_is_taken() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(MeasurementsError) as caught:
        load_release_key(pem)
    assert caught.value.check == "release-key"


# -- the client ---------------------------------------------------------------------------------

MANAGER = "http://127.0.0.1:9"  # nothing listens: configure must not need the manager


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CLEANROOM_HOME, with no profile chosen by the environment."""
    directory = tmp_path / "home"
    monkeypatch.setenv("CLEANROOM_HOME", str(directory))
    monkeypatch.delenv("CLEANROOM_PROFILE", raising=False)
    return directory


def configure(*extra: str) -> list[str]:
    return [
        "configure", "--manager-url", MANAGER, "--client-id", "c", "--client-secret", "s",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def files(tmp_path: Path, home: Path) -> dict[str, Path]:
    public = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "release.pub").write_bytes(public)
    (tmp_path / "measurements.json").write_bytes(signed())
    newer = ReleaseMeasurements(
        "0.2.0", MEASUREMENTS.issued_at + 100, "gramine-sgx",
        EnclaveReference((b"\x01" * 32,), b"\xcc" * 32, 1, 2),
        EnclaveReference((b"\x02" * 32,), b"\xcc" * 32, 2, 2),
    )  # fmt: skip
    (tmp_path / "newer.json").write_bytes(signed(newer))
    return {
        "key": tmp_path / "release.pub",
        "file": tmp_path / "measurements.json",
        "newer": tmp_path / "newer.json",
    }


def test_the_profile_takes_its_measurements_from_the_signed_file(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(configure("--measurements", str(files["file"]), "--release-key", str(files["key"])))
    assert code == 0, capsys.readouterr().err
    config = Profile.load().config
    assert config.attester_mrenclaves == ["aa" * 32]
    assert config.attester_mrsigner == "cc" * 32
    assert config.worker_mrenclaves == ["bb" * 32]
    assert (config.isv_prod_id, config.min_isv_svn) == (1, 1)
    assert config.release_key_sha256 == KEY_ID
    assert config.measurements is not None and config.measurements.release == "0.1.0"
    assert Profile.load().release_key() is not None
    assert f"signed by release key {KEY_ID}" in capsys.readouterr().out
    # A newer file later: the pinned release key is used.
    assert main(configure("--measurements", str(files["newer"]))) == 0
    assert Profile.load().config.worker_mrenclaves == ["02" * 32]


def test_an_older_file_is_refused_unless_asked(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key = ("--release-key", str(files["key"]))
    assert main(configure("--measurements", str(files["newer"]), *key)) == 0
    capsys.readouterr()
    assert main(configure("--measurements", str(files["file"]))) == 1
    assert "measurements-rollback" in capsys.readouterr().err
    assert Profile.load().config.worker_mrenclaves == ["02" * 32]
    assert main(configure("--measurements", str(files["file"]), "--allow-older-measurements")) == 0
    assert Profile.load().config.worker_mrenclaves == ["bb" * 32]


def test_the_client_refuses_what_the_release_did_not_sign(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ("--release-key", str(files["key"]))
    tampered = tmp_path / "tampered.json"
    document = json.loads(files["file"].read_bytes())
    document["measurements"]["worker"]["mrenclaves"] = ["ee" * 32]
    tampered.write_text(json.dumps(document))
    assert main(configure("--measurements", str(tampered), *key)) == 1
    assert "measurements-signature" in capsys.readouterr().err
    # No key: the file alone proves nothing.
    assert main(configure("--measurements", str(files["file"]))) == 2
    assert "--release-key" in capsys.readouterr().err
    assert (
        main(configure("--measurements", str(files["file"]), *key, "--worker-mrenclave", "ab" * 32))
        == 2
    )
    assert main(configure(*key)) == 2
    # A file for the simulated backend is not for a profile that trusts Intel's root.
    simulated = tmp_path / "simulated.json"
    simulated.write_bytes(
        signed(
            ReleaseMeasurements("0.1.0", 1, "simulated", MEASUREMENTS.attester, MEASUREMENTS.worker)
        )
    )
    capsys.readouterr()
    assert main(configure("--measurements", str(simulated), *key)) == 1
    assert "measurements-backend" in capsys.readouterr().err
    with pytest.raises(ProfileError):  # nothing was configured by any of these
        Profile.load()


def test_a_swapped_pinned_key_is_noticed(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(configure("--measurements", str(files["file"]), "--release-key", str(files["key"])))
        == 0
    )
    profile = Profile.load()
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    (profile.directory / "release-key.pem").write_bytes(
        other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    capsys.readouterr()
    assert main(configure("--measurements", str(files["newer"]))) == 2
    assert "release-key.pem changed since it was configured" in capsys.readouterr().err


# -- the release's side -------------------------------------------------------------------------


def test_publish_signs_what_the_sigstructs_state(files: dict[str, Path], tmp_path: Path) -> None:
    private = tmp_path / "release.pem"
    private.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    sigs = {}
    for image, prod_id in (("attester", 1), ("worker", 2)):
        sigs[image] = tmp_path / f"{image}.sig"
        sigs[image].write_bytes(
            sign(unsigned(isv_prod_id=prod_id, enclave_hash=bytes([prod_id]) * 32)).to_bytes()
        )
    out = tmp_path / "published.json"
    argv = [
        "gramine", "publish", "--attester-sig", str(sigs["attester"]),
        "--worker-sig", str(sigs["worker"]), "--key", str(private), "--out", str(out),
        "--release", "9.9.9", "--source", "commit=abc",
    ]  # fmt: skip
    assert main(argv) == 0
    published = verify_measurements(out.read_bytes(), KEY.public_key())
    assert published.attester.mr_enclaves == (bytes([1]) * 32,)
    assert published.worker.mr_enclaves == (bytes([2]) * 32,)
    assert (published.release, published.source) == ("9.9.9", {"commit": "abc"})
    # A DEBUG enclave is never published; nor a Worker's signature given as the Attester's.
    debug = Attributes(flags=PRODUCTION.flags | AttributeFlags.DEBUG, xfrm=PRODUCTION.xfrm)
    sigs["worker"].write_bytes(sign(unsigned(isv_prod_id=2, attributes=debug)).to_bytes())
    assert main(argv) == 1
    argv[argv.index(str(sigs["attester"]))] = str(sigs["worker"])
    assert main(argv) == 1
