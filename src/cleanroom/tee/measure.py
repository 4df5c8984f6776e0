"""Enclave measurement that anyone can recompute from a release, without running it.

An enclave image is a canonical manifest: the trusted files that run inside the
enclave (path and SHA-256) and its configuration (product ID, security version,
attributes, runtime, dependency versions and, for the Attester, the Worker
measurement it admits). In the simulated backend:

- MRENCLAVE = SHA-256 of the manifest's canonical JSON (RFC 8785);
- MRSIGNER = SHA-256 of the signer's RSA-3072 modulus, little-endian, as SGX
  defines it for SIGSTRUCT.

The Attester's configuration names the Worker's MRENCLAVE, so the Attester's own
measurement covers which Workers it will ever admit. For Gramine the same command
will wrap ``gramine-sgx-sign``/``gramine-sgx-sigstruct-view``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleanroom.sgx import AttributeFlags, Attributes
from cleanroom.tee.platform import EnclaveIdentity

MANIFEST_TYPE = "cleanroom/enclave-manifest/v1"
SIGNER_KEY_RESOURCE = "simulated-signer.pem"

# Third-party code the enclave imports: measured by name and version. The simulated
# backend does not hash their files; a Gramine manifest lists them as trusted files.
ENCLAVE_DEPENDENCIES = ("cryptography", "rfc8785", "pydantic")

PRODUCTION_ATTRIBUTES = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)


class MeasurementError(Exception):
    """An enclave image cannot be measured (unknown image, unreadable file, bad key)."""


@dataclass(frozen=True)
class EnclaveImage:
    """What goes into an enclave and so into its measurement."""

    name: str
    isv_prod_id: int
    isv_svn: int
    # Glob patterns, relative to the installed ``cleanroom`` package.
    trusted: tuple[str, ...]
    extra_config: Mapping[str, Any] = field(default_factory=dict)


# What both enclaves run; each image adds its own module.
_ENCLAVE_COMMON = (
    "__init__.py",
    "errors.py",
    "sgx/**/*.py",
    "protocol/**/*.py",
    "tee/*.py",
    "tee/simulated/**/*.py",
    "enclave/__init__.py",
    "enclave/admission.py",
    "enclave/errors.py",
    "enclave/http.py",
)

WORKER = EnclaveImage(
    name="worker",
    isv_prod_id=2,
    isv_svn=1,
    trusted=(
        *_ENCLAVE_COMMON,
        "enclave/worker.py",
        "enclave/room.py",
        "enclave/runner.py",
        "enclave/supervisor.py",
        "enclave/cgroups.py",
        "enclave/store.py",
        "enclave/uploads.py",
        "enclave/worker_service.py",
    ),
)

ATTESTER = EnclaveImage(
    name="attester",
    isv_prod_id=1,
    isv_svn=1,
    trusted=(*_ENCLAVE_COMMON, "enclave/attester.py", "enclave/attester_service.py"),
)

IMAGE_NAMES = ("attester", "worker")


@dataclass(frozen=True)
class Measurement:
    """The identity an image gets when loaded as an enclave, and why."""

    image: str
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: Attributes
    manifest: Mapping[str, Any]

    def identity(self, *, debug: bool = False) -> EnclaveIdentity:
        """The enclave identity; ``debug`` sets the DEBUG attribute (never in production)."""
        flags = self.attributes.flags | (AttributeFlags.DEBUG if debug else 0)
        return EnclaveIdentity(
            mr_enclave=self.mr_enclave,
            mr_signer=self.mr_signer,
            attributes=Attributes(flags=flags, xfrm=self.attributes.xfrm),
            isv_prod_id=self.isv_prod_id,
            isv_svn=self.isv_svn,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "backend": "simulated",
            "mrenclave": self.mr_enclave.hex(),
            "mrsigner": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "attributes": self.attributes.to_bytes().hex(),
            "manifest": dict(self.manifest),
        }


def package_root() -> Path:
    return Path(str(resources.files("cleanroom")))


def mr_signer(public_key_pem: bytes) -> bytes:
    """MRSIGNER: SHA-256 of the RSA-3072 modulus as 384 little-endian bytes."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as error:
        raise MeasurementError(f"signer key is not a PEM public key: {error}") from error
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 3072:
        raise MeasurementError("an SGX signer key must be RSA-3072")
    if key.public_numbers().e != 3:
        raise MeasurementError("an SGX signer key must have public exponent 3")
    return hashlib.sha256(key.public_numbers().n.to_bytes(384, "little")).digest()


def default_signer_pem() -> bytes:
    return (resources.files("cleanroom.tee") / "images" / SIGNER_KEY_RESOURCE).read_bytes()


def trusted_files(image: EnclaveImage, root: Path | None = None) -> list[dict[str, str]]:
    """The image's trusted files under ``root``: sorted POSIX paths with SHA-256."""
    root = root or package_root()
    found: set[Path] = set()
    for pattern in image.trusted:
        found.update(path for path in root.glob(pattern) if path.is_file())
    entries = []
    for path in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
        if "__pycache__" in path.parts:
            continue
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            raise MeasurementError(f"cannot read trusted file {path}: {error}") from error
        entries.append({"path": "cleanroom/" + path.relative_to(root).as_posix(), "sha256": digest})
    if not entries:
        raise MeasurementError(f"image {image.name!r} has no trusted files under {root}")
    return entries


def _dependency_versions() -> dict[str, str]:
    versions = {}
    for name in ENCLAVE_DEPENDENCIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as error:
            raise MeasurementError(f"enclave dependency {name} is not installed") from error
    return versions


def mr_enclave_of(manifest: Mapping[str, Any]) -> bytes:
    """Simulated MRENCLAVE: SHA-256 of the manifest's RFC 8785 canonical JSON."""
    return hashlib.sha256(rfc8785.dumps(dict(manifest))).digest()


def _measure(
    image: EnclaveImage, config: Mapping[str, Any], signer: bytes, root: Path | None
) -> Measurement:
    manifest: dict[str, Any] = {
        "type": MANIFEST_TYPE,
        "image": image.name,
        "files": trusted_files(image, root),
        "config": {
            "isv_prod_id": image.isv_prod_id,
            "isv_svn": image.isv_svn,
            "attributes": PRODUCTION_ATTRIBUTES.to_bytes().hex(),
            "runtime": f"python{sys.version_info.major}.{sys.version_info.minor}",
            "dependencies": _dependency_versions(),
            **config,
        },
    }
    return Measurement(
        image=image.name,
        mr_enclave=mr_enclave_of(manifest),
        mr_signer=signer,
        isv_prod_id=image.isv_prod_id,
        isv_svn=image.isv_svn,
        attributes=PRODUCTION_ATTRIBUTES,
        manifest=manifest,
    )


def measure(name: str, *, signer_pem: bytes | None = None, root: Path | None = None) -> Measurement:
    """Measure the ``attester`` or ``worker`` image from the installed sources."""
    signer = mr_signer(signer_pem if signer_pem is not None else default_signer_pem())
    worker = _measure(WORKER, {}, signer, root)
    if name == "worker":
        return worker
    if name == "attester":
        # The Attester admits exactly the Workers its measured configuration names.
        admits = {"worker_mrenclaves": [worker.mr_enclave.hex()], "worker_mrsigner": signer.hex()}
        return _measure(ATTESTER, admits, signer, root)
    raise MeasurementError(f"unknown enclave image {name!r}; one of {', '.join(IMAGE_NAMES)}")
