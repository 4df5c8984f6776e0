"""Each policy object against a VerifiedQuote built directly: passes, fails, exact checks."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from pathlib import Path

import pytest

from cleanroom.attestation import (
    AllOf,
    AttestationError,
    AttestationPolicy,
    CheckResult,
    DebugDisabled,
    InvalidPolicyError,
    IsvProdIdIs,
    MinIsvSvn,
    MrEnclaveIn,
    MrSignerIs,
    PolicyError,
    QuoteSignatureError,
    ReportDataIs,
    TcbPolicy,
    TcbStatusError,
    TrustAnchor,
    VerifiedQuote,
    appraise_quote,
    load_collateral,
)
from cleanroom.attestation.tcb import TCB_STATUSES
from cleanroom.insecure.policy import UnsafeNoOp
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.sgx import Attributes, QuoteHeader, ReportBody
from cleanroom.tee.measure import measure

MRENCLAVE = hashlib.sha256(b"enclave").digest()
MRSIGNER = hashlib.sha256(b"signer").digest()
OTHER = hashlib.sha256(b"other").digest()
REPORT_DATA = hashlib.sha512(b"claims").digest()
FLAGS_INIT_MODE64 = 0x05
FLAGS_DEBUG = 0x02
SIMULATED_NOW = 1767225600  # 2026-01-01; the simulated collateral is issued at this instant


def make_quote(
    *,
    status: str = "UpToDate",
    advisory_ids: tuple[str, ...] = (),
    flags: int = FLAGS_INIT_MODE64,
    mr_enclave: bytes = MRENCLAVE,
    mr_signer: bytes = MRSIGNER,
    isv_prod_id: int = 7,
    isv_svn: int = 3,
    report_data: bytes = REPORT_DATA,
) -> VerifiedQuote:
    body = ReportBody(
        cpu_svn=bytes(16),
        misc_select=0,
        isv_ext_prod_id=bytes(16),
        attributes=Attributes(flags=flags, xfrm=0xE7),
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        config_id=bytes(64),
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=0,
        isv_family_id=bytes(16),
        report_data=report_data,
    )
    header = QuoteHeader(
        version=3,
        attestation_key_type=2,
        tee_type=0,
        qe_svn=0,
        pce_svn=0,
        qe_vendor_id=bytes(16),
        user_data=bytes(20),
    )
    return VerifiedQuote(
        header=header,
        report=body,
        status=status,
        advisory_ids=advisory_ids,
        qe_status="UpToDate",
        platform_status=status,
        trust=TrustAnchor.intel_production(),
        verified_at=1752919277,
    )


QUOTE = make_quote()


def checks(results: list[CheckResult]) -> list[str]:
    assert all(result.passed for result in results)
    return [result.check for result in results]


# ---- TcbPolicy ------------------------------------------------------------------------------


def test_tcb_policy_passes_default() -> None:
    results = TcbPolicy().verify(make_quote(status="SWHardeningNeeded", advisory_ids=("SA-1",)))
    assert checks(results) == ["tcb-status", "tcb-advisories"]
    assert results[0].actual == "SWHardeningNeeded"
    assert results[1].expected == "any (no allow-list)"


def test_tcb_policy_rejects_status() -> None:
    with pytest.raises(TcbStatusError) as caught:
        TcbPolicy().verify(make_quote(status="OutOfDate"))
    assert caught.value.check == "tcb-status"
    assert caught.value.actual == "OutOfDate"
    assert caught.value.hint is not None
    assert "--accept-status OutOfDate" in caught.value.hint


def test_tcb_policy_rejects_advisory() -> None:
    policy = TcbPolicy(accepted_advisories=frozenset({"SA-1"}))
    assert checks(policy.verify(make_quote(advisory_ids=("SA-1",)))) == [
        "tcb-status",
        "tcb-advisories",
    ]
    with pytest.raises(TcbStatusError) as caught:
        policy.verify(make_quote(advisory_ids=("SA-1", "SA-2")))
    assert caught.value.check == "tcb-advisories"
    assert "SA-2" in caught.value.message
    assert caught.value.to_json()["expected"] == ["SA-1"]


def test_tcb_policy_rejects_revoked_even_if_accepted() -> None:
    with pytest.raises(TcbStatusError) as caught:
        TcbPolicy(accepted_statuses=frozenset({"Revoked"})).verify(make_quote(status="Revoked"))
    assert caught.value.check == "tcb-status"
    assert "never accepted" in caught.value.message


def test_tcb_policy_rejects_unknown_status_from_verifier() -> None:
    with pytest.raises(TcbStatusError) as caught:
        TcbPolicy().verify(make_quote(status="SomethingNew"))
    assert caught.value.check == "tcb-status"


def test_tcb_policy_refuses_unknown_status_in_config() -> None:
    with pytest.raises(InvalidPolicyError) as caught:
        TcbPolicy(accepted_statuses=frozenset({"Uptodate"}))
    assert caught.value.check == "policy"
    assert isinstance(caught.value, ValueError)


# ---- DebugDisabled --------------------------------------------------------------------------


def test_debug_disabled() -> None:
    assert checks(DebugDisabled().verify(QUOTE)) == ["debug"]
    with pytest.raises(PolicyError) as caught:
        DebugDisabled().verify(make_quote(flags=FLAGS_INIT_MODE64 | FLAGS_DEBUG))
    assert caught.value.check == "debug"
    assert (caught.value.expected, caught.value.actual) == ("DEBUG clear", "DEBUG set")


# ---- measurements ---------------------------------------------------------------------------


def test_mrenclave_in() -> None:
    assert checks(MrEnclaveIn(frozenset({OTHER, MRENCLAVE})).verify(QUOTE)) == ["mrenclave"]
    with pytest.raises(PolicyError) as caught:
        MrEnclaveIn(frozenset({OTHER})).verify(QUOTE)
    error = caught.value
    assert error.check == "mrenclave"
    assert error.to_json()["expected"] == [OTHER.hex()]
    assert error.to_json()["actual"] == MRENCLAVE.hex()
    assert OTHER.hex() in str(error)
    assert MRENCLAVE.hex() in str(error)


@pytest.mark.parametrize("bad", [frozenset(), frozenset({b"short"})])
def test_mrenclave_in_rejects_bad_config(bad: frozenset[bytes]) -> None:
    with pytest.raises(InvalidPolicyError):
        MrEnclaveIn(bad)


def test_mrsigner_is() -> None:
    assert checks(MrSignerIs(MRSIGNER).verify(QUOTE)) == ["mrsigner"]
    with pytest.raises(PolicyError) as caught:
        MrSignerIs(OTHER).verify(QUOTE)
    assert caught.value.check == "mrsigner"
    assert caught.value.to_json()["expected"] == OTHER.hex()
    with pytest.raises(InvalidPolicyError):
        MrSignerIs(bytes(31))


def test_isv_prod_id_is() -> None:
    assert checks(IsvProdIdIs(7).verify(QUOTE)) == ["isv-prod-id"]
    with pytest.raises(PolicyError) as caught:
        IsvProdIdIs(8).verify(QUOTE)
    assert (caught.value.check, caught.value.expected, caught.value.actual) == (
        "isv-prod-id",
        8,
        7,
    )
    with pytest.raises(InvalidPolicyError):
        IsvProdIdIs(0x10000)


def test_min_isv_svn() -> None:
    assert checks(MinIsvSvn(3).verify(QUOTE)) == ["isv-svn"]
    assert checks(MinIsvSvn(0).verify(QUOTE)) == ["isv-svn"]
    with pytest.raises(PolicyError) as caught:
        MinIsvSvn(4).verify(QUOTE)
    assert caught.value.check == "isv-svn"
    assert caught.value.actual == 3
    with pytest.raises(InvalidPolicyError):
        MinIsvSvn(-1)


def test_report_data_is() -> None:
    assert checks(ReportDataIs(REPORT_DATA).verify(QUOTE)) == ["report-data"]
    changed = bytes([REPORT_DATA[0] ^ 1]) + REPORT_DATA[1:]
    with pytest.raises(PolicyError) as caught:
        ReportDataIs(changed).verify(QUOTE)
    assert caught.value.check == "report-data"
    assert caught.value.to_json()["actual"] == REPORT_DATA.hex()


@pytest.mark.parametrize("length", [0, 32, 63, 65])
def test_report_data_is_rejects_wrong_length_at_construction(length: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        ReportDataIs(bytes(length))


# ---- composition ----------------------------------------------------------------------------


class Recording:
    """A policy that records that it ran, then passes or fails."""

    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def verify(self, quote: VerifiedQuote) -> list[CheckResult]:
        self.log.append(self.name)
        if self.fail:
            raise PolicyError(self.name, "pass", "fail", "recorded failure")
        return [CheckResult(self.name, "pass", "pass", True, "")]


def test_all_of_runs_in_order_and_returns_all_results() -> None:
    log: list[str] = []
    results = AllOf(Recording("a", log), Recording("b", log), Recording("c", log)).verify(QUOTE)
    assert log == ["a", "b", "c"]
    assert checks(results) == ["a", "b", "c"]


def test_all_of_stops_at_first_failure() -> None:
    log: list[str] = []
    policy = AllOf(Recording("a", log), Recording("b", log, fail=True), Recording("c", log))
    with pytest.raises(PolicyError) as caught:
        policy.verify(QUOTE)
    assert caught.value.check == "b"
    assert log == ["a", "b"]


def test_all_of_needs_a_policy() -> None:
    with pytest.raises(InvalidPolicyError):
        AllOf()


def test_unsafe_no_op_warns_every_time() -> None:
    policy = UnsafeNoOp()
    assert "UNSAFE" in (UnsafeNoOp.__doc__ or "")
    for _ in range(2):
        with pytest.warns(UserWarning, match="UNSAFE"):
            results = policy.verify(make_quote(status="Revoked"))
        assert checks(results) == ["unsafe-no-op"]


# ---- AttestationPolicy ----------------------------------------------------------------------

FULL = AttestationPolicy(
    mrenclaves=frozenset({MRENCLAVE}),
    mrsigner=MRSIGNER,
    isv_prod_id=7,
    min_isv_svn=3,
    report_data=REPORT_DATA,
)


def test_attestation_policy_fixed_order() -> None:
    appraisal = FULL.appraise(QUOTE)
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
    assert document["accepted"] is True
    assert document["mrenclave"] == MRENCLAVE.hex()
    assert isinstance(document["checks"], list)
    assert len(document["checks"]) == 8


def test_attestation_policy_defaults_check_tcb_and_debug_only() -> None:
    policy = AttestationPolicy()
    assert policy.accepted_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
    assert policy.allow_debug is False
    assert [check.check for check in policy.appraise(QUOTE).checks] == [
        "tcb-status",
        "tcb-advisories",
        "debug",
    ]


@pytest.mark.parametrize(
    ("quote", "check", "error_type"),
    [
        (make_quote(status="OutOfDate"), "tcb-status", TcbStatusError),
        (make_quote(flags=FLAGS_INIT_MODE64 | FLAGS_DEBUG), "debug", PolicyError),
        (make_quote(mr_enclave=OTHER), "mrenclave", PolicyError),
        (make_quote(mr_signer=OTHER), "mrsigner", PolicyError),
        (make_quote(isv_prod_id=8), "isv-prod-id", PolicyError),
        (make_quote(isv_svn=2), "isv-svn", PolicyError),
        (make_quote(report_data=bytes(64)), "report-data", PolicyError),
    ],
)
def test_attestation_policy_each_check_fails_alone(
    quote: VerifiedQuote, check: str, error_type: type[AttestationError]
) -> None:
    with pytest.raises(error_type) as caught:
        FULL.appraise(quote)
    assert caught.value.check == check


def test_attestation_policy_first_failure_wins() -> None:
    with pytest.raises(TcbStatusError):
        FULL.appraise(make_quote(status="OutOfDate", mr_enclave=OTHER))


def test_attestation_policy_allow_debug_warns_and_records() -> None:
    policy = dataclasses.replace(FULL, allow_debug=True)
    with pytest.warns(UserWarning, match="UNSAFE"):
        appraisal = policy.appraise(make_quote(flags=FLAGS_INIT_MODE64 | FLAGS_DEBUG))
    debug = next(check for check in appraisal.checks if check.check == "debug")
    assert debug.actual == "DEBUG set"
    assert "INSECURE" in debug.expected


def test_attestation_policy_default_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FULL.appraise(QUOTE)


def test_attestation_policy_validates_at_construction() -> None:
    with pytest.raises(InvalidPolicyError):
        AttestationPolicy(report_data=b"short")
    with pytest.raises(InvalidPolicyError):
        AttestationPolicy(accepted_statuses=frozenset({"OK"}))
    with pytest.raises(InvalidPolicyError):
        AttestationPolicy(mrsigner=bytes(33))


def test_attestation_policy_accepts_plain_sets() -> None:
    policy = AttestationPolicy(accepted_statuses={"UpToDate"})  # type: ignore[arg-type]
    assert policy.accepted_statuses == frozenset({"UpToDate"})


def test_error_json_and_one_line() -> None:
    with pytest.raises(PolicyError) as caught:
        MrSignerIs(OTHER).verify(QUOTE)
    error = caught.value
    assert str(error) == (
        f"mrsigner: {error.message} (expected {OTHER.hex()}, got {MRSIGNER.hex()})"
    )
    assert set(error.to_json()) == {"check", "expected", "actual", "message"}
    with pytest.raises(PolicyError) as with_hint:
        MinIsvSvn(9).verify(QUOTE)
    assert "hint" in with_hint.value.to_json()


# ---- end to end with the simulated platform (real dcap-qvl, explicitly trusted root) ---------


def _simulated(tmp_path: Path, status: str) -> tuple[bytes, str, TrustAnchor]:
    advisories = () if status == "UpToDate" else ("INTEL-SA-00334",)
    platform = SimulatedPlatform.init(
        tmp_path / status, now=SIMULATED_NOW, tcb_status=status, advisory_ids=advisories
    )
    quote = platform.enclave(measure("attester").identity()).quote(REPORT_DATA)
    anchor = TrustAnchor.from_certificate(platform.root_certificate_der())
    return quote, platform.collateral_json(now=SIMULATED_NOW), anchor


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("UpToDate", None),
        ("SWHardeningNeeded", None),
        ("ConfigurationNeeded", TcbStatusError),
        ("OutOfDate", TcbStatusError),
        ("OutOfDateConfigurationNeeded", TcbStatusError),
        ("Revoked", QuoteSignatureError),  # dcap-qvl itself refuses: "TCB status is invalid"
    ],
)
def test_simulated_platform_statuses(
    tmp_path: Path, status: str, outcome: type[AttestationError] | None
) -> None:
    quote, collateral, anchor = _simulated(tmp_path, status)
    assert not anchor.is_intel_production
    everything = AttestationPolicy(accepted_statuses=frozenset(TCB_STATUSES))
    default = AttestationPolicy(report_data=REPORT_DATA)
    if outcome is None:
        appraisal = appraise_quote(
            quote, load_collateral(collateral), at=SIMULATED_NOW, trust=anchor, policy=default
        )
        assert appraisal.quote.status == status
        assert appraisal.to_json()["intel_production_root"] is False
        return
    with pytest.raises(outcome) as caught:
        appraise_quote(
            quote, load_collateral(collateral), at=SIMULATED_NOW, trust=anchor, policy=default
        )
    if status == "Revoked":
        assert "Revoked" in str(caught.value.actual)
        with pytest.raises(QuoteSignatureError):  # listing Revoked changes nothing
            appraise_quote(
                quote,
                load_collateral(collateral),
                at=SIMULATED_NOW,
                trust=anchor,
                policy=everything,
            )
    else:
        assert caught.value.check == "tcb-status"
        appraise_quote(
            quote, load_collateral(collateral), at=SIMULATED_NOW, trust=anchor, policy=everything
        )


def test_simulated_quote_rejected_against_intel_root(tmp_path: Path) -> None:
    quote, collateral, _ = _simulated(tmp_path, "UpToDate")
    with pytest.raises(QuoteSignatureError) as caught:
        appraise_quote(
            quote,
            load_collateral(collateral),
            at=SIMULATED_NOW,
            trust=TrustAnchor.intel_production(),
            policy=AttestationPolicy(),
        )
    assert caught.value.check == "quote-verification"
    assert caught.value.hint is not None
    assert "--trust-root" in caught.value.hint
    # `cleanroom attest` and every data command refuse with this hint too: they take the
    # root from the profile (h3: the hint named only --trust-root, which they lack).
    assert "cleanroom configure --trust-simulator" in caught.value.hint
