"""Gramine's ``/dev/attestation`` emulated over a simulated enclave. INSECURE, for tests.

It behaves as Gramine's LibOS does (``libos/src/fs/dev/attestation.c`` and the SGX
PAL's ``_PalAttestationReport``): fixed sizes (64-byte ``user_report_data``,
512-byte ``target_info``), writes padded with zeros or truncated to those sizes,
``report`` made from the current ``target_info`` and ``user_report_data`` (an
all-zero ``target_info`` is replaced by the enclave's own), ``quote`` only when the
attestation type is not ``none``, ``keys/<name>`` for the encrypted-files keys its
mounts name (16 bytes, another length refused), and read-only files refusing writes. The REPORTs
and quotes come from the simulated platform, so the Gramine backend runs on it
exactly as it would run on Gramine, minus the hardware.
"""

from __future__ import annotations

import errno

from cleanroom.insecure.simulated.platform import SimulatedEnclave
from cleanroom.sgx import TargetInfo

USER_REPORT_DATA_SIZE = 64
TARGET_INFO_SIZE = 512
_WRITABLE = ("user_report_data", "target_info")
_KEY_SIZE = 16  # an encrypted-files key
_READ_ONLY = ("attestation_type", "my_target_info", "report", "quote")


def _fit(data: bytes, size: int) -> bytes:
    """Gramine's update_buffer: at most ``size`` bytes, the rest zero."""
    return bytes(data[:size]).ljust(size, b"\0")


class EmulatedDevAttestation:
    """An :class:`~cleanroom.tee.gramine.files.AttestationFiles` over a simulated enclave."""

    def __init__(
        self,
        enclave: SimulatedEnclave,
        attestation_type: str = "dcap",
        key_names: tuple[str, ...] = ("workspace",),
    ) -> None:
        self.enclave = enclave
        self.attestation_type = attestation_type
        self._user_report_data = bytes(USER_REPORT_DATA_SIZE)
        self._target_info = bytes(TARGET_INFO_SIZE)
        # Encrypted-files keys by name; a mount's key_name makes its file exist.
        self.keys: dict[str, bytes | None] = dict.fromkeys(key_names)

    def _exists(self, name: str) -> bool:
        if name.startswith("keys/"):
            return name.removeprefix("keys/") in self.keys
        if name == "quote":
            return self.attestation_type != "none"
        return name in _WRITABLE or name in _READ_ONLY

    def read(self, name: str) -> bytes:
        if not self._exists(name):
            raise FileNotFoundError(errno.ENOENT, "No such file", f"/dev/attestation/{name}")
        if name == "attestation_type":
            return self.attestation_type.encode("ascii")
        if name == "user_report_data":
            return self._user_report_data
        if name == "target_info":
            return self._target_info
        if name == "my_target_info":
            return self.enclave.target_info().to_bytes()
        if name.startswith("keys/"):
            key = self.keys[name.removeprefix("keys/")]
            return key if key is not None else b""
        if name == "report":
            target = TargetInfo.from_bytes(self._target_info)
            report = self.enclave.report(target, self._user_report_data)
            if not any(self._target_info):
                self._target_info = self.enclave.target_info().to_bytes()
            return report.to_bytes()
        return self.enclave.quote(self._user_report_data)

    def write(self, name: str, data: bytes) -> None:
        if not self._exists(name):
            raise FileNotFoundError(errno.ENOENT, "No such file", f"/dev/attestation/{name}")
        if name == "user_report_data":
            self._user_report_data = _fit(data, USER_REPORT_DATA_SIZE)
        elif name == "target_info":
            self._target_info = _fit(data, TARGET_INFO_SIZE)
        elif name.startswith("keys/"):
            if len(data) != _KEY_SIZE:  # Gramine's key_save refuses another length
                raise OSError(errno.EINVAL, "Invalid argument", f"/dev/attestation/{name}")
            self.keys[name.removeprefix("keys/")] = bytes(data)
        else:
            raise PermissionError(errno.EACCES, "Permission denied", f"/dev/attestation/{name}")
