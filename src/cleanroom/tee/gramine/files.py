"""The one I/O seam of the Gramine backend: Gramine's ``/dev/attestation`` pseudo-files.

Gramine's LibOS serves these files inside an SGX enclave (``libos/src/fs/dev/attestation.c``):

- ``attestation_type`` (read): ``none`` or ``dcap``, the manifest's
  ``sgx.remote_attestation``;
- ``my_target_info`` (read): this enclave's 512-byte TARGETINFO;
- ``target_info`` (read, write): the 512-byte TARGETINFO the next ``report`` is MACed for;
- ``user_report_data`` (read, write): the 64-byte REPORTDATA of the next ``report``
  or ``quote``;
- ``report`` (read): a 432-byte REPORT made with EREPORT from the two files above;
- ``quote`` (read, only when the attestation type is not ``none``): an ECDSA quote
  over REPORTDATA from ``user_report_data``, made by the quoting enclave;
- ``keys/<name>`` (read, write): the 16-byte key of the encrypted-files mounts whose
  ``key_name`` is ``name`` (another size is refused).

A write shorter than the file's size is padded with zeros and a longer one
truncated; the value takes effect when the file is closed. An all-zero
``target_info`` makes ``report`` replace it with this enclave's own TARGETINFO.
The files are shared by every thread of the enclave and not synchronised: callers
serialise their write-write-read sequences (:class:`~cleanroom.tee.gramine.platform.GramineEnclave`
does).

Tests replace :class:`DevAttestation` with an emulation backed by the simulated
platform (``cleanroom.insecure.simulated.gramine``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

DEV_ATTESTATION = Path("/dev/attestation")

USER_REPORT_DATA_SIZE = 64
TARGET_INFO_SIZE = 512
REPORT_SIZE = 432

READABLE = frozenset(
    {"attestation_type", "my_target_info", "target_info", "user_report_data", "report", "quote"}
)
# An encrypted-files key (16 bytes), named by a mount's key_name: the Worker writes its
# workspace key there when it starts.
WORKSPACE_KEY_FILE = "keys/workspace"
ENCRYPTED_FILES_KEY_SIZE = 16
WRITABLE = frozenset({"target_info", "user_report_data", WORKSPACE_KEY_FILE})


class AttestationFiles(Protocol):
    """Whole-file reads and writes of ``/dev/attestation/<name>``."""

    def read(self, name: str) -> bytes:
        """The whole content of the file ``name`` (one open, read, close)."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Replace the content of ``name`` with ``data`` (one open, write, close)."""
        ...


class DevAttestation:
    """The real pseudo-files of a Gramine SGX enclave."""

    def __init__(self, root: Path = DEV_ATTESTATION) -> None:
        self.root = root

    def _path(self, name: str, allowed: frozenset[str]) -> Path:
        if name not in allowed:
            raise ValueError(f"/dev/attestation/{name!r} is not a file this adapter uses")
        return self.root / name

    def read(self, name: str) -> bytes:
        with self._path(name, READABLE).open("rb", buffering=0) as handle:
            return handle.read()

    def write(self, name: str, data: bytes) -> None:
        # Unbuffered, so that one write() reaches Gramine whole; close() applies it.
        with self._path(name, WRITABLE).open("wb", buffering=0) as handle:
            written = handle.write(data)
        if written != len(data):
            raise OSError(f"/dev/attestation/{name}: wrote {written} of {len(data)} bytes")


def set_workspace_key(files: AttestationFiles, key: bytes) -> None:
    """Key the encrypted workspace mount (the Worker draws ``key`` at random at start)."""
    if len(key) != ENCRYPTED_FILES_KEY_SIZE:
        raise ValueError(f"an encrypted-files key is {ENCRYPTED_FILES_KEY_SIZE} bytes")
    files.write(WORKSPACE_KEY_FILE, key)
