"""Reading a Gramine enclave's SIGSTRUCT: values only from a file EINIT would accept."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from cleanroom.cli.main import main
from cleanroom.sgx import AttributeFlags, Attributes, SigStruct
from cleanroom.tee.gramine.measure import SigstructError, read_sigstruct
from cleanroom.tee.measure import default_signer_pem, mr_signer
from tests.tee.gramine.sigstructs import MASK, PRODUCTION, sign, signer_key, unsigned

DEBUG = Attributes(flags=PRODUCTION.flags | AttributeFlags.DEBUG, xfrm=PRODUCTION.xfrm)


def signed(**changes: object) -> bytes:
    return sign(unsigned(**changes)).to_bytes()


def refused(data: bytes, check: str) -> SigstructError:
    with pytest.raises(SigstructError) as caught:
        read_sigstruct(data)
    assert caught.value.check == check, caught.value
    return caught.value


def test_a_signed_sigstruct_gives_its_measurement() -> None:
    measurement = read_sigstruct(signed(isv_prod_id=7, isv_svn=9))
    public_pem = (
        signer_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert measurement.mr_enclave == bytes(range(32))
    # MRSIGNER as EINIT computes it, and as the simulated backend's measure does.
    n = signer_key().public_key().public_numbers().n
    assert measurement.mr_signer == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert measurement.mr_signer == mr_signer(public_pem)
    assert (measurement.isv_prod_id, measurement.isv_svn) == (7, 9)
    assert measurement.attributes == PRODUCTION and not measurement.debug
    assert measurement.date == "2025-06-14"
    assert measurement.to_json()["attribute_flags"] == ["INIT", "MODE64BIT"]


@pytest.mark.parametrize("size", [0, 1807, 1809, 4096])
def test_a_file_of_the_wrong_size_is_refused(size: int) -> None:
    refused(signed()[:size].ljust(size, b"\0"), "sigstruct-size")


def test_a_file_with_other_headers_is_refused() -> None:
    data = bytearray(signed())
    data[24] ^= 0xFF
    refused(bytes(data), "sigstruct-header")


def test_an_exponent_other_than_3_is_refused() -> None:
    # EXPONENT lies outside the signed regions: only this check catches it.
    sigstruct = dataclasses.replace(sign(unsigned()), exponent=65537)
    refused(sigstruct.to_bytes(), "sigstruct-exponent")


def test_a_short_modulus_is_refused() -> None:
    sigstruct = dataclasses.replace(
        sign(unsigned()), modulus=((1 << 2047) + 1).to_bytes(384, "little")
    )
    refused(sigstruct.to_bytes(), "sigstruct-modulus")


@pytest.mark.parametrize(
    "change",
    [
        {"enclave_hash": bytes(32)},
        {"isv_svn": 4},
        {"isv_prod_id": 2},
        {"attributes": Attributes(flags=PRODUCTION.flags, xfrm=0x07)},
        {"misc_select": 1},
        {"date": 0x20250615},
        {"attribute_mask": Attributes(flags=MASK.flags, xfrm=0)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_signed_field_changed_after_signing_is_refused(change: dict[str, object]) -> None:
    sigstruct = dataclasses.replace(sign(unsigned()), **change)
    refused(sigstruct.to_bytes(), "sigstruct-signature")


def test_another_signers_modulus_is_refused() -> None:
    """Claiming the release signer's MRSIGNER without its private key."""
    release = serialization.load_pem_public_key(default_signer_pem())
    n = release.public_numbers().n  # type: ignore[union-attr]
    sigstruct = dataclasses.replace(sign(unsigned()), modulus=n.to_bytes(384, "little"))
    error = refused(sigstruct.to_bytes(), "sigstruct-signature")
    assert mr_signer(default_signer_pem()).hex() in str(error)


def test_a_signature_not_below_the_modulus_is_refused() -> None:
    sigstruct = sign(unsigned())
    too_big = dataclasses.replace(sigstruct, signature=sigstruct.modulus)
    refused(too_big.to_bytes(), "sigstruct-signature")


@pytest.mark.parametrize("field", ["q1", "q2"])
def test_wrong_q1_or_q2_is_refused(field: str) -> None:
    sigstruct = sign(unsigned())
    value = int.from_bytes(getattr(sigstruct, field), "little") + 1
    changed = dataclasses.replace(sigstruct, **{field: value.to_bytes(384, "little")})
    refused(changed.to_bytes(), "sigstruct-q1q2")


def test_a_debug_enclave_is_refused_unless_allowed() -> None:
    data = signed(attributes=DEBUG)
    error = refused(data, "sigstruct-debug")
    assert error.actual == "DEBUG set"
    assert read_sigstruct(data, allow_debug=True).debug


def test_a_signature_that_leaves_debug_free_is_refused() -> None:
    data = signed(
        attribute_mask=Attributes(flags=MASK.flags & ~AttributeFlags.DEBUG, xfrm=MASK.xfrm)
    )
    error = refused(data, "sigstruct-debug")
    assert "launches a DEBUG enclave too" in error.message


# ---------------------------------------------------------------------- the CLI


def write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "app.sig"
    path.write_bytes(data)
    return str(path)


def test_measure_gramine_prints_the_sigstruct(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, signed())
    assert main(["measure", "--gramine", path, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mrenclave"] == bytes(range(32)).hex()
    assert document["debug"] is False
    assert document["backend"] == "gramine-sgx"
    assert main(["measure", "--gramine", path]) == 0
    out = capsys.readouterr().out
    assert f"MRENCLAVE: {bytes(range(32)).hex()}" in out
    assert "ISVPRODID: 1  ISVSVN: 3" in out


@pytest.mark.parametrize(
    ("data", "code", "check"),
    [
        (b"\0" * 1807, 2, "sigstruct-size"),
        (SigStruct.SIZE * b"\0", 2, "sigstruct-header"),
        (None, 1, "sigstruct-debug"),
    ],
)
def test_measure_gramine_refusals(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: bytes | None,
    code: int,
    check: str,
) -> None:
    path = write(tmp_path, data if data is not None else signed(attributes=DEBUG))
    capsys.readouterr()
    assert main(["measure", "--gramine", path]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"error: {check}: ") and "Traceback" not in err
    assert main(["measure", "--gramine", path, "--json"]) == code
    assert json.loads(capsys.readouterr().out)["error"]["check"] == check


def test_measure_needs_exactly_one_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, signed())
    assert main(["measure"]) == 2
    assert main(["measure", "worker", "--gramine", path]) == 2
    assert main(["measure", "--gramine", str(tmp_path / "absent.sig")]) == 2
    assert "error: " in capsys.readouterr().err
