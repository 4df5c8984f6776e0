"""Local attestation inside a Gramine enclave: EGETKEY(REPORT_KEY), then AES-128-CMAC.

Gramine has no API to check a REPORT addressed to the enclave, so the enclave does
what the CPU defines (SDM Vol. 3D, EREPORT and EGETKEY): EREPORT MACs the 384-byte
report body with AES-128-CMAC under the report key of the *target* enclave, derived
from the CPU's secret, the target's MRENCLAVE and ATTRIBUTES, the CPU's CPUSVN and
the REPORT's KEYID. The target gets the same key from EGETKEY with a KEYREQUEST
naming REPORT_KEY and that KEYID.

Only EGETKEY itself is native (one ENCLU instruction, ``_egetkey.c``); the request
and the CMAC are here, so that they are tested against the simulated platform's key
derivation, which plays EGETKEY's part in tests.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from cleanroom.sgx import KeyName, KeyRequest, Report, ReportBody
from cleanroom.tee.platform import EgetkeyError, LocalAttestationError

REPORT_KEY_SIZE = 16

Egetkey = Callable[[bytes], bytes]
"""EGETKEY: a 512-byte KEYREQUEST in, the 16-byte key out; raises EgetkeyError."""


def report_key_request(key_id: bytes) -> KeyRequest:
    """The KEYREQUEST for the key that checks a REPORT carrying ``key_id``.

    KEYNAME is REPORT_KEY and KEYID the REPORT's; everything else is zero, as in
    Intel's SGX SDK and Gramine's own ``sgx_verify_report``. For REPORT_KEY, EGETKEY
    takes MRENCLAVE, ATTRIBUTES, MISCSELECT and CONFIGID from the caller's SECS and
    the CPU's current CPUSVN, and ignores the request's KEYPOLICY, ISVSVN, CPUSVN,
    ATTRIBUTEMASK and MISCMASK (SDM, EGETKEY pseudocode); non-zero reserved bytes,
    or CONFIGSVN and the KSS policy bits without KSS, would fault.
    """
    return KeyRequest(key_name=KeyName.REPORT_KEY, key_id=key_id)


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-128-CMAC (NIST SP 800-38B, RFC 4493): what EREPORT computes."""
    if len(key) != REPORT_KEY_SIZE:
        raise ValueError(f"an AES-128 key is {REPORT_KEY_SIZE} bytes, got {len(key)}")
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def report_mac(report_key: bytes, body: ReportBody) -> bytes:
    """The MAC EREPORT puts in a REPORT: CMAC over the report body only (not KEYID)."""
    return aes_cmac(report_key, body.to_bytes())


def verify_report(report: Report, egetkey: Egetkey) -> ReportBody:
    """The REPORT's body if its MAC verifies under our report key; else LocalAttestationError."""
    request = report_key_request(report.key_id).to_bytes()
    try:
        key = egetkey(request)
    except EgetkeyError as error:
        raise LocalAttestationError(
            check="egetkey",
            expected="EGETKEY status 0 (SUCCESS)",
            actual=f"{error.status} ({error.status_name})",
            message="EGETKEY refused the REPORT_KEY request",
        ) from error
    if len(key) != REPORT_KEY_SIZE:
        raise LocalAttestationError(
            check="egetkey",
            expected=f"a {REPORT_KEY_SIZE}-byte key",
            actual=f"{len(key)} bytes",
            message="EGETKEY returned a key of the wrong size",
        )
    if not hmac.compare_digest(report_mac(key, report.body), report.mac):
        raise LocalAttestationError(
            check="report-mac",
            expected="a MAC under this enclave's report key",
            actual=report.mac.hex(),
            message=(
                "REPORT MAC does not verify: the REPORT was made for another target "
                "enclave or platform, or it was changed"
            ),
        )
    return report.body
