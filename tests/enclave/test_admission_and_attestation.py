"""Worker admission, Phase 1 and Phase 2 on the simulated platform, in one process.

The Controller's place is every hand-over between these calls: each test changes
exactly one thing it could change and expects exactly that check to refuse it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cleanroom.attestation import (
    AttestationError,
    AttestationPolicy,
    QuoteSignatureError,
    TrustAnchor,
    load_collateral,
)
from cleanroom.client.phase1 import AttestedWorker, ClaimsError, verify_attester_evidence
from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.errors import AdmissionError, UnknownWorkerError
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.bundle import function_id
from cleanroom.protocol.encoding import b64u, sha256
from cleanroom.protocol.errors import SignatureError
from cleanroom.protocol.handshake import ClientHandshake
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.spec import UploadPurpose, WorkSpec
from cleanroom.sgx import Report
from cleanroom.tee.measure import Measurement, measure
from tests.protocol.fixtures import ALICE, BOB, BOB_ID, SPEC_DOCUMENT

NOW = int(time.time())
BUNDLE = b"a function bundle"


def spec_for(bundle: bytes, **changes: Any) -> WorkSpec:
    return WorkSpec.parse({**SPEC_DOCUMENT, "function": "fs://" + b64u(sha256(bundle)), **changes})


SPEC = spec_for(BUNDLE)
OTHER_SPEC = spec_for(BUNDLE, nonce=b64u(b"\x07" * 16))


@dataclasses.dataclass
class Room:
    platform: SimulatedPlatform
    attester_image: Measurement
    worker_image: Measurement
    attester: Attester
    worker: WorkerEnclave
    trust: TrustAnchor

    def evidence(
        self, nonce: bytes, worker: WorkerEnclave | None = None
    ) -> tuple[dict[str, Any], bytes]:
        found = self.attester.attest((worker or self.worker).worker_id, nonce)
        return found.claims, found.quote

    def verify(self, claims: Any, quote: bytes, nonce: bytes, **changes: Any) -> AttestedWorker:
        arguments: dict[str, Any] = {
            "claims": claims,
            "quote": quote,
            "collateral": load_collateral(self.platform.collateral_json(now=NOW)),
            "nonce": nonce,
            "approved_work_id": SPEC.work_id,
            "expected_worker_mrenclaves": frozenset({self.worker_image.mr_enclave}),
            "attester_policy": AttestationPolicy(
                mrenclaves=frozenset({self.attester_image.mr_enclave}),
                mrsigner=self.attester_image.mr_signer,
            ),
            "trust": self.trust,
            "at": NOW,
        }
        arguments.update(changes)
        return verify_attester_evidence(**arguments)


def start_worker(
    room_platform: SimulatedPlatform, attester: Attester, spec: WorkSpec
) -> WorkerEnclave:
    image = measure("worker")
    worker = WorkerEnclave(room_platform.enclave(image.identity()), spec, function_id(BUNDLE))
    report, claims = worker.admission_request(attester.target_info())
    admission = attester.admit(report, claims)
    worker.complete_admission(admission.report.to_bytes(), attester_mr_signer=image.mr_signer)
    return worker


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> Room:
    platform = SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)
    attester_image, worker_image = measure("attester"), measure("worker")
    attester = Attester(
        platform.enclave(attester_image.identity()),
        WorkerAllowList.from_manifest_config(attester_image.manifest["config"]),
    )
    return Room(
        platform=platform,
        attester_image=attester_image,
        worker_image=worker_image,
        attester=attester,
        worker=start_worker(platform, attester, SPEC),
        trust=TrustAnchor.from_certificate(platform.root_certificate_der()),
    )


def fresh_nonce() -> bytes:
    return os.urandom(32)


# -------------------------------------------------------------- the good path


def test_attest_handshake_and_records(room: Room) -> None:
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    attested = room.verify(claims, quote, nonce)
    assert attested.worker_id == room.worker.worker_id
    assert attested.work_id == SPEC.work_id
    client = ClientHandshake(
        user_key=ALICE,
        work_id=attested.work_id,
        worker_id=attested.worker_id,
        worker_key=load_spki(attested.worker_key_spki, "worker_key"),
        quote_sha256=attested.quote_sha256,
        purpose=UploadPurpose(op="upload", input="input_1"),
    )
    accepted = room.worker.handshake(client.init, client.init_signature)
    keys = client.finish(accepted.resp, accepted.resp_signature)
    assert keys == accepted.keys
    frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
        "input_1/a", b"row", final=True
    )
    receiver = RecordReceiver(accepted.keys.client_to_worker, accepted.keys.session_id)
    assert receiver.open(frame)[3] == b"row"
    receiver.close()


# ------------------------------------------------------------------ admission


def test_swapped_function_bundle_is_refused_by_the_worker(room: Room) -> None:
    with pytest.raises(AdmissionError) as caught:
        WorkerEnclave(
            room.platform.enclave(room.worker_image.identity()),
            SPEC,
            function_id(b"another function"),
        )
    assert caught.value.check == "function-id"


def test_report_not_for_the_attester_is_refused(room: Room) -> None:
    worker = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    report, claims = worker.admission_request(room.worker_image.identity().target_info().to_bytes())
    with pytest.raises(AdmissionError) as caught:
        room.attester.admit(report, claims)
    assert caught.value.check == "report-mac"


@pytest.mark.parametrize(
    ("debug", "image", "check"),
    [(True, "worker", "worker-debug"), (False, "attester", "worker-mrenclave")],
)
def test_unlisted_worker_images_are_refused(
    room: Room, debug: bool, image: str, check: str
) -> None:
    identity = measure(image).identity(debug=debug)
    if debug:  # a DEBUG build of the Worker: same MRENCLAVE, DEBUG attribute set
        assert identity.mr_enclave == room.worker_image.mr_enclave
    worker = WorkerEnclave(room.platform.enclave(identity), SPEC, function_id(BUNDLE))
    report, claims = worker.admission_request(room.attester.target_info())
    with pytest.raises(AdmissionError) as caught:
        room.attester.admit(report, claims)
    assert caught.value.check == check


@pytest.mark.parametrize("field", ["work_id", "worker_key"])
def test_claims_that_the_report_does_not_commit_to_are_refused(room: Room, field: str) -> None:
    worker = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    report, claims = worker.admission_request(room.attester.target_info())
    other = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), OTHER_SPEC, function_id(BUNDLE)
    )
    swapped = dict(claims, **{field: other.claims[field]})
    with pytest.raises(AdmissionError) as caught:
        room.attester.admit(report, swapped)
    assert caught.value.check == "worker-report-data"


def test_answer_for_another_worker_is_refused(room: Room) -> None:
    first = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    second = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    room.attester.admit(*first.admission_request(room.attester.target_info()))
    answer_for_second = room.attester.admit(*second.admission_request(room.attester.target_info()))
    with pytest.raises(AdmissionError) as caught:
        first.complete_admission(
            answer_for_second.report.to_bytes(), attester_mr_signer=room.worker_image.mr_signer
        )
    assert caught.value.check == "admission-report-data"
    assert not first.admitted


def test_forged_answer_is_refused(room: Room) -> None:
    worker = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    answer = room.attester.admit(*worker.admission_request(room.attester.target_info()))
    forged = bytearray(answer.report.to_bytes())
    forged[320] ^= 1
    with pytest.raises(AdmissionError) as caught:
        worker.complete_admission(bytes(forged), attester_mr_signer=room.worker_image.mr_signer)
    assert caught.value.check == "report-mac"


def test_unadmitted_worker_serves_no_session(room: Room) -> None:
    worker = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    with pytest.raises(AdmissionError) as caught:
        worker.handshake({}, b"")
    assert caught.value.check == "admitted"


def test_attester_vouches_only_for_workers_it_admitted(room: Room) -> None:
    with pytest.raises(UnknownWorkerError):
        room.attester.attest("no-such-worker", fresh_nonce())


# -------------------------------------------------------------------- Phase 1


def test_replayed_attestation_is_refused(room: Room) -> None:
    old_nonce = fresh_nonce()
    claims, quote = room.evidence(old_nonce)
    with pytest.raises(ClaimsError) as caught:
        room.verify(claims, quote, fresh_nonce())
    assert caught.value.check == "nonce"


def test_worker_of_another_clean_room_is_refused(room: Room) -> None:
    other = start_worker(room.platform, room.attester, OTHER_SPEC)
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce, worker=other)
    with pytest.raises(ClaimsError) as caught:
        room.verify(claims, quote, nonce)
    assert caught.value.check == "work-id"
    assert caught.value.expected == SPEC.work_id


def test_swapped_spec_gives_another_work_id(room: Room) -> None:
    # The Controller deploys a Worker with Bob as owner of input_1 instead of Alice.
    swapped = spec_for(BUNDLE, inputs={"input_1": BOB_ID, "input_2": BOB_ID})
    worker = start_worker(room.platform, room.attester, swapped)
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce, worker=worker)
    with pytest.raises(ClaimsError) as caught:
        room.verify(claims, quote, nonce)
    assert caught.value.check == "work-id"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c["worker"].update(worker_key=b64u(b"x" * 91)),
        lambda c: c["worker"].update(work_id="x"),
        lambda c: c.update(nonce=b64u(b"\x00" * 32)),
    ],
)
def test_tampered_claims_are_refused(room: Room, tamper: Any) -> None:
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    tampered = copy.deepcopy(claims)
    tamper(tampered)
    with pytest.raises(AttestationError) as caught:
        room.verify(tampered, quote, nonce)
    assert caught.value.check == "report-data"


def test_tampered_quote_is_refused(room: Room) -> None:
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    tampered = bytearray(quote)
    tampered[48 + 330] ^= 1
    with pytest.raises(QuoteSignatureError):
        room.verify(claims, bytes(tampered), nonce)


def test_unexpected_worker_measurement_is_refused(room: Room) -> None:
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    with pytest.raises(ClaimsError) as caught:
        room.verify(claims, quote, nonce, expected_worker_mrenclaves=frozenset({bytes(32)}))
    assert caught.value.check == "worker-mrenclave"


def test_wrong_attester_measurement_is_refused(room: Room) -> None:
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    policy = AttestationPolicy(mrenclaves=frozenset({room.worker_image.mr_enclave}))
    with pytest.raises(AttestationError) as caught:
        room.verify(claims, quote, nonce, attester_policy=policy)
    assert caught.value.check == "mrenclave"


def test_evidence_from_another_platform_is_refused(room: Room, tmp_path: Path) -> None:
    other = SimulatedPlatform.init(tmp_path / "other", now=NOW)
    nonce = fresh_nonce()
    claims, quote = room.evidence(nonce)
    with pytest.raises(QuoteSignatureError):
        room.verify(
            claims, quote, nonce, trust=TrustAnchor.from_certificate(other.root_certificate_der())
        )


# -------------------------------------------------------------------- Phase 2


def test_resp_from_a_worker_other_than_the_attested_one_is_refused(room: Room) -> None:
    impostor = start_worker(room.platform, room.attester, SPEC)  # same work, another key
    nonce = fresh_nonce()
    attested = room.verify(*room.evidence(nonce), nonce)
    client = ClientHandshake(
        user_key=BOB,
        work_id=attested.work_id,
        worker_id=impostor.worker_id,  # the Controller routes the session to the impostor
        worker_key=load_spki(attested.worker_key_spki, "worker_key"),
        quote_sha256=attested.quote_sha256,
        purpose=UploadPurpose(op="upload", input="input_2"),
    )
    accepted = impostor.handshake(client.init, client.init_signature)
    with pytest.raises(SignatureError) as caught:
        client.finish(accepted.resp, accepted.resp_signature)
    assert caught.value.check == "handshake-resp-signature"


def test_report_wire_format_between_enclaves(room: Room) -> None:
    worker = WorkerEnclave(
        room.platform.enclave(room.worker_image.identity()), SPEC, function_id(BUNDLE)
    )
    report, _claims = worker.admission_request(room.attester.target_info())
    assert len(report) == Report.SIZE
