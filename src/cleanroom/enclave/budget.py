"""The privacy budget of a SQL room: a hash-chained ledger in the Worker's sealed store.

Each query under differential privacy is charged *before* it runs, as a new sealed
entry ``_budget/<sequence>``: ``{"type": "cleanroom/budget-ledger/v1", "work_id",
"sequence", "previous" (hex SHA-256 of the entry before), "run", "charges" {input:
ε}, "spent" {input: total ε}}``. The Worker keeps only the last entry's sequence
and digest in memory; every check reads the whole chain back from the sealed
store and refuses (``budget-ledger``) unless it is intact, complete and ends at
that digest, so a ledger changed, rolled back or removed on disk stops every query
instead of resetting the budget. The sealed store's key lives only in the Worker's
memory: a restarted Worker cannot read the ledger, nor the data it protects
(docs/privacy.md, "The budget").
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
        writer = self._store.create(f"{PREFIX}/{sequence:08d}")
        writer.write(data)
        self._store.record(writer.close())
        self._head = (sequence, hashlib.sha256(data).hexdigest())
        return totals

    def _fail(self, expected: object, actual: object, message: str) -> RunError:
        return RunError(
            "budget-ledger", expected, actual, f"the privacy budget cannot be verified: {message}",
            "no query runs in this room any more; its owners may redeploy it",
        )  # fmt: skip

    def spent(self) -> dict[str, float]:
        """ε spent per input, read back from the sealed ledger and verified to the head.

        It takes the ledger's lock, not the room's: a query's check reads it outside the
        room's lock (reading back the whole chain takes time in proportion to the
        queries charged: 0.3 s for 1,000 here, and a runner may charge up to 10,000), and
        the charge reads it again under both."""
        with self._lock:
            return self._verified()

    def _verified(self) -> dict[str, float]:
        """:meth:`spent`, for a caller that holds the ledger's lock."""
        if self._head is None:
            raise self._fail("a ledger", "none", "no ledger")
        sequence_head, digest_head = self._head
        previous: str | None = None
        totals = dict.fromkeys(self.budgets, 0.0)
        for sequence in range(sequence_head + 1):
            try:
                data = b"".join(self._store.read(f"{PREFIX}/{sequence:08d}"))
                entry: Any = json.loads(data)
            except (StoreError, ValueError) as error:
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
            spent = self._verified()  # read back once: the new entry's totals follow it
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
        """Every DP owner's ε spent, left and total, from the verified ledger."""
        spent = self.spent()
        return {
            i: {"spent": spent[i], "left": max(self.budgets[i] - spent[i], 0.0), "budget": b}
            for i, b in self.budgets.items()
        }
