"""The verifier against recorded real evidence (see ../shared/vectors/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import dcap_qvl
import pytest

from cleanroom.attestation import (
    INTEL_SGX_ROOT_CA_SHA256,
    AttestationError,
    AttestationPolicy,
    EvidenceError,
    PolicyError,
    QuoteSignatureError,
    TcbStatusError,
    TrustAnchor,
    UnsupportedEvidenceError,
    appraise_quote,
    load_collateral,
    verify_quote,
)

NOW = 1752919277
BEFORE_WINDOW = 1750000000
AFTER_WINDOW = NOW + 40 * 86400
MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")
ATTRIBUTES = "0500000000000000e700000000000000"
REPORT_DATA = b"Hello, world!".ljust(64, b"\0")
STATUS = "ConfigurationAndSWHardeningNeeded"
ADVISORIES = ("INTEL-SA-00289", "INTEL-SA-00615")
# Offset of REPORTDATA in the quote: 48-byte header, then REPORTDATA at 320 in the body.
REPORT_DATA_OFFSET = 48 + 320

ACCEPTING = AttestationPolicy(
    accepted_statuses=frozenset({"UpToDate", "SWHardeningNeeded", STATUS}),
)
INTEL = TrustAnchor.intel_production()


@pytest.fixture(scope="module")
def recorded(vectors_dir: Path) -> Path:
    return vectors_dir / "sgx-dcap-qvl"


@pytest.fixture(scope="module")
def quote(recorded: Path) -> bytes:
    return (recorded / "sgx_quote").read_bytes()


@pytest.fixture(scope="module")
def collateral_text(recorded: Path) -> str:
    return (recorded / "sgx_quote_collateral.json").read_text()


@pytest.fixture(scope="module")
def collateral(collateral_text: str) -> dcap_qvl.QuoteCollateralV3:
    return load_collateral(collateral_text)


def appraise(
    quote: bytes,
    collateral: dcap_qvl.QuoteCollateralV3,
    policy: AttestationPolicy = ACCEPTING,
    at: int = NOW,
) -> object:
    return appraise_quote(quote, collateral, at=at, trust=INTEL, policy=policy)


# ---- accepted -------------------------------------------------------------------------------


def test_recorded_quote_accepted(quote: bytes, collateral: dcap_qvl.QuoteCollateralV3) -> None:
    policy = AttestationPolicy(
        accepted_statuses=frozenset({"UpToDate", "SWHardeningNeeded", STATUS}),
        accepted_advisories=frozenset(ADVISORIES),
        mrenclaves=frozenset({MRENCLAVE}),
        mrsigner=MRSIGNER,
        isv_prod_id=0,
        min_isv_svn=0,
        report_data=REPORT_DATA,
    )
    appraisal = appraise_quote(quote, collateral, at=NOW, trust=INTEL, policy=policy)
    verified = appraisal.quote
    assert verified.status == STATUS
    assert verified.advisory_ids == ADVISORIES
    assert verified.qe_status == "UpToDate"
    assert verified.platform_status == STATUS
    assert verified.report.mr_enclave == MRENCLAVE
    assert verified.report.mr_signer == MRSIGNER
    assert verified.report.isv_prod_id == 0
    assert verified.report.isv_svn == 0
    assert verified.report.report_data == REPORT_DATA
    assert verified.report.attributes.debug is False
    assert verified.verified_at == NOW
    assert [check.check for check in appraisal.checks] == [
        "tcb-status",
        "tcb-advisories",
        "debug",
        "mrenclave",
        "mrsigner",
        "isv-prod-id",
        "isv-svn",
        "report-data",
    ]
    document = appraisal.to_json()
    json.dumps(document)  # JSON-serialisable throughout
    assert document["status"] == STATUS
    assert document["advisory_ids"] == list(ADVISORIES)
    assert document["mrenclave"] == MRENCLAVE.hex()
    assert document["mrsigner"] == MRSIGNER.hex()
    assert document["attributes"] == ATTRIBUTES
    assert document["isv_prod_id"] == 0
    assert document["isv_svn"] == 0
    assert document["debug"] is False
    assert document["report_data"] == REPORT_DATA.hex()
    assert document["qe_status"] == "UpToDate"
    assert document["intel_production_root"] is True
    assert document["trust_root_fingerprint"] == INTEL_SGX_ROOT_CA_SHA256
    assert document["verified_at"] == NOW
    assert document["accepted"] is True


def test_collateral_accepted_as_bytes(quote: bytes, collateral_text: str) -> None:
    verified = verify_quote(quote, load_collateral(collateral_text.encode()), at=NOW, trust=INTEL)
    assert verified.status == STATUS


def test_intel_root_from_certificate_is_production(collateral_text: str) -> None:
    chain = json.loads(collateral_text)["pck_crl_issuer_chain"]
    root_pem = chain[chain.rindex("-----BEGIN CERTIFICATE-----") :].encode()
    anchor = TrustAnchor.from_certificate(root_pem)
    assert anchor == TrustAnchor.intel_production()
    assert anchor.is_intel_production
    assert anchor.root_der is None
    assert anchor.fingerprint == INTEL_SGX_ROOT_CA_SHA256


# ---- rejected by dcap-qvl -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "dcap_message"),
    [
        (BEFORE_WINDOW, "TCBInfo issue date is in the future"),
        (AFTER_WINDOW, "TCBInfo expired"),
    ],
)
def test_outside_validity_window(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, at: int, dcap_message: str
) -> None:
    with pytest.raises(QuoteSignatureError) as caught:
        appraise(quote, collateral, at=at)
    error = caught.value
    assert error.check == "quote-verification"
    assert isinstance(error.actual, str)
    assert dcap_message in error.actual
    assert error.hint is not None
    assert "--at" in error.hint
    assert "validity window" in error.hint


@pytest.mark.parametrize(
    "offset",
    [REPORT_DATA_OFFSET, 48 + 112, 48 + 128],  # REPORTDATA, ISVPRODID/ATTRIBUTES, MRENCLAVE
)
def test_changed_body_byte(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, offset: int
) -> None:
    tampered = bytearray(quote)
    tampered[offset] ^= 0x01
    with pytest.raises(QuoteSignatureError) as caught:
        appraise(bytes(tampered), collateral)
    assert caught.value.check == "quote-verification"
    assert "ISV enclave report signature is invalid" in str(caught.value.actual)


# ---- rejected by policy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [AttestationPolicy(), AttestationPolicy(accepted_statuses=frozenset({"UpToDate"}))],
    ids=["default", "up-to-date-only"],
)
def test_status_not_accepted(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, policy: AttestationPolicy
) -> None:
    with pytest.raises(TcbStatusError) as caught:
        appraise(quote, collateral, policy)
    error = caught.value
    assert error.check == "tcb-status"
    assert error.actual == STATUS
    assert error.hint is not None
    assert f"--accept-status {STATUS}" in error.hint


def test_advisory_not_accepted(quote: bytes, collateral: dcap_qvl.QuoteCollateralV3) -> None:
    policy = AttestationPolicy(
        accepted_statuses=frozenset({STATUS}),
        accepted_advisories=frozenset({"INTEL-SA-00289"}),
    )
    with pytest.raises(TcbStatusError) as caught:
        appraise(quote, collateral, policy)
    error = caught.value
    assert error.check == "tcb-advisories"
    assert "INTEL-SA-00615" in error.message
    assert error.hint is not None
    assert "--accept-advisory INTEL-SA-00615" in error.hint


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        (AttestationPolicy(mrenclaves=frozenset({bytes(32)})), "mrenclave"),
        (AttestationPolicy(mrsigner=bytes(32)), "mrsigner"),
        (AttestationPolicy(isv_prod_id=1), "isv-prod-id"),
        (AttestationPolicy(min_isv_svn=1), "isv-svn"),
        (AttestationPolicy(report_data=b"Hello, world?".ljust(64, b"\0")), "report-data"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_policy_rejections(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, policy: AttestationPolicy, check: str
) -> None:
    accepting = AttestationPolicy(
        accepted_statuses=ACCEPTING.accepted_statuses,
        mrenclaves=policy.mrenclaves,
        mrsigner=policy.mrsigner,
        isv_prod_id=policy.isv_prod_id,
        min_isv_svn=policy.min_isv_svn,
        report_data=policy.report_data,
    )
    with pytest.raises(PolicyError) as caught:
        appraise(quote, collateral, accepting)
    assert type(caught.value) is PolicyError
    assert caught.value.check == check
    json.dumps(caught.value.to_json())


# ---- Intel's QVL sample: Intel's *test* root, rejected against production --------------------


def _inner_object_text(text: str, key: str) -> str:
    """The exact text of the JSON object under ``key`` (its signature covers those bytes)."""
    start = text.index("{", text.index(f'"{key}"'))
    _, end = json.JSONDecoder().raw_decode(text, start)
    return text[start:end]


@pytest.fixture(scope="module")
def intel_sample(vectors_dir: Path) -> Path:
    return vectors_dir / "sgx-intel-qvl-sample"


def _sample_collateral_json(sample: Path) -> str:
    tcb_info = (sample / "tcbInfo.json").read_text()
    qe_identity = (sample / "qeIdentity.json").read_text()
    signing_chain = (sample / "tcbSignChain.pem").read_text()
    return json.dumps(
        {
            "pck_crl_issuer_chain": (sample / "pckSignChain.pem").read_text(),
            "root_ca_crl": (sample / "rootCaCrl.der").read_bytes().hex(),
            "pck_crl": (sample / "intermediateCaCrl.der").read_bytes().hex(),
            "tcb_info_issuer_chain": signing_chain,
            "tcb_info": _inner_object_text(tcb_info, "tcbInfo"),
            "tcb_info_signature": json.loads(tcb_info)["signature"],
            "qe_identity_issuer_chain": signing_chain,
            "qe_identity": _inner_object_text(qe_identity, "enclaveIdentity"),
            "qe_identity_signature": json.loads(qe_identity)["signature"],
        }
    )


@pytest.mark.parametrize("at", [1600000000, NOW])
def test_intel_sample_rejected_against_production_root(intel_sample: Path, at: int) -> None:
    quote = (intel_sample / "quote.dat").read_bytes()
    with pytest.raises(AttestationError) as caught:
        collateral = load_collateral(_sample_collateral_json(intel_sample))
        verify_quote(quote, collateral, at=at, trust=INTEL)
    assert type(caught.value) is not AttestationError  # a specific subclass, never a crash
    assert isinstance(caught.value, QuoteSignatureError | EvidenceError)
    json.dumps(caught.value.to_json())


def test_intel_sample_rejected_against_its_test_root(intel_sample: Path) -> None:
    """Even trusting Intel's test root, dcap-qvl refuses the version-2 TCB info."""
    quote = (intel_sample / "quote.dat").read_bytes()
    anchor = TrustAnchor.from_certificate((intel_sample / "trustedRootCaCert.pem").read_bytes())
    with pytest.raises(AttestationError) as caught:
        verify_quote(
            quote,
            load_collateral(_sample_collateral_json(intel_sample)),
            at=1600000000,
            trust=anchor,
        )
    assert isinstance(caught.value, QuoteSignatureError | EvidenceError)


