"""Enclave measurement that anyone can recompute from an installation, without running it.

An enclave image is every file its processes execute or read, in named groups
(:mod:`cleanroom.tee.image`: interpreter, standard library, third-party packages,
the image's own cleanroom modules, shared libraries and, for the Worker, each
installed runtime), and its configuration (product ID, security version,
attributes, where its runtimes are and, for the Attester, the Worker measurement
it admits). The manifest names each group by its file count, byte count and the
SHA-256 of its list. In the simulated backend:

- MRENCLAVE = SHA-256 of the manifest's canonical JSON (RFC 8785);
- MRSIGNER = SHA-256 of the signer's RSA-3072 modulus, little-endian, as SGX
  defines it for SIGSTRUCT.

The Attester's configuration names the Worker's MRENCLAVE, so the Attester's own
measurement covers which Workers it will ever admit. An image is hashed once per
installation and kept (:class:`cleanroom.tee.image.ImageStore`); a changed,
added or removed file is noticed by its stat and the image measured again. For
Gramine, the same file list becomes the manifest's trusted files.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleanroom.runtimes import runtimes_dir
from cleanroom.sgx import AttributeFlags, Attributes
from cleanroom.tee.image import (
    GroupDigest,
    Hashed,
    ImageDefinition,
    ImageFiles,
    ImageStore,
    MeasurementError,
    hash_layout,
    installed_layout,
)
from cleanroom.tee.platform import EnclaveIdentity

__all__ = [
    "ATTESTER",
    "IMAGE_NAMES",
    "MANIFEST_TYPE",
    "WORKER",
    "ImageFiles",
    "Measurement",
    "MeasurementError",
    "default_signer_pem",
    "image_files",
    "measure",
    "mr_enclave_of",
    "mr_signer",
    "package_root",
    "stored_measurement",
    "write_measurements",
]

MANIFEST_TYPE = "cleanroom/enclave-manifest/v2"
SIGNER_KEY_RESOURCE = "simulated-signer.pem"

PRODUCTION_ATTRIBUTES = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)

# What both enclaves run of cleanroom; each image adds its own modules.
_ENCLAVE_COMMON = (
    "__init__.py",
    "errors.py",
    "sgx/**/*.py",
    "protocol/**/*.py",
    "tee/*.py",
    # The simulated backend (its package's __init__ imports nothing else of it).
    "insecure/__init__.py",
    "insecure/simulated/**/*.py",
    # The Gramine backend and its EGETKEY helper (built into the image, absent elsewhere).
    "tee/gramine/__init__.py",
    "tee/gramine/config.py",
    "tee/gramine/files.py",
    "tee/gramine/localattest.py",
    "tee/gramine/native.py",
    "tee/gramine/platform.py",
    "tee/gramine/_egetkey*.so",
    "tee/images/*.pem",
    "runtimes/__init__.py",
    "enclave/__init__.py",
    "enclave/admission.py",
    "enclave/errors.py",
    "enclave/http.py",
)

WORKER = ImageDefinition(
    name="worker",
    isv_prod_id=2,
    isv_svn=1,
    service="cleanroom.enclave.worker_service",
    trusted=(
        *_ENCLAVE_COMMON,
        "runtimes/*.txt",
        "enclave/worker.py",
        "enclave/room.py",
        "enclave/runner.py",
        "enclave/supervisor.py",
        "enclave/cgroups.py",
        "enclave/syscalls.py",
        "enclave/store.py",
        "enclave/uploads.py",
        "enclave/worker_service.py",
        "enclave/sqlroom.py",
        "enclave/budget.py",
        "sql/**/*.py",
    ),
    runtimes=True,
    also_imports=("pyseccomp",),  # the run supervisor's (enclave/syscalls.py)
)

ATTESTER = ImageDefinition(
    name="attester",
    isv_prod_id=1,
    isv_svn=1,
    service="cleanroom.enclave.attester_service",
    trusted=(*_ENCLAVE_COMMON, "enclave/attester.py", "enclave/attester_service.py"),
)

IMAGES = {image.name: image for image in (ATTESTER, WORKER)}
IMAGE_NAMES = tuple(IMAGES)


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


def mr_enclave_of(manifest: Mapping[str, Any]) -> bytes:
    """Simulated MRENCLAVE: SHA-256 of the manifest's RFC 8785 canonical JSON."""
    return hashlib.sha256(rfc8785.dumps(dict(manifest))).digest()


