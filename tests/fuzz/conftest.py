"""Shared pieces of the fuzz suites: budgets, strategies, and an admitted Worker.

The normal run uses a few hundred examples per target; ``-m slow`` runs the same
targets with at least 10,000 each (``FUZZ_SLOW``). Every target checks three things:
only the project's own typed errors come out (:class:`cleanroom.errors.CheckFailed`),
nothing that differs from the one valid message is accepted, and (across processes)
the enclave keeps serving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.enclave.attester import Attester, WorkerAllowList
from cleanroom.enclave.worker import WorkerEnclave
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.bundle import function_id, pack
from cleanroom.protocol.spec import WorkSpec
from cleanroom.tee.measure import measure
from tests.protocol.fixtures import SPEC_DOCUMENT

FUZZ_FAST = int(os.environ.get("CLEANROOM_FUZZ_FAST", "200"))
FUZZ_SLOW = int(os.environ.get("CLEANROOM_FUZZ_SLOW", "10000"))

BUDGETS = [
    pytest.param(FUZZ_FAST, id="fast"),
    pytest.param(FUZZ_SLOW, id="slow", marks=pytest.mark.slow),
]


def fuzz(budget: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``budget`` examples of ``strategy`` (no example database)."""

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def run(value: Any) -> None:
        check(value)

    run()
    from tests.reliability.report import record

    record("fuzz", check.__qualname__.split(".")[0], {"examples": budget})


# ------------------------------------------------------------------ strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` changed in at least one byte: flips, cuts, insertions, splices."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "replace", "drop"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "replace" and data:
            i = draw(st.integers(0, len(data) - 1))
            j = draw(st.integers(i, min(len(data), i + 16)))
            data[i:j] = draw(st.binary(max_size=16))
        elif op == "drop" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 8))]
    if bytes(data) == original:
        data.append(0)
    return bytes(data)


@st.composite
def mutated_document(draw: st.DrawFn, original: dict[str, Any]) -> Any:
    """A JSON document like ``original`` with fields changed, dropped, added or retyped."""
    document: Any = dict(original)
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(document, dict):
            break
        op = draw(st.sampled_from(["set", "drop", "add", "nest", "text"]))
        keys = sorted(document)
        if op == "set" and keys:
            document[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "drop" and keys:
            del document[draw(st.sampled_from(keys))]
        elif op == "add":
            document[draw(st.text(max_size=12))] = draw(json_values)
        elif op == "nest" and keys:
            key = draw(st.sampled_from(keys))
            value = document[key]
            if isinstance(value, dict):
                document[key] = draw(mutated_document(value))
            elif isinstance(value, str) and value:
                document[key] = draw(mutated(value.encode())).decode("utf-8", "replace")
        elif op == "text" and keys:
            key = draw(st.sampled_from(keys))
            document[key] = draw(st.text(max_size=100))
    return document


# ------------------------------------------------------- an admitted Worker


@dataclass
class Enclaves:
    platform: SimulatedPlatform
    attester: Attester
    worker: WorkerEnclave
    spec: WorkSpec
    bundle: bytes
    worker_mr_signer: bytes
    report: bytes  # the Worker's valid admission REPORT
    answer: bytes  # the Attester's valid answer


def make_bundle(directory: Path) -> bytes:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text("def run():\n    pass\n")
    return pack(directory)


@pytest.fixture(scope="session")
def enclaves(tmp_path_factory: pytest.TempPathFactory) -> Enclaves:
    tmp = tmp_path_factory.mktemp("fuzz-enclaves")
    bundle = make_bundle(tmp / "function")
    spec = WorkSpec.parse({**SPEC_DOCUMENT, "function": function_id(bundle)})
    platform = SimulatedPlatform.init(tmp / "platform", now=int(time.time()))
    attester_image, worker_image = measure("attester"), measure("worker")
    attester = Attester(
        platform.enclave(attester_image.identity()),
        WorkerAllowList.from_manifest_config(attester_image.manifest["config"]),
    )
    worker = WorkerEnclave(platform.enclave(worker_image.identity()), spec, function_id(bundle))
    report, claims = worker.admission_request(attester.target_info())
    admission = attester.admit(report, claims)
    answer = admission.report.to_bytes()
    worker.complete_admission(answer, attester_mr_signer=worker_image.mr_signer)
    return Enclaves(
        platform, attester, worker, spec, bundle, worker_image.mr_signer, report, answer
    )
