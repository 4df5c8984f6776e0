"""Fixed keys and a fixed spec: the inputs of docs/protocol.md's vectors."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.protocol.encoding import b64u
from cleanroom.protocol.keys import user_id
from cleanroom.protocol.spec import WorkSpec


def fixed_key(scalar: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(scalar, ec.SECP256R1())


ALICE = fixed_key(0xA11CE)
BOB = fixed_key(0xB0B)
MALLORY = fixed_key(0x3A11)
WORKER = fixed_key(0x3011C)
CLIENT_EPH = fixed_key(0xC1E)
WORKER_EPH = fixed_key(0x3E)

ALICE_ID = user_id(ALICE.public_key())
BOB_ID = user_id(BOB.public_key())
MALLORY_ID = user_id(MALLORY.public_key())

SPEC_DOCUMENT = {
    "type": "cleanroom/work-spec/v1",
    "name": "overlap",
    "function": "fs://" + b64u(bytes(range(32))),
    "runtime": "python3.11",
    "handler": "handler.run",
    "resources": {
        "memory_mib": 2048,
        "timeout_s": 3600,
        "cpu_s": 14400,
        "processes": 256,
        "disk_mib": 1024,
    },
    "inputs": {"input_1": ALICE_ID, "input_2": BOB_ID},
    "outputs": {"output_1": ALICE_ID},
    "runners": [ALICE_ID],
    "parameters": {"k": 10},
    "nonce": b64u(bytes(16)),
}
SPEC = WorkSpec.parse(SPEC_DOCUMENT)
WORKER_ID = "worker-1"
NONCE = bytes([0x4E]) * 32
QUOTE_SHA256 = bytes([0x51]) * 32
SESSION_ID = bytes([0x5E]) * 16
