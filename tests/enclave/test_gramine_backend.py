"""Admission, Phase 1 and Phase 2 with every enclave on the Gramine backend.

The Attester and the Worker each run on a GramineEnclave over an emulated
/dev/attestation backed by the simulated platform (its EGETKEY stands in for the
instruction), and the client takes its collateral from a PCCS on loopback. The
quote path is also run with the recorded real SGX quote of ../shared/vectors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.attestation import (
    AttestationPolicy,
    TrustAnchor,
    appraise_quote,
)
from cleanroom.attestation.pccs import PccsClient
from cleanroom.client.phase1 import AttestedWorker, verify_attester_evidence
from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.errors import AdmissionError
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.insecure.simulated import SimulatedEnclave, SimulatedPlatform
from cleanroom.insecure.simulated.gramine import EmulatedDevAttestation
from cleanroom.protocol.bundle import function_id
from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.handshake import ClientHandshake
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.spec import UploadPurpose, WorkSpec
from cleanroom.sgx import Attributes, parse_quote
from cleanroom.tee.gramine import GramineEnclave, GramineError
from cleanroom.tee.measure import Measurement, measure
from cleanroom.tee.platform import EnclaveIdentity
from tests.attestation.fake_pccs import FakePccs
from tests.protocol.fixtures import ALICE, SPEC_DOCUMENT

NOW = int(time.time())
BUNDLE = b"a function bundle for the Gramine backend"
FUNCTION = function_id(BUNDLE)  # what the Worker computes as it seals the bundle
SPEC = WorkSpec.parse({**SPEC_DOCUMENT, "function": "fs://" + b64u(sha256(BUNDLE))})


def on_gramine(enclave: SimulatedEnclave, attestation_type: str = "dcap") -> GramineEnclave:
    return GramineEnclave(EmulatedDevAttestation(enclave, attestation_type), enclave.egetkey)


@dataclasses.dataclass
class GramineRoom:
    platform: SimulatedPlatform
    attester_image: Measurement
    worker_image: Measurement
    attester: Attester
    pccs_url: str


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GramineRoom]:
    platform = SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)
    attester_image, worker_image = measure("attester"), measure("worker")
    attester = Attester(
        on_gramine(platform.enclave(attester_image.identity())),
        WorkerAllowList.from_manifest_config(attester_image.manifest["config"]),
    )
    collateral = json.loads(platform.collateral_json(now=NOW))
    with FakePccs(collateral, fmspc=platform.tcb.fmspc.hex()).serving() as pccs:
        yield GramineRoom(platform, attester_image, worker_image, attester, pccs.url)


def admitted_worker(room: GramineRoom, identity: EnclaveIdentity | None = None) -> WorkerEnclave:
    identity = identity or room.worker_image.identity()
    # A Worker needs no quote: its manifest may turn remote attestation off.
    worker = WorkerEnclave(on_gramine(room.platform.enclave(identity), "none"), SPEC, FUNCTION)
    report, claims = worker.admission_request(room.attester.target_info())
    admission = room.attester.admit(report, claims)
    worker.complete_admission(
        admission.report.to_bytes(), attester_mr_signer=room.attester_image.mr_signer
    )
    return worker


def phase1(room: GramineRoom, worker: WorkerEnclave) -> AttestedWorker:
    nonce = os.urandom(32)
    evidence = room.attester.attest(worker.worker_id, nonce)
    with PccsClient(room.pccs_url) as pccs:
        collateral = pccs.for_quote(evidence.quote)
    return verify_attester_evidence(
        claims=evidence.claims,
        quote=evidence.quote,
        collateral=collateral,
        nonce=nonce,
        approved_work_id=SPEC.work_id,
        expected_worker_mrenclaves=frozenset({room.worker_image.mr_enclave}),
        attester_policy=AttestationPolicy(
            mrenclaves=frozenset({room.attester_image.mr_enclave}),
            mrsigner=room.attester_image.mr_signer,
        ),
        trust=TrustAnchor.from_certificate(room.platform.root_certificate_der()),
        at=NOW,
    )


def test_admission_phase1_and_phase2_through_gramine(room: GramineRoom) -> None:
    worker = admitted_worker(room)
    assert worker.admitted
    attested = phase1(room, worker)
    assert attested.worker_id == worker.worker_id
    assert attested.work_id == SPEC.work_id
    client = ClientHandshake(
        user_key=ALICE,
        work_id=attested.work_id,
        worker_id=attested.worker_id,
        worker_key=load_spki(attested.worker_key_spki, "worker_key"),
        quote_sha256=attested.quote_sha256,
        purpose=UploadPurpose(op="upload", input="input_1"),
    )
    accepted = worker.handshake(client.init, client.init_signature)
    keys = client.finish(accepted.resp, accepted.resp_signature)
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal("input_1/a", b"x", final=True)
    assert RecordReceiver(accepted.keys.client_to_worker, keys.session_id).open(frame)[3] == b"x"


def test_a_worker_on_another_platform_is_not_admitted(room: GramineRoom, tmp_path: Path) -> None:
    other = SimulatedPlatform.init(tmp_path / "other", now=NOW)
    worker = WorkerEnclave(
        on_gramine(other.enclave(room.worker_image.identity()), "none"), SPEC, FUNCTION
    )
    with pytest.raises(AdmissionError) as caught:
        room.attester.admit(*worker.admission_request(room.attester.target_info()))
    assert caught.value.check == "report-mac"


def test_a_debug_worker_does_not_start_and_is_not_admitted(room: GramineRoom) -> None:
    identity = room.worker_image.identity(debug=True)
    enclave = room.platform.enclave(identity)
    with pytest.raises(GramineError) as caught:
        on_gramine(enclave, "none")
    assert caught.value.check == "enclave-debug"
    # Started anyway (a development build), the Attester still refuses it.
    debug_platform = GramineEnclave(
        EmulatedDevAttestation(enclave, "none"), enclave.egetkey, allow_debug=True
    )
    worker = WorkerEnclave(debug_platform, SPEC, FUNCTION)
    with pytest.raises(AdmissionError) as caught_admission:
        room.attester.admit(*worker.admission_request(room.attester.target_info()))
    assert caught_admission.value.check == "worker-debug"


def test_an_answer_for_another_worker_is_refused(room: GramineRoom) -> None:
    first = WorkerEnclave(
        on_gramine(room.platform.enclave(room.worker_image.identity()), "none"), SPEC, FUNCTION
    )
    second = WorkerEnclave(
        on_gramine(room.platform.enclave(room.worker_image.identity()), "none"), SPEC, FUNCTION
    )
    room.attester.admit(*first.admission_request(room.attester.target_info()))
    answer = room.attester.admit(*second.admission_request(room.attester.target_info()))
    with pytest.raises(AdmissionError) as caught:
        first.complete_admission(
            answer.report.to_bytes(), attester_mr_signer=room.attester_image.mr_signer
        )
    assert caught.value.check == "admission-report-data"


# ------------------------------------------------- the recorded real quote's path


RECORDED_NOW = 1752919277
RECORDED_STATUS = "ConfigurationAndSWHardeningNeeded"
HELLO = b"Hello, world!".ljust(64, b"\0")


def test_the_recorded_real_quote_through_the_gramine_adapter(
    vectors_dir: Path, tmp_path: Path
) -> None:
    """An emulated /dev/attestation that answers with the recorded real quote: the
    adapter returns it for the matching REPORTDATA, and the client verifies it with
    collateral from a PCCS against Intel's production root."""
    directory = vectors_dir / "sgx-dcap-qvl"
    real_quote = (directory / "sgx_quote").read_bytes()
    body = parse_quote(real_quote).body
    identity = EnclaveIdentity(
        mr_enclave=body.mr_enclave,
        mr_signer=body.mr_signer,
        attributes=Attributes(flags=body.attributes.flags, xfrm=body.attributes.xfrm),
        isv_prod_id=body.isv_prod_id,
        isv_svn=body.isv_svn,
        misc_select=body.misc_select,
    )
    enclave = SimulatedPlatform.init(tmp_path / "platform", now=NOW).enclave(identity)

    class Recorded(EmulatedDevAttestation):
        def read(self, name: str) -> bytes:
            return real_quote if name == "quote" else super().read(name)

    adapter = GramineEnclave(Recorded(enclave), enclave.egetkey)
    quote = adapter.quote(HELLO)
    assert quote == real_quote
    with pytest.raises(GramineError) as caught:
        adapter.quote(bytes(64))
    assert caught.value.check == "quote-report-data"

    recorded: dict[str, Any] = json.loads((directory / "sgx_quote_collateral.json").read_text())
    with FakePccs(recorded, fmspc="00A067110000").serving() as pccs, PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    appraisal = appraise_quote(
        quote,
        collateral,
        at=RECORDED_NOW,
        trust=TrustAnchor.intel_production(),
        policy=AttestationPolicy(
            accepted_statuses=frozenset({RECORDED_STATUS}),
            mrenclaves=frozenset({identity.mr_enclave}),
            mrsigner=identity.mr_signer,
            report_data=HELLO,
        ),
    )
    assert appraisal.quote.status == RECORDED_STATUS
    assert appraisal.quote.trust.is_intel_production
