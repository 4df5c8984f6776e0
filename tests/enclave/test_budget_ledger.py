"""The budget ledger's totals are the Worker's, not the disk's: a charge reads back the
last entry only, a budget statement the whole chain, without holding the ledger's lock,
and a ledger found changed on disk stops every query from then on."""

from __future__ import annotations

import threading
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