def manifest_of(
    image: ImageDefinition, groups: Sequence[GroupDigest], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The manifest MRENCLAVE is the hash of: the groups' digests and the configuration."""
    return {
        "type": MANIFEST_TYPE,
        "image": image.name,
        "groups": [group.to_json() for group in groups],
        "config": {
            "isv_prod_id": image.isv_prod_id,
            "isv_svn": image.isv_svn,
            "attributes": PRODUCTION_ATTRIBUTES.to_bytes().hex(),
            **config,
        },
    }


def _measurement(
    image: ImageDefinition,
    groups: Sequence[GroupDigest],
    config: Mapping[str, Any],
    signer: bytes,
) -> Measurement:
    manifest = manifest_of(image, groups, config)
    return Measurement(
        image=image.name,
        mr_enclave=mr_enclave_of(manifest),
        mr_signer=signer,
        isv_prod_id=image.isv_prod_id,
        isv_svn=image.isv_svn,
        attributes=PRODUCTION_ATTRIBUTES,
        manifest=manifest,
    )


def _definition(name: str) -> ImageDefinition:
    image = IMAGES.get(name)
    if image is None:
        raise MeasurementError(f"unknown enclave image {name!r}; one of {', '.join(IMAGE_NAMES)}")
    return image


def _inputs(image: ImageDefinition, root: Path) -> dict[str, str]:
    """What, besides the files, decides which files an image is: a record of other
    inputs is another image's."""
    return {
        # The file, not the name it was started by (python, python3, a symlink).
        "executable": os.path.realpath(sys.executable),
        "prefix": sys.prefix,
        "cleanroom": str(root),
        "runtimes": str(runtimes_dir()) if image.runtimes else "",
    }


def _hashed(
    image: ImageDefinition, root: Path, store: ImageStore | None, *, fresh: bool = False
) -> Hashed:
    """The image's files: as recorded in ``store`` when nothing changed, else hashed
    again (reading only the files whose stat changed) and recorded. ``fresh`` reads
    every file and records the result."""
    inputs = _inputs(image, root)
    recorded = store.load(image.name, inputs) if store is not None and not fresh else None
    if recorded is not None and recorded[1]:
        return recorded[0]
    if store is None:
        return _hash_installed(image, root, None)
    with store.measuring():
        if not fresh:  # another process may have measured it while this one waited
            recorded = store.load(image.name, inputs)
            if recorded is not None and recorded[1]:
                return recorded[0]
        hashed = _hash_installed(image, root, recorded[0] if recorded is not None else None)
        store.write(hashed, inputs)
        return hashed


def _hash_installed(image: ImageDefinition, root: Path, before: Hashed | None) -> Hashed:
    """Find and hash the image's files (a file whose stat is as ``before`` recorded is
    not read again)."""
    reuse: dict[str, tuple[list[int], str]] = {}
    if before is not None:
        reuse = {
            entry.path: (before.stats[entry.path], entry.sha256)
            for entry in before.files.files
            if entry.path in before.stats
        }
    return hash_layout(image.name, installed_layout(image, cleanroom_root=root), reuse)


@cache
def _installed(name: str) -> tuple[tuple[GroupDigest, ...], dict[str, Any]]:
    """This installation's image (its group digests and configuration), once per process:
    an installation does not change under a running process; a restarted one notices.
    Only the summary is kept: the whole list is ~50 MB of objects."""
    files = _hashed(_definition(name), package_root(), ImageStore.default()).files
    return files.groups(), dict(files.config)


def image_files(name: str, *, root: Path | None = None, fresh: bool = False) -> ImageFiles:
    """Every file of the image ``name`` with its digest (see :mod:`cleanroom.tee.image`).

    ``fresh`` hashes every file now instead of trusting the installation's record;
    ``root`` measures another copy of the cleanroom package (never recorded).
    """
    image = _definition(name)
    if root is not None:
        return _hashed(image, root, None).files
    if fresh:
        return _hashed_now(name).files
    return _hashed(image, package_root(), ImageStore.default()).files


def _summary(
    name: str, root: Path | None, fresh: bool
) -> tuple[tuple[GroupDigest, ...], Mapping[str, Any]]:
    if root is None and not fresh:
        return _installed(name)
    files = image_files(name, root=root, fresh=fresh)
    return files.groups(), files.config


@cache
def _hashed_now(name: str) -> Hashed:
    """This installation's image hashed by this process, trusting no record."""
    return _hashed(_definition(name), package_root(), None, fresh=True)


def write_measurements() -> list[ImageFiles]:
    """Hash every image of this installation now and record it (``measure --write``)."""
    store = ImageStore.default()
    written = []
    for image in IMAGES.values():
        hashed = _hashed(image, package_root(), store, fresh=True)
        recorded = store.load(image.name, _inputs(image, package_root()))
        if recorded is None or recorded[0].files != hashed.files:
            raise MeasurementError(f"cannot record the {image.name} image in {store.directory}")
        written.append(hashed.files)
    _installed.cache_clear()
    return written


def measure(
    name: str, *, signer_pem: bytes | None = None, root: Path | None = None, fresh: bool = False
) -> Measurement:
    """Measure the ``attester`` or ``worker`` image of this installation.

    The files come from the installation's record when nothing changed since it was
    made (else they are hashed again and recorded); ``fresh`` hashes them all now;
    ``root`` measures another copy of the cleanroom package.
    """
    image = _definition(name)
    signer = mr_signer(signer_pem if signer_pem is not None else default_signer_pem())
    worker = _measurement(WORKER, *_summary("worker", root, fresh), signer)
    if image is WORKER:
        return worker
    # The Attester admits exactly the Workers its measured configuration names.
    admits = {"worker_mrenclaves": [worker.mr_enclave.hex()], "worker_mrsigner": signer.hex()}
    groups, config = _summary(name, root, fresh)
    return _measurement(image, groups, {**config, **admits}, signer)


def stored_measurement(name: str) -> Measurement:
    """The image's measurement as the installation recorded it, checking no file.

    For a starting Worker: reading the small summary costs the same whatever the
    runtimes weigh. The Attester checks the record (and measures again if a file
    changed) when it starts, before any Worker is started; without a record this
    falls back to :func:`measure`.
    """
    image = _definition(name)
    if image is not WORKER:
        return measure(name)
    summary = ImageStore.default().load_summary(name, _inputs(image, package_root()))
    if summary is None:
        return measure(name)
    try:
        groups = [GroupDigest(**group) for group in summary["groups"]]
        config = dict(summary["config"])
    except (KeyError, TypeError) as error:
        raise MeasurementError(f"the recorded {name} image is malformed: {error}") from error
    return _measurement(image, groups, config, mr_signer(default_signer_pem()))
