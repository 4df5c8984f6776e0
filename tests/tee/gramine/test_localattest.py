"""EGETKEY's KEYREQUEST and the REPORT CMAC, checked against the simulated platform.

The simulated platform derives report keys with an SP 800-108 KDF; its
``SimulatedEnclave.egetkey`` plays EGETKEY here, so the Python half of the Gramine
backend's local attestation is tested end to end without SGX.
"""

from __future__ import annotations

import dataclasses

import pytest

from cleanroom.insecure.simulated import SimulatedEnclave, SimulatedPlatform
from cleanroom.sgx import (
    AttributeFlags,
    Attributes,
    KeyName,
    KeyPolicy,
    KeyRequest,
    Report,
)
from cleanroom.tee.gramine.localattest import (
    aes_cmac,
    report_key_request,
    report_mac,
    verify_report,
)
from cleanroom.tee.platform import (
    EgetkeyError,
    EgetkeyFault,
    EnclaveIdentity,
    LocalAttestationError,
)

ATTRIBUTES = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)


def identity(tag: int, attributes: Attributes = ATTRIBUTES) -> EnclaveIdentity:
    return EnclaveIdentity(
        mr_enclave=bytes([tag]) * 32,
        mr_signer=bytes([0x55]) * 32,
        attributes=attributes,
        isv_prod_id=tag,
        isv_svn=1,
    )


SENDER, VERIFIER = identity(1), identity(2)
REPORT_DATA = bytes(range(64))


def report_for(sender: SimulatedEnclave, verifier: SimulatedEnclave) -> Report:
    return sender.report(verifier.target_info(), REPORT_DATA)


# RFC 4493 section 4: AES-128-CMAC test vectors.
RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "mac"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_aes_cmac_matches_rfc_4493(length: int, mac: str) -> None:
    assert aes_cmac(RFC4493_KEY, RFC4493_MESSAGE[:length]).hex() == mac


def test_aes_cmac_takes_only_an_aes_128_key() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        aes_cmac(bytes(32), b"")


def test_the_report_key_request_names_report_key_and_the_key_id_and_nothing_else() -> None:
    key_id = bytes(range(32))
    raw = report_key_request(key_id).to_bytes()
    assert raw == (KeyName.REPORT_KEY.to_bytes(2, "little") + bytes(38) + key_id + bytes(512 - 72))


def test_the_simulated_derivation_plays_egetkey_for_the_report_mac(
    platform: SimulatedPlatform,
) -> None:
    sender, verifier = platform.enclave(SENDER), platform.enclave(VERIFIER)
    report = report_for(sender, verifier)
    key = verifier.egetkey(report_key_request(report.key_id).to_bytes())
    # The MAC computed here from EGETKEY's key is the one EREPORT (the simulation) wrote.
    assert report_mac(key, report.body) == report.mac
    assert verify_report(report, verifier.egetkey) == report.body
    # And it agrees with the simulated platform's own verification.
    assert verifier.verify_report(report) == report.body


def test_a_report_for_another_enclave_is_refused(platform: SimulatedPlatform) -> None:
    sender, verifier = platform.enclave(SENDER), platform.enclave(VERIFIER)
    report = report_for(sender, verifier)
    with pytest.raises(LocalAttestationError) as caught:
        verify_report(report, sender.egetkey)
    assert caught.value.check == "report-mac"


def test_a_report_from_another_platform_is_refused(
    platform: SimulatedPlatform, other_platform: SimulatedPlatform
) -> None:
    report = report_for(other_platform.enclave(SENDER), other_platform.enclave(VERIFIER))
    with pytest.raises(LocalAttestationError) as caught:
        verify_report(report, platform.enclave(VERIFIER).egetkey)
    assert caught.value.check == "report-mac"


