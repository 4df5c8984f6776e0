"""The budget ledger's totals are the Worker's, not the disk's: a charge reads back the
last entry only, a budget statement the whole chain, without holding the ledger's lock,
and a ledger found changed on disk stops every query from then on."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from cleanroom.enclave.budget import BudgetLedger
from cleanroom.enclave.errors import RunError
from cleanroom.enclave.store import SealedStore
from tests.sql.fixtures import sql_spec


def charged(tmp_path: Path, queries: int) -> tuple[SealedStore, BudgetLedger]:
    store = SealedStore(tmp_path / "sealed")
    ledger = BudgetLedger(store, sql_spec(dp=True))
    for run in range(1, queries + 1):
        ledger.charge(run, 0.25, ["input_1"])
    return store, ledger


def sealed_file(store: SealedStore, sequence: int) -> Path:
    return store._files[f"_budget/{sequence:08d}"][1]


def test_a_statement_reads_the_whole_chain(tmp_path: Path) -> None:
    store, ledger = charged(tmp_path, 3)
    assert ledger.status()["input_1"] == {"spent": 0.75, "left": 1.25, "budget": 2.0}
    reads: list[str] = []
    real = store.read

    def counted(name: str) -> Any:
        reads.append(name)
        return real(name)

    store.read = counted  # type: ignore[method-assign]
    ledger.status()
    assert reads == [f"_budget/{n:08d}" for n in (3, 0, 1, 2, 3)]  # the head, then all


def test_an_earlier_entry_changed_on_disk_stops_every_later_query(tmp_path: Path) -> None:
    """A charge reads back the head only, so an earlier entry changed on disk is found by
    the next budget statement; from then on every check and charge refuses, as they did
    when each read the whole chain."""
    store, ledger = charged(tmp_path, 3)
    sealed_file(store, 1).write_bytes(sealed_file(store, 0).read_bytes())
    assert ledger.charge(4, 0.25, ["input_1"]) == {"input_1": 1.0}  # its totals are memory's
    with pytest.raises(RunError) as caught:
        ledger.status()
    assert caught.value.check == "budget-ledger"
    for later in (ledger.spent, lambda: ledger.charge(5, 0.25, ["input_1"]), ledger.status):
        with pytest.raises(RunError) as again:
            later()
        assert again.value.check == "budget-ledger"


def test_a_head_rolled_back_on_disk_is_refused(tmp_path: Path) -> None:
    store, ledger = charged(tmp_path, 2)
    sealed_file(store, 2).write_bytes(sealed_file(store, 1).read_bytes())
    with pytest.raises(RunError) as caught:
        ledger.charge(3, 0.25, ["input_1"])
    assert caught.value.check == "budget-ledger"


def test_a_charge_does_not_wait_for_a_statement_reading_the_chain(tmp_path: Path) -> None:
    """The statement's walk through the chain holds no lock: entries are never rewritten,
    and a charge appends after the head the statement read. Under the ledger's lock, a
    charge (under the room's lock, every other session of the room waiting) waited for
    the walk, 3 s at 10,000 entries."""
    store, ledger = charged(tmp_path, 3)
    walking, charged_meanwhile = threading.Event(), threading.Event()
    waited: list[bool] = []
    real = store.read

    def held(name: str) -> Any:
        if name == "_budget/00000000":
            walking.set()
            waited.append(charged_meanwhile.wait(60))  # False: given up, nothing charged
        return real(name)

    store.read = held  # type: ignore[method-assign]
    statements: list[dict[str, Any]] = []
    walker = threading.Thread(target=lambda: statements.append(ledger.status()))
    walker.start()
    try:
        assert walking.wait(60)
        ledger.charge(4, 0.25, ["input_1"])
        charged_meanwhile.set()
    finally:
        charged_meanwhile.set()
        walker.join()
    assert waited == [True], "the charge waited for the statement's walk"
    assert statements[0]["input_1"]["spent"] == 0.75  # the chain as it was when asked
    assert ledger.status()["input_1"]["spent"] == 1.0


def test_an_entry_that_could_not_be_written_stops_every_later_query(tmp_path: Path) -> None:
    """A charge whose entry the sealed store failed to write (a full disk) is refused,
    and so is every later check and charge, as ``budget-ledger``: the entry's name is
    taken and its bytes unknown. Before, later charges failed as ``object-exists``, the
    store's name for it (h10)."""
    store, ledger = charged(tmp_path, 1)
    real = store.create

    def no_space(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    def full(name: str) -> Any:
        writer = real(name)
        writer.write = no_space  # type: ignore[method-assign]
        return writer

    store.create = full  # type: ignore[method-assign]
    with pytest.raises(RunError) as caught:
        ledger.charge(2, 0.25, ["input_1"])
    assert caught.value.check == "budget-ledger"
    store.create = real  # type: ignore[method-assign]
    for later in (ledger.spent, lambda: ledger.charge(3, 0.25, ["input_1"]), ledger.status):
        with pytest.raises(RunError) as again:
            later()
        assert again.value.check == "budget-ledger"


def test_an_epsilon_below_half_an_ulp_of_the_total_is_charged(tmp_path: Path) -> None:
    """Charged exactly (h29; left open by h23): a float total of 1.75 did not move for
    an ε of 1e-16 (1.75 + 1e-16 == 1.75), so after it a charge of 0.25 still fitted the
    budget of 2 that the two together pass; and a budget spent to the last digit took
    an ε of 1e-16, or of 1e-13 (under the slack of 1e-12), for ever."""
    store, ledger = charged(tmp_path, 7)
    assert ledger.charge(8, 1e-16, ["input_1"]) == {"input_1": Fraction("1.7500000000000001")}
    with pytest.raises(RunError) as caught:
        ledger.charge(9, 0.25, ["input_1"])
    assert caught.value.check == "differential_privacy.budget"
    assert caught.value.expected == "<= 0.2499999999999999 left"
    # Kept exact in the sealed store: the entry holds the decimal texts, and the whole
    # chain read back adds up to the last digit.
    entry = json.loads(b"".join(store.read("_budget/00000008")))
    assert entry["type"] == "cleanroom/budget-ledger/v2"
    assert entry["charges"] == {"input_1": "0.0000000000000001"}
    assert entry["spent"] == {"input_1": "1.7500000000000001"}
    assert ledger.status()["input_1"]["spent"] == 1.75  # shown as a float, kept exact
    ledger.charge(9, 0.2499999999999999, ["input_1"])
    assert ledger.spent() == {"input_1": Fraction(2)}
    for epsilon in (1e-16, 1e-13, 5e-324):
        with pytest.raises(RunError) as full:
            ledger.charge(10, epsilon, ["input_1"])
        assert full.value.check == "differential_privacy.budget"
    assert ledger.status()["input_1"] == {"spent": 2.0, "left": 0.0, "budget": 2.0}


def test_tenths_spend_a_budget_exactly(tmp_path: Path) -> None:
    """ε as written, not the float's binary value (0.1 is above 1/10): twenty queries of
    ε 0.1 spend a budget of 2 to the last digit, and no more fits."""
    store = SealedStore(tmp_path / "sealed")
    ledger = BudgetLedger(store, sql_spec(dp=True))
    for run in range(1, 21):
        ledger.charge(run, 0.1, ["input_1"])
    assert ledger.spent() == {"input_1": Fraction(2)}
    with pytest.raises(RunError) as caught:
        ledger.charge(21, 1e-300, ["input_1"])
    assert caught.value.check == "differential_privacy.budget"
    assert ledger.status()["input_1"] == {"spent": 2.0, "left": 0.0, "budget": 2.0}
