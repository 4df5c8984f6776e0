"""The test vectors of docs/protocol.md, recomputed from the code and independently."""

from __future__ import annotations

import hashlib

import rfc8785
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from cleanroom.insecure.simulated.platform import derive_report_key
from cleanroom.sgx import Attributes, ReportBody
from cleanroom.tee.image import TrustedFile, group_digest
from cleanroom.tee.measure import WORKER, default_signer_pem, manifest_of, mr_enclave_of, mr_signer

SECRET = bytes(range(16))
TARGET = b"\xaa" * 32
ATTRIBUTES = Attributes(flags=0x05, xfrm=0x03)
KEY_ID = b"\x11" * 32
CPU_SVN = bytes(range(16, 32))
REPORT_KEY = "0ef6ca8f85e4417de69544b6cb0434e6"
BODY = ReportBody.create(
    cpu_svn=CPU_SVN,
    attributes=ATTRIBUTES,
    mr_enclave=b"\xbb" * 32,
    mr_signer=b"\xcc" * 32,
    isv_prod_id=1,
    isv_svn=2,
    report_data=bytes(range(64)),
)


def _cmac(key: bytes, message: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def test_report_key_vector() -> None:
    assert ATTRIBUTES.to_bytes().hex() == "05000000000000000300000000000000"
    assert derive_report_key(SECRET, TARGET, ATTRIBUTES, KEY_ID, CPU_SVN).hex() == REPORT_KEY


def test_report_key_is_the_documented_sp800_108_block() -> None:
    block = (
        (1).to_bytes(4, "big")
        + b"cleanroom simulated SGX REPORT key"
        + b"\x00"
        + TARGET
        + ATTRIBUTES.to_bytes()
        + KEY_ID
        + CPU_SVN
        + (128).to_bytes(4, "big")
    )
    assert _cmac(SECRET, block).hex() == REPORT_KEY


def test_report_mac_vector() -> None:
    raw = BODY.to_bytes()
    assert hashlib.sha256(raw).hexdigest() == (
        "d7113fdb404a5a3427bf2f06118b488359350925e8e4df1eeeea3a7183fba73d"
    )
    assert _cmac(bytes.fromhex(REPORT_KEY), raw).hex() == "5a4fc2c1817496d4a2b79c01990d8171"


def test_measurement_vector() -> None:
    entry = TrustedFile("cleanroom", "/srv/cleanroom/__init__.py", "00" * 32, 0)
    group = group_digest("cleanroom", [entry])
    listing = "0000000000000000000000000000000000000000000000000000000000000000 0 "
    assert (
        group.sha256
        == hashlib.sha256(f"{listing}/srv/cleanroom/__init__.py\n".encode()).hexdigest()
    )
    assert group.sha256 == "7880a2f8bd459597d4b61fa3ae07be44a74b2e2bef86be990d4109f2649e0c65"
    manifest = {
        "type": "cleanroom/enclave-manifest/v2",
        "image": "worker",
        "groups": [group.to_json()],
        "config": {
            "isv_prod_id": 2,
            "isv_svn": 1,
            "attributes": "05000000000000000300000000000000",
            "runtimes": {},
        },
    }
    assert manifest == manifest_of(WORKER, [group], {"runtimes": {}})
    assert rfc8785.dumps(manifest) == (
        b'{"config":{"attributes":"05000000000000000300000000000000","isv_prod_id":2,'
        b'"isv_svn":1,"runtimes":{}},"groups":[{"bytes":0,"files":1,"name":"cleanroom",'
        b'"sha256":"7880a2f8bd459597d4b61fa3ae07be44a74b2e2bef86be990d4109f2649e0c65"}],'
        b'"image":"worker","type":"cleanroom/enclave-manifest/v2"}'
    )
    assert mr_enclave_of(manifest).hex() == (
        "63ddbc2c87857f47f74630b2264707743cab9841013f0671e150b654c8f6664c"
    )


def test_release_signer_vector() -> None:
    assert mr_signer(default_signer_pem()).hex() == (
        "39b6d5cccc41e6e1abf45ed39647e8d41e2711e80e1865aebc5a7b014823eedb"
    )
