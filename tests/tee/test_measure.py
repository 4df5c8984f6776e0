"""Measurements are reproducible from the sources and change with any trusted byte."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleanroom.sgx import AttributeFlags
from cleanroom.tee.measure import (
    MANIFEST_TYPE,
    MeasurementError,
    default_signer_pem,
    measure,
    mr_signer,
    package_root,
)


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cleanroom"
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_measurement_is_reproducible() -> None:
    assert measure("attester") == measure("attester")
    assert measure("worker").mr_enclave != measure("attester").mr_enclave


def test_mrenclave_is_the_hash_of_the_canonical_manifest() -> None:
    worker = measure("worker")
    assert worker.manifest["type"] == MANIFEST_TYPE
    assert worker.mr_enclave == hashlib.sha256(rfc8785.dumps(dict(worker.manifest))).digest()
    paths = [entry["path"] for entry in worker.manifest["files"]]
    assert paths == sorted(paths)
    assert "cleanroom/sgx/structs.py" in paths
    assert not any("__pycache__" in p for p in paths)


def test_attester_measurement_covers_the_worker_it_admits() -> None:
    config = measure("attester").manifest["config"]
    assert config["worker_mrenclaves"] == [measure("worker").mr_enclave.hex()]


def test_a_changed_trusted_file_changes_both_measurements(source_copy: Path) -> None:
    before_worker = measure("worker", root=source_copy)
    before_attester = measure("attester", root=source_copy)
    target = source_copy / "sgx" / "structs.py"
    target.write_bytes(target.read_bytes() + b"\n# changed\n")
    assert measure("worker", root=source_copy).mr_enclave != before_worker.mr_enclave
    assert measure("attester", root=source_copy).mr_enclave != before_attester.mr_enclave


def test_an_untrusted_file_does_not_change_it(source_copy: Path) -> None:
    before = measure("worker", root=source_copy)
    (source_copy / "cli" / "main.py").write_text("# not inside the enclave\n")
    assert measure("worker", root=source_copy).mr_enclave == before.mr_enclave


def test_mrsigner_is_sha256_of_the_little_endian_modulus() -> None:
    key = serialization.load_pem_public_key(default_signer_pem())
    assert isinstance(key, rsa.RSAPublicKey)
    modulus = key.public_numbers().n
    expected = hashlib.sha256(modulus.to_bytes(384, "little")).digest()
    assert measure("worker").mr_signer == expected == mr_signer(default_signer_pem())


@pytest.mark.parametrize(("size", "exponent"), [(2048, 3), (3072, 65537)])
def test_signer_key_must_be_an_sgx_signer(size: int, exponent: int) -> None:
    key = rsa.generate_private_key(public_exponent=exponent, key_size=size).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(MeasurementError):
        mr_signer(pem)


def test_identity_is_production_unless_asked() -> None:
    worker = measure("worker")
    assert not worker.identity().attributes.debug
    assert worker.identity().attributes.flags & AttributeFlags.MODE64BIT
    assert worker.identity(debug=True).attributes.debug


def test_unknown_image_is_refused() -> None:
    with pytest.raises(MeasurementError, match="unknown enclave image"):
        measure("controller")


def test_each_image_holds_only_its_own_enclave_code() -> None:
    def paths(image: str) -> set[str]:
        return {entry["path"] for entry in measure(image).manifest["files"]}

    worker, attester = paths("worker"), paths("attester")
    assert "cleanroom/enclave/worker.py" in worker - attester
    assert "cleanroom/enclave/attester.py" in attester - worker
    assert "cleanroom/protocol/handshake.py" in worker & attester
    assert not any(p.startswith(("cleanroom/cli/", "cleanroom/client/")) for p in worker | attester)


def test_attester_code_does_not_change_the_worker(source_copy: Path) -> None:
    before = measure("worker", root=source_copy)
    target = source_copy / "enclave" / "attester.py"
    target.write_bytes(target.read_bytes() + b"\n# changed\n")
    assert measure("worker", root=source_copy).mr_enclave == before.mr_enclave
