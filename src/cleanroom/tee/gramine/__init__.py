"""The Gramine SGX backend: ``/dev/attestation`` and EGETKEY behind the platform seam.

:mod:`.files` is its only I/O (Gramine's pseudo-files), :mod:`.localattest` checks
REPORTs with EGETKEY and AES-CMAC, :mod:`.native` builds and loads the
one-instruction EGETKEY helper. See docs/deploy-sgx.md.
"""