def test_intel_test_root_is_not_production(intel_sample: Path) -> None:
    anchor = TrustAnchor.from_certificate((intel_sample / "trustedRootCaCert.pem").read_bytes())
    assert anchor.is_intel_production is False
    assert anchor.root_der is not None
    assert anchor.name == "Intel SGX Root CA"
    assert anchor.fingerprint != INTEL_SGX_ROOT_CA_SHA256
    assert anchor.fingerprint != TrustAnchor.intel_production().fingerprint
    assert TrustAnchor.from_certificate(anchor.root_der) == anchor  # DER gives the same


def test_tdx_quote_is_unsupported(
    intel_sample: Path, collateral: dcap_qvl.QuoteCollateralV3
) -> None:
    quote = (intel_sample / "tdx" / "quote.dat").read_bytes()
    with pytest.raises(UnsupportedEvidenceError) as caught:
        verify_quote(quote, collateral, at=NOW, trust=INTEL)
    assert caught.value.check == "tee-type"
    assert caught.value.expected == "SGX (quote v3, tee_type 0)"
    assert "TDX" in str(caught.value.actual)


# ---- malformed inputs -----------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"", b"junk", bytes(48), bytes(1000)])
def test_junk_quote(collateral: dcap_qvl.QuoteCollateralV3, junk: bytes) -> None:
    with pytest.raises(EvidenceError) as caught:
        verify_quote(junk, collateral, at=NOW, trust=INTEL)
    assert caught.value.check in {"quote-format", "tee-type"}


