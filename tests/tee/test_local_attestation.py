"""Local attestation on the simulated platform: REPORT MACs under the target's report key."""

from __future__ import annotations

import dataclasses

import pytest

from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.sgx import AttributeFlags, Attributes, Report, TargetInfo
from cleanroom.tee.platform import EnclaveIdentity, LocalAttestationError

ATTRS = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)
ALICE = EnclaveIdentity(
    mr_enclave=b"A" * 32, mr_signer=b"S" * 32, attributes=ATTRS, isv_prod_id=1, isv_svn=3
)
BOB = EnclaveIdentity(
    mr_enclave=b"B" * 32, mr_signer=b"S" * 32, attributes=ATTRS, isv_prod_id=2, isv_svn=1
)
CAROL = EnclaveIdentity(
    mr_enclave=b"C" * 32, mr_signer=b"S" * 32, attributes=ATTRS, isv_prod_id=3, isv_svn=1
)
DATA = bytes(range(64))


def test_report_for_the_right_target_verifies(platform: SimulatedPlatform) -> None:
    alice, bob = platform.enclave(ALICE), platform.enclave(BOB)
    report = alice.report(bob.target_info(), DATA)
    body = bob.verify_report(report)
    assert body.mr_enclave == ALICE.mr_enclave
    assert body.mr_signer == ALICE.mr_signer
    assert body.isv_prod_id == 1 and body.isv_svn == 3
    assert body.report_data == DATA
    assert body.cpu_svn == platform.tcb.cpu_svn
    assert len(report.to_bytes()) == 432


def test_report_survives_its_wire_format(platform: SimulatedPlatform) -> None:
    alice, bob = platform.enclave(ALICE), platform.enclave(BOB)
    wire = alice.report(bob.target_info(), DATA).to_bytes()
    assert bob.verify_report(Report.from_bytes(wire)).report_data == DATA


def test_target_info_wire_format(platform: SimulatedPlatform) -> None:
    bob = platform.enclave(BOB)
    wire = bob.target_info().to_bytes()
    assert len(wire) == 512
    report = platform.enclave(ALICE).report(TargetInfo.from_bytes(wire), DATA)
    assert bob.verify_report(report).report_data == DATA


def test_report_for_another_target_is_rejected(platform: SimulatedPlatform) -> None:
    alice, bob, carol = (platform.enclave(i) for i in (ALICE, BOB, CAROL))
    report = alice.report(carol.target_info(), DATA)
    with pytest.raises(LocalAttestationError) as caught:
        bob.verify_report(report)
    assert caught.value.check == "report-mac"


def test_target_attributes_are_part_of_the_key(platform: SimulatedPlatform) -> None:
    debug_bob = dataclasses.replace(
        BOB, attributes=Attributes(flags=ATTRS.flags | AttributeFlags.DEBUG, xfrm=ATTRS.xfrm)
    )
    report = platform.enclave(ALICE).report(platform.enclave(debug_bob).target_info(), DATA)
    with pytest.raises(LocalAttestationError):
        platform.enclave(BOB).verify_report(report)


def test_changed_mac_is_rejected(platform: SimulatedPlatform) -> None:
    alice, bob = platform.enclave(ALICE), platform.enclave(BOB)
    report = alice.report(bob.target_info(), DATA)
    forged = dataclasses.replace(report, mac=bytes([report.mac[0] ^ 1]) + report.mac[1:])
    with pytest.raises(LocalAttestationError) as caught:
        bob.verify_report(forged)
    assert caught.value.check == "report-mac"


def test_changed_key_id_is_rejected(platform: SimulatedPlatform) -> None:
    alice, bob = platform.enclave(ALICE), platform.enclave(BOB)
    report = alice.report(bob.target_info(), DATA)
    forged = dataclasses.replace(report, key_id=bytes(32))
    with pytest.raises(LocalAttestationError):
        bob.verify_report(forged)


@pytest.mark.parametrize("offset", [0, 48, 64, 128, 256, 258, 320, 383])
def test_changed_body_is_rejected(platform: SimulatedPlatform, offset: int) -> None:
    alice, bob = platform.enclave(ALICE), platform.enclave(BOB)
    wire = bytearray(alice.report(bob.target_info(), DATA).to_bytes())
    wire[offset] ^= 0x01
    with pytest.raises(LocalAttestationError) as caught:
        bob.verify_report(Report.from_bytes(bytes(wire)))
    assert caught.value.check == "report-mac"


def test_report_from_another_platform_is_rejected(
    platform: SimulatedPlatform, other_platform: SimulatedPlatform
) -> None:
    report = other_platform.enclave(ALICE).report(BOB.target_info(), DATA)
    with pytest.raises(LocalAttestationError):
        platform.enclave(BOB).verify_report(report)


def test_every_report_uses_a_fresh_key_id(platform: SimulatedPlatform) -> None:
    alice = platform.enclave(ALICE)
    first, second = (alice.report(BOB.target_info(), DATA) for _ in range(2))
    assert first.key_id != second.key_id
    assert first.mac != second.mac


@pytest.mark.parametrize("size", [0, 63, 65])
def test_report_data_must_be_64_bytes(platform: SimulatedPlatform, size: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        platform.enclave(ALICE).report(BOB.target_info(), bytes(size))
