"""Reference values: what a client expects the enclaves to be, and where that comes from.

A client accepts an Attester and a Worker by their measurements, and those are
reference values with a source of their own (as a verifier asks a reference-value
provider, not the code it verifies). A source gives :class:`ReferenceValues`:

- :class:`SignedRelease`, a release's published measurement file, verified under
  the release key (:mod:`cleanroom.attestation.measurements`): how a client must
  learn what the published enclaves are;
- ``cleanroom.tee.reference.LocalMeasurement``, what this installation's enclave
  images measure: for development against the simulated backend.

The client's profile asks the source it is handed and imports neither: the command
line chooses the source. This module is light (no attestation package, no TEE
code): ``whoami`` imports it through the profile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization

from cleanroom.errors import Error

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from cleanroom.attestation.measurements import ReleaseMeasurements

__all__ = [
    "ReferenceValueSource",
    "ReferenceValues",
    "ReferenceValuesUnavailable",
    "SignedRelease",
]


class ReferenceValuesUnavailable(Error):
    """A source cannot give its reference values (e.g. an installation it cannot measure)."""


@dataclass(frozen=True)
class ReferenceValues:
    """The values a client's attestation policy expects of the enclaves.

    The Attester by any of its MRENCLAVEs under its MRSIGNER, with its ISVPRODID and at
    least its ISVSVN; the Worker by any of its MRENCLAVEs (the Attester vouches for it).
    """

    attester_mrenclaves: frozenset[bytes]
    attester_mrsigner: bytes
    worker_mrenclaves: frozenset[bytes]
    isv_prod_id: int
    min_isv_svn: int


class ReferenceValueSource(Protocol):
    """Where reference values come from."""

    def reference_values(self) -> ReferenceValues:
        """The values; :class:`ReferenceValuesUnavailable` if this source has none."""
        ...


@dataclass(frozen=True)
class SignedRelease:
    """A release's measurement file verified under its release key: a profile pins both."""

    measurements: ReleaseMeasurements
    release_key: ed25519.Ed25519PublicKey
    file_sha256: str  # of the file as it was read

    @classmethod
    def verify(cls, data: bytes, release_key: ed25519.Ed25519PublicKey) -> SignedRelease:
        """Verify a measurement file (MeasurementsError naming the check if refused)."""
        from cleanroom.attestation.measurements import verify_measurements

        measurements = verify_measurements(data, release_key)
        return cls(measurements, release_key, hashlib.sha256(data).hexdigest())

    def reference_values(self) -> ReferenceValues:
        attester = self.measurements.attester
        return ReferenceValues(
            attester_mrenclaves=frozenset(attester.mr_enclaves),
            attester_mrsigner=attester.mr_signer,
            worker_mrenclaves=frozenset(self.measurements.worker.mr_enclaves),
            isv_prod_id=attester.isv_prod_id,
            min_isv_svn=attester.isv_svn,
        )

    @property
    def key_id(self) -> str:
        """The release key's name: SHA-256 of its SubjectPublicKeyInfo (DER), hex."""
        from cleanroom.attestation.measurements import key_id

        return key_id(self.release_key)

    def key_pem(self) -> bytes:
        return self.release_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