def test_a_report_for_other_attributes_of_the_same_mrenclave_is_refused(
    platform: SimulatedPlatform,
) -> None:
    """The report key covers the verifier's ATTRIBUTES: a DEBUG twin cannot check it."""
    sender, verifier = platform.enclave(SENDER), platform.enclave(VERIFIER)
    debug_twin = platform.enclave(
        identity(2, Attributes(flags=ATTRIBUTES.flags | AttributeFlags.DEBUG, xfrm=0x03))
    )
    with pytest.raises(LocalAttestationError):
        verify_report(report_for(sender, verifier), debug_twin.egetkey)


@pytest.mark.parametrize("part", ["body", "key_id", "mac"])
def test_a_changed_report_is_refused(platform: SimulatedPlatform, part: str) -> None:
    sender, verifier = platform.enclave(SENDER), platform.enclave(VERIFIER)
    report = report_for(sender, verifier)
    if part == "body":
        report = dataclasses.replace(
            report, body=dataclasses.replace(report.body, isv_svn=report.body.isv_svn + 1)
        )
    elif part == "key_id":
        report = dataclasses.replace(report, key_id=bytes(32))
    else:
        report = dataclasses.replace(report, mac=bytes(16))
    with pytest.raises(LocalAttestationError) as caught:
        verify_report(report, verifier.egetkey)
    assert caught.value.check == "report-mac"


def test_an_egetkey_failure_is_a_named_refusal(platform: SimulatedPlatform) -> None:
    report = report_for(platform.enclave(SENDER), platform.enclave(VERIFIER))

    def refusing(_request: bytes) -> bytes:
        raise EgetkeyError(EgetkeyError.INVALID_KEYNAME)

    with pytest.raises(LocalAttestationError) as caught:
        verify_report(report, refusing)
    assert caught.value.check == "egetkey"
    assert "SGX_INVALID_KEYNAME" in str(caught.value)

    with pytest.raises(LocalAttestationError) as caught:
        verify_report(report, lambda _request: bytes(32))
    assert caught.value.check == "egetkey"


# --------------------------------------------- the simulated EGETKEY follows the SDM


def test_the_report_key_ignores_the_requests_svns_and_policy(platform: SimulatedPlatform) -> None:
    verifier = platform.enclave(VERIFIER)
    key_id = bytes(range(32))
    plain = verifier.egetkey(report_key_request(key_id).to_bytes())
    noisy = KeyRequest(
        key_name=KeyName.REPORT_KEY,
        key_policy=KeyPolicy.MRENCLAVE | KeyPolicy.MRSIGNER,
        isv_svn=7,
        cpu_svn=bytes([9]) * 16,
        attribute_mask=Attributes(flags=0xFF, xfrm=0xFF),
        key_id=key_id,
        misc_mask=0xFFFFFFFF,
    )
    assert verifier.egetkey(noisy.to_bytes()) == plain
    assert verifier.egetkey(report_key_request(bytes(32)).to_bytes()) != plain


@pytest.mark.parametrize(
    "request_",
    [
        KeyRequest(key_name=KeyName.REPORT_KEY, reserved=(b"\x01\x00", bytes(434))),
        KeyRequest(key_name=KeyName.REPORT_KEY, reserved=(bytes(2), bytes(433) + b"\x01")),
        KeyRequest(key_name=KeyName.REPORT_KEY, key_policy=0x40),
        KeyRequest(key_name=KeyName.REPORT_KEY, key_policy=KeyPolicy.CONFIGID),
        KeyRequest(key_name=KeyName.REPORT_KEY, config_svn=1),
    ],
    ids=["reserved-6", "reserved-78", "policy-reserved", "kss-policy", "configsvn"],
)
def test_malformed_key_requests_fault(platform: SimulatedPlatform, request_: KeyRequest) -> None:
    with pytest.raises(EgetkeyFault):
        platform.enclave(VERIFIER).egetkey(request_.to_bytes())


def test_key_names_other_than_report_key_are_not_simulated(platform: SimulatedPlatform) -> None:
    with pytest.raises(EgetkeyError) as caught:
        platform.enclave(VERIFIER).egetkey(KeyRequest(key_name=KeyName.SEAL_KEY).to_bytes())
    assert caught.value.status == EgetkeyError.INVALID_KEYNAME
