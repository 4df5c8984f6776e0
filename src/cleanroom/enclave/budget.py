"""The privacy budget of a SQL room: a hash-chained ledger in the Worker's sealed store.

Each query under differential privacy is charged *before* it runs, as a new sealed
entry ``_budget/<sequence>``: ``{"type": "cleanroom/budget-ledger/v1", "work_id",
"sequence", "previous" (hex SHA-256 of the entry before), "run", "charges" {input:
ε}, "spent" {input: total ε}}``. The Worker keeps the last entry's sequence, digest
and totals in memory, and a charge is decided by those totals: nothing on disk can
give a budget back. Every check and charge reads the last entry back and refuses
(``budget-ledger``) unless it is the one this Worker wrote; every budget statement
reads the whole chain back and refuses unless it is intact, complete and ends there.
A ledger found changed, rolled back or removed on disk stops every query from then on.
The sealed store's key lives only in the Worker's memory: a restarted Worker cannot
read the ledger, nor the data it protects (docs/privacy.md, "The budget").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
from typing import Any

from cleanroom.enclave.errors import RunError, StoreError
from cleanroom.enclave.store import SealedStore
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import WorkSpec

LEDGER_TYPE = "cleanroom/budget-ledger/v1"
PREFIX = "_budget"


class BudgetLedger:
    def __init__(self, store: SealedStore, spec: WorkSpec) -> None:
        assert spec.sql is not None
        self._store, self._spec = store, spec
        self.budgets = {
            input_id: rule.differential_privacy.budget
            for input_id, rule in sorted(spec.sql.rules.items())
            if rule.differential_privacy is not None
        }
        self._lock = threading.Lock()
        self._head: tuple[int, str] | None = None
        self._totals: dict[str, float] = {}
        self._broken: RunError | None = None  # once found, every later check refuses
        self._append(run=0, charges={}, spent=dict.fromkeys(self.budgets, 0.0))

    def _append(
        self, *, run: int, charges: dict[str, float], spent: dict[str, float]
    ) -> dict[str, float]:
        """A new entry after the head, whose totals ``spent`` (verified by the caller,
        under the ledger's lock) are."""
        totals = {i: spent[i] + charges.get(i, 0.0) for i in self.budgets}
        sequence = 0 if self._head is None else self._head[0] + 1
        entry = {
            "type": LEDGER_TYPE,
            "work_id": self._spec.work_id,
            "sequence": sequence,
            "previous": None if self._head is None else self._head[1],
            "run": run,
            "charges": charges,
            "spent": totals,
        }
        data = canonical(entry)
        writer = None
        try:
            writer = self._store.create(f"{PREFIX}/{sequence:08d}")
            writer.write(data)
            self._store.record(writer.close())
        except (StoreError, OSError) as error:
            # The entry's name is taken and its bytes unknown: the chain cannot go on.
            if writer is not None:
                writer.abort()
            raise self._fail(
                f"entry {sequence} written", type(error).__name__, f"not written: {error}"
            ) from error
        self._head = (sequence, hashlib.sha256(data).hexdigest())
        self._totals = totals
        return dict(totals)

    def _fail(self, expected: object, actual: object, message: str) -> RunError:
        """The refusal of a ledger that cannot be verified, kept: no query runs again."""
        self._broken = RunError(
            "budget-ledger", expected, actual, f"the privacy budget cannot be verified: {message}",
            "no query runs in this room any more; its owners may redeploy it",
        )  # fmt: skip
        return self._broken

    def spent(self) -> dict[str, float]:
        """ε spent per input: the totals this Worker wrote last, once their entry is read
        back from the sealed store and found to be the one it wrote.

        Time does not grow with the queries charged: the whole chain is read back by
        :meth:`status` only, outside this lock (it took 0.3 s per 1,000 entries, and a
        runner may charge 10,000; every check and charge read it, the charge under the
        room's lock, so every other session of the room waited)."""
        with self._lock:
            return self._checked_head()

    def _checked_head(self) -> dict[str, float]:
        """:meth:`spent`, for a caller that holds the ledger's lock."""
        if self._broken is not None:
            raise self._broken
        if self._head is None:
            raise self._fail("a ledger", "none", "no ledger")
        sequence, digest = self._head
        data = self._entry_bytes(sequence)
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, digest):
            raise self._fail(digest, actual, f"entry {sequence} is not the one this Worker wrote")
        return dict(self._totals)

    def _entry_bytes(self, sequence: int) -> bytes:
        try:
            return b"".join(self._store.read(f"{PREFIX}/{sequence:08d}"))
        except StoreError as error:
            raise self._fail(f"entry {sequence}", "unreadable", str(error)) from error

    def _walked(self, head: tuple[int, str]) -> dict[str, float]:
        """The totals of the whole chain read back from the sealed store, verified entry
        by entry up to ``head``. Entries are never rewritten, so no lock is held: a
        charge meanwhile appends after ``head``."""
        sequence_head, digest_head = head
        previous: str | None = None
        totals = dict.fromkeys(self.budgets, 0.0)
        for sequence in range(sequence_head + 1):
            data = self._entry_bytes(sequence)
            try:
                entry: Any = json.loads(data)
            except ValueError as error:
                raise self._fail(f"entry {sequence}", "unreadable", str(error)) from error
            if (
                not isinstance(entry, dict)
                or entry.get("type") != LEDGER_TYPE
                or entry.get("work_id") != self._spec.work_id
                or entry.get("sequence") != sequence
                or entry.get("previous") != previous
                or not isinstance(entry.get("charges"), dict)
                or not isinstance(entry.get("spent"), dict)
            ):
                raise self._fail(f"entry {sequence} chained to {previous}", "another", "broken")
            for input_id, charge in entry["charges"].items():
                if input_id not in totals or not isinstance(charge, int | float) or charge < 0:
                    raise self._fail("a charge of an owner's budget", charge, "bad charge")
                totals[input_id] += charge
            if any(
                not math.isclose(entry["spent"].get(i, -1.0), totals[i], abs_tol=1e-9)
                for i in totals
            ):
                raise self._fail(totals, entry["spent"], "totals do not add up")
            previous = hashlib.sha256(data).hexdigest()
        if previous is None or not hmac.compare_digest(previous, digest_head):
            raise self._fail(digest_head, previous, "the ledger is not the one this Worker wrote")
        return totals

    def charge(self, run: int, epsilon: float, inputs: list[str]) -> dict[str, float]:
        """Spend ``epsilon`` of each of ``inputs``' budgets, or refuse; the new totals."""
        with self._lock:
            spent = self._checked_head()
            for input_id in inputs:
                if spent[input_id] + epsilon > self.budgets[input_id] + 1e-12:
                    raise RunError(
                        "differential_privacy.budget",
                        f"<= {max(self.budgets[input_id] - spent[input_id], 0.0):g} left",
                        epsilon,
                        f"{input_id}'s privacy budget of ε={self.budgets[input_id]:g} is spent",
                    )  # fmt: skip
            return self._append(
                run=run, charges=dict.fromkeys(sorted(inputs), epsilon), spent=spent
            )

    def status(self) -> dict[str, dict[str, float]]:
        """Every DP owner's ε spent, left and total, from the whole chain read back and
        verified (outside the ledger's lock) to the head it had when asked."""
        with self._lock:
            self._checked_head()
            head = self._head
        assert head is not None
        spent = self._walked(head)
        return {
            i: {"spent": spent[i], "left": max(self.budgets[i] - spent[i], 0.0), "budget": b}
            for i, b in self.budgets.items()
        }
