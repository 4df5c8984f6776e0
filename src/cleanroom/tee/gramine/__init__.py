"""The Gramine SGX backend: ``/dev/attestation`` and EGETKEY behind the platform seam.

:class:`GramineEnclave` implements :class:`~cleanroom.tee.platform.EnclavePlatform`
inside a Gramine enclave. :mod:`.files` is its only I/O (Gramine's pseudo-files),
:mod:`.localattest` checks REPORTs with EGETKEY and AES-CMAC, :mod:`.native` builds
and loads the one-instruction EGETKEY helper, :mod:`.measure` reads and checks a
signed enclave's SIGSTRUCT. See docs/deploy-sgx.md.
"""

from cleanroom.tee.gramine.files import AttestationFiles, DevAttestation
from cleanroom.tee.gramine.platform import GramineEnclave, GramineError

__all__ = ["AttestationFiles", "DevAttestation", "GramineEnclave", "GramineError"]
