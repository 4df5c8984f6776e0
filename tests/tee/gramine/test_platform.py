"""GramineEnclave over an emulated /dev/attestation: Gramine's semantics, each refusal named."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cleanroom.attestation import TrustAnchor, load_collateral, verify_quote
from cleanroom.insecure.simulated import SimulatedEnclave, SimulatedPlatform
from cleanroom.insecure.simulated.gramine import EmulatedDevAttestation
from cleanroom.sgx import AttributeFlags, Attributes, Report, TargetInfo, parse_quote
from cleanroom.tee.gramine import DevAttestation, GramineEnclave, GramineError
from cleanroom.tee.platform import EnclaveIdentity, LocalAttestationError
from tests.tee.conftest import NOW

ATTRIBUTES = Attributes(flags=AttributeFlags.INIT | AttributeFlags.MODE64BIT, xfrm=0x03)
DEBUG = Attributes(flags=ATTRIBUTES.flags | AttributeFlags.DEBUG, xfrm=0x03)


def identity(tag: int, attributes: Attributes = ATTRIBUTES) -> EnclaveIdentity:
    return EnclaveIdentity(
        mr_enclave=bytes([tag]) * 32,
        mr_signer=bytes([0x77]) * 32,
        attributes=attributes,
        isv_prod_id=tag,
        isv_svn=3,
        misc_select=0,
    )


def gramine(enclave: SimulatedEnclave, *, allow_debug: bool = False) -> GramineEnclave:
    return GramineEnclave(EmulatedDevAttestation(enclave), enclave.egetkey, allow_debug=allow_debug)


REPORT_DATA = bytes(range(64))


# ------------------------------------------------------------------ the good path


def test_identity_and_target_info_come_from_the_enclaves_own_report(
    platform: SimulatedPlatform,
) -> None:
    enclave = platform.enclave(identity(1))
    adapter = gramine(enclave)
    assert adapter.identity == identity(1)
    assert adapter.target_info() == enclave.target_info()
    assert adapter.attestation_type == "dcap"


def test_local_attestation_between_two_gramine_enclaves(platform: SimulatedPlatform) -> None:
    sender = gramine(platform.enclave(identity(1)))
    verifier = gramine(platform.enclave(identity(2)))
    report = sender.report(verifier.target_info(), REPORT_DATA)
    body = verifier.verify_report(Report.from_bytes(report.to_bytes()))
    assert body.report_data == REPORT_DATA
    assert body.mr_enclave == identity(1).mr_enclave
    with pytest.raises(LocalAttestationError) as caught:
        sender.verify_report(report)
    assert caught.value.check == "report-mac"


def test_a_quote_through_gramine_verifies_with_dcap_qvl(platform: SimulatedPlatform) -> None:
    adapter = gramine(platform.enclave(identity(1)))
    quote = adapter.quote(REPORT_DATA)
    verified = verify_quote(
        quote,
        load_collateral(platform.collateral_json(now=NOW)),
        at=NOW,
        trust=TrustAnchor.from_certificate(platform.root_certificate_der()),
    )
    assert verified.report.report_data == REPORT_DATA
    assert verified.report.mr_enclave == identity(1).mr_enclave


def test_concurrent_reports_and_quotes_never_mix_their_report_data(
    platform: SimulatedPlatform,
) -> None:
    """The pseudo-files are global; a slow /dev/attestation makes any race certain
    (without the adapter's lock this test fails on its first round)."""

    class Slow(EmulatedDevAttestation):
        def write(self, name: str, data: bytes) -> None:
            super().write(name, data)
            time.sleep(0.002)

    enclave = platform.enclave(identity(1))
    adapter = GramineEnclave(Slow(enclave), enclave.egetkey)
    target = platform.enclave(identity(2)).target_info()
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                data = bytes([n, i]) * 32
                assert adapter.report(target, data).body.report_data == data
                if i == 0:
                    assert parse_quote(adapter.quote(data)).body.report_data == data
        except (AssertionError, GramineError) as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# ---------------------------------------------------------------- the emulation


def test_the_emulation_pads_truncates_and_refuses_as_gramine_does(
    platform: SimulatedPlatform,
) -> None:
    files = EmulatedDevAttestation(platform.enclave(identity(1)))
    files.write("user_report_data", b"short")
    assert files.read("user_report_data") == b"short" + bytes(59)
    files.write("user_report_data", bytes(range(70)))
    assert files.read("user_report_data") == bytes(range(64))
    files.write("target_info", b"\x01")
    assert files.read("target_info") == b"\x01" + bytes(511)
    for name in ("my_target_info", "report", "quote", "attestation_type"):
        with pytest.raises(PermissionError):
            files.write(name, b"x")
    with pytest.raises(FileNotFoundError):
        files.read("keys")
    # An all-zero target_info: the REPORT is for no one, and target_info becomes ours.
    files.write("target_info", bytes(512))
    files.read("report")
    assert files.read("target_info") == files.read("my_target_info")
    none = EmulatedDevAttestation(platform.enclave(identity(1)), attestation_type="none")
    with pytest.raises(FileNotFoundError):
        none.read("quote")


def test_dev_attestation_reads_and_writes_whole_files(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_bytes(b"dcap")
    files = DevAttestation(tmp_path)
    assert files.read("attestation_type") == b"dcap"
    files.write("user_report_data", REPORT_DATA)
    assert (tmp_path / "user_report_data").read_bytes() == REPORT_DATA
    for name in ("../attestation_type", "keys/_sgx_mrenclave", "sealing"):
        with pytest.raises(ValueError, match="not a file this adapter uses"):
            files.read(name)
    with pytest.raises(ValueError, match="not a file this adapter uses"):
        files.write("report", REPORT_DATA)


# ------------------------------------------------------------------ refusals


def test_a_debug_enclave_refuses_to_start(platform: SimulatedPlatform) -> None:
    enclave = platform.enclave(identity(1, DEBUG))
    with pytest.raises(GramineError) as caught:
        gramine(enclave)
    assert caught.value.check == "enclave-debug"
    assert gramine(enclave, allow_debug=True).identity.attributes.debug


def test_an_egetkey_of_another_enclave_is_caught_at_start(platform: SimulatedPlatform) -> None:
    files = EmulatedDevAttestation(platform.enclave(identity(1)))
    with pytest.raises(LocalAttestationError) as caught:
        GramineEnclave(files, platform.enclave(identity(2)).egetkey)
    assert caught.value.check == "report-mac"


def test_my_target_info_that_is_not_this_enclave_is_caught_at_start(
    platform: SimulatedPlatform,
) -> None:
    other = platform.enclave(identity(2))

    class Lying(EmulatedDevAttestation):
        def read(self, name: str) -> bytes:
            if name == "my_target_info":
                return other.target_info().to_bytes()
            return super().read(name)

    with pytest.raises(GramineError) as caught:
        GramineEnclave(Lying(platform.enclave(identity(1))), other.egetkey)
    assert caught.value.check == "gramine-self-report"


@pytest.mark.parametrize("value", [b"epid", b"", b"dcap-ish"])
def test_an_unknown_attestation_type_refuses_to_start(
    platform: SimulatedPlatform, value: bytes
) -> None:
    enclave = platform.enclave(identity(1))
    files = EmulatedDevAttestation(enclave, attestation_type=value.decode())
    with pytest.raises(GramineError) as caught:
        GramineEnclave(files, enclave.egetkey)
    assert caught.value.check == "attestation-type"


def test_no_quote_without_remote_attestation(platform: SimulatedPlatform) -> None:
    enclave = platform.enclave(identity(1))
    adapter = GramineEnclave(EmulatedDevAttestation(enclave, "none"), enclave.egetkey)
    # A Worker needs no quote: it still reports and verifies.
    adapter.report(platform.enclave(identity(2)).target_info(), REPORT_DATA)
    with pytest.raises(GramineError) as caught:
        adapter.quote(REPORT_DATA)
    assert caught.value.check == "attestation-type"


def test_an_all_zero_target_info_is_refused(platform: SimulatedPlatform) -> None:
    adapter = gramine(platform.enclave(identity(1)))
    zero = TargetInfo.from_bytes(bytes(512))
    with pytest.raises(GramineError) as caught:
        adapter.report(zero, REPORT_DATA)
    assert caught.value.check == "target-info"


@pytest.mark.parametrize("size", [0, 32, 65])
def test_report_data_must_be_64_bytes(platform: SimulatedPlatform, size: int) -> None:
    adapter = gramine(platform.enclave(identity(1)))
    with pytest.raises(ValueError, match="64 bytes"):
        adapter.report(platform.enclave(identity(2)).target_info(), bytes(size))
    with pytest.raises(ValueError, match="64 bytes"):
        adapter.quote(bytes(size))


def _started_then(
    platform: SimulatedPlatform, change: Callable[[str, bytes], bytes | None]
) -> GramineEnclave:
    """An adapter whose /dev/attestation misbehaves only after a good start."""
    enclave = platform.enclave(identity(1))

    class Changing(EmulatedDevAttestation):
        started = False

        def read(self, name: str) -> bytes:
            answer = super().read(name)
            if self.started:
                changed = change(name, answer)
                if changed is not None:
                    return changed
            return answer

    files = Changing(enclave)
    adapter = GramineEnclave(files, enclave.egetkey)
    files.started = True
    return adapter


def test_a_stale_report_is_refused(platform: SimulatedPlatform) -> None:
    stale = platform.enclave(identity(1)).report(
        platform.enclave(identity(2)).target_info(), bytes(64)
    )
    adapter = _started_then(
        platform, lambda name, _a: stale.to_bytes() if name == "report" else None
    )
    with pytest.raises(GramineError) as caught:
        adapter.report(platform.enclave(identity(2)).target_info(), REPORT_DATA)
    assert caught.value.check == "report-report-data"


def test_a_quote_with_other_report_data_is_refused(platform: SimulatedPlatform) -> None:
    stale = platform.enclave(identity(1)).quote(bytes(64))
    adapter = _started_then(platform, lambda name, _a: stale if name == "quote" else None)
    with pytest.raises(GramineError) as caught:
        adapter.quote(REPORT_DATA)
    assert caught.value.check == "quote-report-data"


def test_a_quote_about_another_enclave_is_refused(platform: SimulatedPlatform) -> None:
    other = platform.enclave(identity(3))
    adapter = _started_then(
        platform, lambda name, _a: other.quote(REPORT_DATA) if name == "quote" else None
    )
    with pytest.raises(GramineError) as caught:
        adapter.quote(REPORT_DATA)
    assert caught.value.check == "quote-identity"


@pytest.mark.parametrize(
    ("name", "check"),
    [("quote", "quote-format"), ("report", "report-format"), ("my_target_info", "target-info")],
)
def test_malformed_answers_are_refused(platform: SimulatedPlatform, name: str, check: str) -> None:
    adapter = _started_then(platform, lambda n, answer: answer[:-1] if n == name else None)
    with pytest.raises(GramineError) as caught:
        if name == "quote":
            adapter.quote(REPORT_DATA)
        elif name == "report":
            adapter.report(platform.enclave(identity(2)).target_info(), REPORT_DATA)
        else:
            adapter.target_info()
    assert caught.value.check == check


def test_the_report_identity_check_names_both_enclaves(platform: SimulatedPlatform) -> None:
    other = platform.enclave(identity(3))
    target = platform.enclave(identity(2)).target_info()
    adapter = _started_then(
        platform,
        lambda name, _a: other.report(target, REPORT_DATA).to_bytes() if name == "report" else None,
    )
    with pytest.raises(GramineError) as caught:
        adapter.report(target, REPORT_DATA)
    assert caught.value.check == "report-identity"
    assert dataclasses.asdict(identity(3))["mr_enclave"].hex() in str(caught.value)
