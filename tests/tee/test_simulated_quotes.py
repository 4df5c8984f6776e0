"""Simulated quotes are appraised by dcap-qvl exactly as real ones, against their own root."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509

from cleanroom.attestation import (
    AttestationPolicy,
    PolicyError,
    QuoteSignatureError,
    TcbStatusError,
    TrustAnchor,
    appraise_quote,
    load_collateral,
    verify_quote,
)
from cleanroom.insecure.simulated import PlatformStateError, SimulatedPlatform
from cleanroom.insecure.simulated.platform import (
    QE_IDENTITY,
    SECRETS_FILE,
)
from cleanroom.sgx import CertificationDataType, Report, parse_quote
from cleanroom.tee.measure import measure
from cleanroom.tee.platform import QuoteGenerationError

from .conftest import NOW

REPORT_DATA = hashlib.sha512(b"claims").digest()
DAY = 86400


@pytest.fixture(scope="module")
def attester_quote(platform: SimulatedPlatform) -> bytes:
    return platform.enclave(measure("attester").identity()).quote(REPORT_DATA)


def _root(platform: SimulatedPlatform) -> TrustAnchor:
    return TrustAnchor.from_certificate(platform.root_certificate_der())


def _collateral(platform: SimulatedPlatform) -> dcap_qvl.QuoteCollateralV3:
    return load_collateral(platform.collateral_json(now=NOW))


def _policy(**changes: object) -> AttestationPolicy:
    attester = measure("attester")
    policy = AttestationPolicy(
        mrenclaves=frozenset({attester.mr_enclave}),
        mrsigner=attester.mr_signer,
        isv_prod_id=attester.isv_prod_id,
        min_isv_svn=attester.isv_svn,
        report_data=REPORT_DATA,
    )
    return dataclasses.replace(policy, **changes)  # type: ignore[arg-type]


def test_quote_has_the_real_v3_format(platform: SimulatedPlatform, attester_quote: bytes) -> None:
    quote = parse_quote(attester_quote)
    assert quote.header.version == 3
    assert quote.header.attestation_key_type == 2
    assert quote.header.tee_type == 0
    assert quote.body.report_data == REPORT_DATA
    certification = quote.signature_data.certification_data
    assert certification.cert_type == CertificationDataType.PCK_CERT_CHAIN
    chain = [x509.load_pem_x509_certificate(pem) for pem in certification.pem_chain()]
    assert [c.subject.rfc4514_string().split(",")[-1] for c in chain][-1].startswith("CN=")
    assert "SIMULATED" in chain[-1].subject.rfc4514_string()
    # DCAP's binding of the attestation key into the QE report.
    signature = quote.signature_data
    assert signature.qe_report.report_data == (
        hashlib.sha256(signature.attestation_key + signature.qe_auth_data).digest() + bytes(32)
    )
    assert signature.qe_report.mr_enclave == QE_IDENTITY.mr_enclave


def test_pck_certificate_carries_the_sgx_extension(
    platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    chain = parse_quote(attester_quote).signature_data.certification_data.pem_chain()
    extension = dcap_qvl.parse_pck_extension_from_pem(b"".join(chain))
    assert extension.ppid == platform.tcb.ppid
    assert extension.cpu_svn == platform.tcb.cpu_svn
    assert extension.pce_svn == platform.tcb.pce_svn
    assert extension.fmspc == platform.tcb.fmspc
    assert extension.sgx_type == 0


def test_quote_verifies_against_its_own_root(
    platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    appraisal = appraise_quote(
        attester_quote, _collateral(platform), at=NOW, trust=_root(platform), policy=_policy()
    )
    facts = appraisal.quote.to_json()
    attester = measure("attester")
    assert facts["status"] == "UpToDate"
    assert facts["advisory_ids"] == []
    assert facts["mrenclave"] == attester.mr_enclave.hex()
    assert facts["mrsigner"] == attester.mr_signer.hex()
    assert facts["debug"] is False
    assert facts["report_data"] == REPORT_DATA.hex()
    assert facts["intel_production_root"] is False
    assert {c.check for c in appraisal.checks} >= {
        "tcb-status",
        "debug",
        "mrenclave",
        "mrsigner",
        "isv-prod-id",
        "isv-svn",
        "report-data",
    }


def test_quote_is_rejected_against_intels_root(
    platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    with pytest.raises(QuoteSignatureError) as caught:
        verify_quote(
            attester_quote, _collateral(platform), at=NOW, trust=TrustAnchor.intel_production()
        )
    assert caught.value.check == "quote-verification"


def test_quote_is_rejected_against_another_platforms_root(
    platform: SimulatedPlatform, other_platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    with pytest.raises(QuoteSignatureError):
        verify_quote(attester_quote, _collateral(platform), at=NOW, trust=_root(other_platform))


def test_quote_with_another_platforms_collateral_is_rejected(
    platform: SimulatedPlatform, other_platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    with pytest.raises(QuoteSignatureError):
        verify_quote(attester_quote, _collateral(other_platform), at=NOW, trust=_root(platform))


def test_debug_enclave_quote_is_rejected(platform: SimulatedPlatform) -> None:
    quote = platform.enclave(measure("attester").identity(debug=True)).quote(REPORT_DATA)
    # dcap-qvl refuses DEBUG enclaves itself; our DebugDisabled policy is the second line.
    with pytest.raises((QuoteSignatureError, PolicyError)) as caught:
        appraise_quote(
            quote, _collateral(platform), at=NOW, trust=_root(platform), policy=_policy()
        )
    assert caught.value.check == "debug"


@pytest.mark.parametrize("at", [NOW + 31 * DAY, NOW - 2 * DAY], ids=["after", "before"])
def test_collateral_outside_its_window_is_rejected(
    platform: SimulatedPlatform, attester_quote: bytes, at: int
) -> None:
    with pytest.raises(QuoteSignatureError):
        verify_quote(attester_quote, _collateral(platform), at=at, trust=_root(platform))


def test_report_data_mismatch_is_rejected(
    platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    with pytest.raises(PolicyError) as caught:
        appraise_quote(
            attester_quote,
            _collateral(platform),
            at=NOW,
            trust=_root(platform),
            policy=_policy(report_data=hashlib.sha512(b"other claims").digest()),
        )
    assert caught.value.check == "report-data"


def test_worker_quote_is_not_the_attester(platform: SimulatedPlatform) -> None:
    quote = platform.enclave(measure("worker").identity()).quote(REPORT_DATA)
    with pytest.raises(PolicyError) as caught:
        appraise_quote(
            quote, _collateral(platform), at=NOW, trust=_root(platform), policy=_policy()
        )
    assert caught.value.check == "mrenclave"


@pytest.mark.parametrize(
    "offset",
    [
        48 + 64,  # MRENCLAVE in the signed body
        48 + 320,  # REPORTDATA
        28,  # header (user data)
        436 + 10,  # ISV signature
        436 + 64 + 5,  # attestation key
        436 + 128 + 320,  # QE report's REPORTDATA (the key binding)
        436 + 128 + 384 + 3,  # QE report signature
    ],
)
def test_any_changed_byte_is_rejected(
    platform: SimulatedPlatform, attester_quote: bytes, offset: int
) -> None:
    tampered = bytearray(attester_quote)
    tampered[offset] ^= 0x01
    with pytest.raises(QuoteSignatureError):
        verify_quote(bytes(tampered), _collateral(platform), at=NOW, trust=_root(platform))


def test_tampered_collateral_is_rejected(
    platform: SimulatedPlatform, attester_quote: bytes
) -> None:
    document = json.loads(platform.collateral_json(now=NOW))
    document["tcb_info"] = document["tcb_info"].replace('"pcesvn":13', '"pcesvn":12')
    with pytest.raises(QuoteSignatureError):
        verify_quote(
            attester_quote, load_collateral(json.dumps(document)), at=NOW, trust=_root(platform)
        )


def test_quoting_enclave_refuses_a_report_not_meant_for_it(platform: SimulatedPlatform) -> None:
    attester = platform.enclave(measure("attester").identity())
    worker = platform.enclave(measure("worker").identity())
    report = attester.report(worker.target_info(), REPORT_DATA)
    with pytest.raises(QuoteGenerationError, match="report-mac"):
        platform.quote_report(report)


def test_quoting_enclave_refuses_a_forged_report(platform: SimulatedPlatform) -> None:
    attester = platform.enclave(measure("attester").identity())
    report = attester.report(platform.quoting_enclave_target_info(), REPORT_DATA)
    wire = bytearray(report.to_bytes())
    wire[64] ^= 1  # claim another MRENCLAVE
    with pytest.raises(QuoteGenerationError):
        platform.quote_report(Report.from_bytes(bytes(wire)))


@pytest.mark.parametrize(
    ("status", "advisories"),
    [
        ("SWHardeningNeeded", ["INTEL-SA-00615"]),
        ("OutOfDate", ["INTEL-SA-00334", "INTEL-SA-00615"]),
        ("ConfigurationNeeded", []),
    ],
)
def test_platform_tcb_status_reaches_the_verifier(
    tmp_path: Path, status: str, advisories: list[str]
) -> None:
    platform = SimulatedPlatform.init(
        tmp_path / "p", now=NOW, tcb_status=status, advisory_ids=advisories
    )
    quote = platform.enclave(measure("attester").identity()).quote(REPORT_DATA)
    verified = verify_quote(quote, _collateral(platform), at=NOW, trust=_root(platform))
    assert verified.status == status
    assert sorted(verified.advisory_ids) == sorted(advisories)
    if status != "SWHardeningNeeded":
        with pytest.raises(TcbStatusError):
            AttestationPolicy().appraise(verified)
    else:
        AttestationPolicy().appraise(verified)


def test_collateral_is_cached_then_reissued_near_expiry(fresh_dir: Path) -> None:
    platform = SimulatedPlatform.init(fresh_dir, now=NOW)
    first = platform.collateral_json(now=NOW)
    assert platform.collateral_json(now=NOW + DAY) == first
    renewed = platform.collateral_json(now=NOW + 24 * DAY)
    assert renewed != first
    quote = platform.enclave(measure("attester").identity()).quote(REPORT_DATA)
    verify_quote(quote, load_collateral(renewed), at=NOW + 40 * DAY, trust=_root(platform))


def test_secrets_are_private_and_state_reloads(fresh_dir: Path) -> None:
    platform = SimulatedPlatform.init(fresh_dir, now=NOW)
    mode = stat.S_IMODE(os.stat(fresh_dir / SECRETS_FILE).st_mode)
    assert mode == 0o600
    reloaded = SimulatedPlatform.load(fresh_dir)
    assert reloaded.root_certificate_der() == platform.root_certificate_der()
    # A REPORT made by one handle verifies with the other: same fuse key.
    identity = measure("worker").identity()
    report = platform.enclave(measure("attester").identity()).report(
        identity.target_info(), REPORT_DATA
    )
    reloaded.enclave(identity).verify_report(report)


def test_init_refuses_to_overwrite_without_force(fresh_dir: Path) -> None:
    first = SimulatedPlatform.init(fresh_dir, now=NOW)
    with pytest.raises(PlatformStateError, match="already"):
        SimulatedPlatform.init(fresh_dir, now=NOW)
    second = SimulatedPlatform.init(fresh_dir, now=NOW, force=True)
    assert second.root_certificate_der() != first.root_certificate_der()
    # The old platform's cached collateral was replaced: the new one verifies new quotes.
    quote = second.enclave(measure("attester").identity()).quote(REPORT_DATA)
    verify_quote(quote, _collateral(second), at=NOW, trust=_root(second))


def test_missing_or_corrupt_platform_is_refused(fresh_dir: Path) -> None:
    with pytest.raises(PlatformStateError, match="no simulated platform"):
        SimulatedPlatform.load(fresh_dir)
    SimulatedPlatform.init(fresh_dir, now=NOW)
    (fresh_dir / SECRETS_FILE).write_text('{"type": "something else"}')
    with pytest.raises(PlatformStateError):
        SimulatedPlatform.load(fresh_dir)


def test_unknown_tcb_status_is_refused(fresh_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown TCB status"):
        SimulatedPlatform.init(fresh_dir, now=NOW, tcb_status="Fine")
