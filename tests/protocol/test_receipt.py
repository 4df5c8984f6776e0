"""Run receipts: signed by the attested Worker, checked against the approved spec."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cleanroom.protocol.errors import BindingError, MessageFormatError, SignatureError
from cleanroom.protocol.receipt import run_receipt, sign_receipt, verify_receipt
from cleanroom.protocol.spec import WorkSpec

from .fixtures import ALICE_ID, BOB_ID, SPEC, SPEC_DOCUMENT, WORKER, fixed_key

DIGEST_1, DIGEST_2, OUT = "11" * 32, "22" * 32, "33" * 32


def receipt(**changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "inputs": {"input_1": (ALICE_ID, DIGEST_1), "input_2": (BOB_ID, DIGEST_2)},
        "outputs": {"output_1": OUT},
        "status": "succeeded",
        "exit_code": 0,
        "started": 100,
        "finished": 160,
    }
    arguments.update(changes)
    return run_receipt(SPEC, **arguments)


def check(document: object, signature: bytes, **changes: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"worker_key": WORKER.public_key(), "spec": SPEC}
    arguments.update(changes)
    return verify_receipt(document, signature, **arguments)


def test_good_receipt_verifies() -> None:
    document = receipt()
    verified = check(document, sign_receipt(WORKER, document), own_inputs={"input_1": DIGEST_1})
    assert verified["work_id"] == SPEC.work_id


def test_receipt_signed_by_another_key_is_refused() -> None:
    document = receipt()
    with pytest.raises(SignatureError) as caught:
        check(document, sign_receipt(fixed_key(0xBAD), document))
    assert caught.value.check == "receipt-signature"


@pytest.mark.parametrize("field", ["status", "outputs", "started", "exit_code"])
def test_changed_receipt_is_refused(field: str) -> None:
    document = receipt()
    signature = sign_receipt(WORKER, document)
    changed = copy.deepcopy(document)
    changed[field] = {
        "status": "failed",
        "outputs": {"output_1": {"sha256": "00" * 32}},
        "started": 1,
        "exit_code": 1,
    }[field]
    with pytest.raises(SignatureError):
        check(changed, signature)


def test_receipt_of_another_work_is_refused() -> None:
    other = WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": 2}})
    document = run_receipt(
        other, inputs={"input_1": (ALICE_ID, DIGEST_1), "input_2": (BOB_ID, DIGEST_2)},
        outputs={"output_1": OUT}, status="succeeded", exit_code=0, started=1, finished=2,
    )  # fmt: skip
    with pytest.raises(BindingError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == "work-id"


@pytest.mark.parametrize(
    ("changes", "check_name"),
    [
        ({"inputs": {"input_1": (ALICE_ID, DIGEST_1)}}, "receipt-inputs"),
        (
            {"inputs": {"input_1": (BOB_ID, DIGEST_1), "input_2": (BOB_ID, DIGEST_2)}},
            "receipt-input-owner",
        ),
        ({"outputs": {}}, "receipt-outputs"),
    ],
)
def test_receipt_not_matching_the_spec_is_refused(changes: dict[str, Any], check_name: str) -> None:
    document = receipt(**changes)
    with pytest.raises(BindingError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == check_name


def test_receipt_that_ran_on_other_data_is_refused() -> None:
    document = receipt(inputs={"input_1": (ALICE_ID, "99" * 32), "input_2": (BOB_ID, DIGEST_2)})
    with pytest.raises(BindingError) as caught:
        check(document, sign_receipt(WORKER, document), own_inputs={"input_1": DIGEST_1})
    assert caught.value.check == "receipt-input-digest"


def test_malformed_receipt_is_refused() -> None:
    with pytest.raises(MessageFormatError):
        check({"type": "x"}, b"")
    with pytest.raises(ValueError, match="unknown run status"):
        receipt(status="great")
    document = receipt(started=200, finished=100)
    with pytest.raises(MessageFormatError, match="receipt-times"):
        check(document, sign_receipt(WORKER, document))


@pytest.mark.parametrize("code", [None, 0, 1, 137, 255])
def test_exit_status_is_signed_as_the_sandbox_reported_it(code: int | None) -> None:
    document = receipt(status="failed", exit_code=code)
    assert check(document, sign_receipt(WORKER, document))["exit_code"] == code


@pytest.mark.parametrize("code", [-1, 256, True, 1.0, "0"])
def test_an_exit_status_no_process_returns_is_refused(code: object) -> None:
    with pytest.raises(MessageFormatError, match="exit-code"):
        receipt(exit_code=code)
    document = receipt()
    document["exit_code"] = code  # signed as it is: the verifier must refuse it too
    with pytest.raises(MessageFormatError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == "exit-code"


def test_a_receipt_without_an_exit_status_is_refused() -> None:
    document = receipt()
    del document["exit_code"]
    with pytest.raises(MessageFormatError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == "receipt"


def test_a_refusal_of_the_fields_quotes_their_names_not_the_document() -> None:
    """Before its signature a receipt is anyone's, of any size: a saved bundle's receipt
    with an extra 5 MB member was quoted whole in the refusal, one 5 MB line."""
    document: dict[str, Any] = {**receipt(), "x" * 300: "A" * 5_000_000}
    with pytest.raises(MessageFormatError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == "receipt"
    actual = str(caught.value.actual)
    assert actual.startswith("['exit_code', 'finished'") and len(actual) == 200, actual
    with pytest.raises(MessageFormatError) as caught:
        check(["not", "a", "receipt"], b"")
    assert caught.value.actual == "list"


def test_a_spec_refusal_quotes_a_long_key_cut_short() -> None:
    document = copy.deepcopy(SPEC_DOCUMENT)
    document["parameters"] = {"k" * 100_000: 1}
    with pytest.raises(MessageFormatError) as caught:
        WorkSpec.parse(document)
    assert caught.value.check == "work-spec"
    assert str(caught.value.actual) == f"parameters.{'k' * 189}", caught.value


def test_boolean_times_are_refused() -> None:
    """JSON's true and false are not times, though Python's bool is an int."""
    document = receipt(started=False, finished=True)
    with pytest.raises(MessageFormatError) as caught:
        check(document, sign_receipt(WORKER, document))
    assert caught.value.check == "receipt-times"
