"""``python -m bench.signatures``: what an ML-DSA-65 second signature would cost a session.

A session signs twice (the client's init, the Worker's resp) and verifies twice. This
times ECDSA P-256 (what the protocol uses) and ML-DSA-65 (FIPS 204, a candidate hybrid
second signature) on messages the size of a v2 init, one core, median of many runs,
and prints the sizes; docs/protocol.md quotes the result.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa

from bench.common import median

MESSAGE = b"x" * 2200  # about the JCS of a v2 init (its ML-KEM key is 1184 bytes)


def timed_ms(call: Callable[[], object], count: int) -> float:
    for _ in range(10):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signatures", description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    count = parser.parse_args().count
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    ecdsa_signature = ecdsa.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
    dilithium = mldsa.MLDSA65PrivateKey.generate()
    dilithium_signature = dilithium.sign(MESSAGE)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    rows = [
        (
            "ECDSA P-256",
            timed_ms(lambda: ecdsa.sign(MESSAGE, ec.ECDSA(hashes.SHA256())), count),
            timed_ms(
                lambda: ecdsa.public_key().verify(
                    ecdsa_signature, MESSAGE, ec.ECDSA(hashes.SHA256())
                ),
                count,
            ),
            len(ecdsa_signature),
            len(ecdsa.public_key().public_bytes(*spki)),
        ),
        (
            "ML-DSA-65",
            timed_ms(lambda: dilithium.sign(MESSAGE), count),
            timed_ms(lambda: dilithium.public_key().verify(dilithium_signature, MESSAGE), count),
            len(dilithium_signature),
            len(dilithium.public_key().public_bytes_raw()),
        ),
    ]
    print(f"| signature ({count} each, median) | sign ms | verify ms | signature B | key B |")
    print("|---|---|---|---|---|")
    for name, sign_ms, verify_ms, signature_size, key_size in rows:
        print(f"| {name} | {sign_ms:.3f} | {verify_ms:.3f} | {signature_size} | {key_size} |")
    extra = 2 * (rows[1][1] + rows[1][2])
    print(f"\nper session, a second ML-DSA-65 signature on init and resp adds {extra:.2f} ms "
          f"of CPU and {2 * rows[1][3]} bytes ({2 * rows[1][3] * 4 // 3} as base64)")  # fmt: skip


if __name__ == "__main__":
    main()