def test_truncated_quote(quote: bytes, collateral: dcap_qvl.QuoteCollateralV3) -> None:
    with pytest.raises(AttestationError) as caught:
        verify_quote(quote[:1000], collateral, at=NOW, trust=INTEL)
    assert isinstance(caught.value, EvidenceError | QuoteSignatureError)


@pytest.mark.parametrize(
    "junk",
    ["", "junk", "{}", "[]", '{"pck_crl_issuer_chain": 1}', b"\xff\xfe"],
)
def test_junk_collateral(junk: str | bytes) -> None:
    with pytest.raises(EvidenceError) as caught:
        load_collateral(junk)
    assert caught.value.check == "collateral-format"


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"junk",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        bytes(100),
    ],
)
def test_junk_root(junk: bytes) -> None:
    with pytest.raises(EvidenceError) as caught:
        TrustAnchor.from_certificate(junk)
    assert caught.value.check == "trust-root"


def test_non_root_certificate_refused_as_root(collateral_text: str) -> None:
    chain = json.loads(collateral_text)["pck_crl_issuer_chain"]
    intermediate = chain[: chain.index("-----END CERTIFICATE-----") + 25].encode()
    with pytest.raises(EvidenceError) as caught:
        TrustAnchor.from_certificate(intermediate)
    assert caught.value.check == "trust-root"
    with pytest.raises(EvidenceError):
        TrustAnchor.from_certificate(chain.encode())  # a chain is not one root


def test_wrong_custom_root(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, intel_sample: Path
) -> None:
    """The real quote does not verify against a root other than Intel's."""
    anchor = TrustAnchor.from_certificate((intel_sample / "trustedRootCaCert.pem").read_bytes())
    with pytest.raises(QuoteSignatureError) as caught:
        verify_quote(quote, collateral, at=NOW, trust=anchor)
    assert caught.value.check == "quote-verification"


@pytest.mark.parametrize("at", [-1, 2**64, 1.5, True])
def test_bad_verification_time(
    quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, at: object
) -> None:
    with pytest.raises(EvidenceError) as caught:
        verify_quote(quote, collateral, at=at, trust=INTEL)  # type: ignore[arg-type]
    assert caught.value.check == "verification-time"
