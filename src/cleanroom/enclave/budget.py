"""The privacy budget of a SQL room: a hash-chained ledger in the Worker's sealed store.

Each query under differential privacy is charged *before* it runs, as a new sealed
entry ``_budget/<sequence>``: ``{"type": "cleanroom/budget-ledger/v2", "work_id",
"sequence", "previous" (hex SHA-256 of the entry before), "run", "charges" {input:
ε}, "spent" {input: total ε}}``, every ε a decimal text, exact: each is a query's ε as
written (:func:`exact_epsilon`), and the totals their exact sums (v1 held floats, and
a float total did not move for an ε below half its ulp). The Worker keeps the last
entry's sequence, digest and totals in memory, and a charge is decided by those
totals, compared exactly with the budget: nothing on disk can give a budget back.
Every check and charge reads the last entry back and refuses (``budget-ledger``)
unless it is the one this Worker wrote; every budget statement reads the whole chain
back and refuses unless it is intact, complete and ends there.
A ledger found changed, rolled back or removed on disk stops every query from then on.
The sealed store's key lives only in the Worker's memory: a restarted Worker cannot
read the ledger, nor the data it protects (docs/privacy.md, "The budget").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from fractions import Fraction
from typing import Any

from cleanroom.enclave.errors import RunError, StoreError
from cleanroom.enclave.store import SealedStore
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import WorkSpec
from cleanroom.sql.rules import exact_epsilon

LEDGER_TYPE = "cleanroom/budget-ledger/v2"
PREFIX = "_budget"


def decimal_text(value: Fraction) -> str:
    """An exact ε as the decimal text the ledger stores: every ε is a decimal as written
    (:func:`exact_epsilon`), so every sum of them is one too (its denominator is
    2^a·5^b), and ``Fraction`` reads the text back as the same number."""
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator != 1:
        raise ValueError(f"{value} is no decimal")
    places = max(twos, fives)
    digits = str(abs(value.numerator) * 10**places // value.denominator)
    digits = digits.rjust(places + 1, "0")
    whole, decimals = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    return ("-" if value < 0 else "") + whole + ("." + decimals if decimals else "")


class BudgetLedger:
    def __init__(self, store: SealedStore, spec: WorkSpec) -> None:
        assert spec.sql is not None
        self._store, self._spec = store, spec
        self.budgets = {
            input_id: rule.differential_privacy.budget
            for input_id, rule in sorted(spec.sql.rules.items())
            if rule.differential_privacy is not None
        }
        self._limits = {i: exact_epsilon(budget) for i, budget in self.budgets.items()}
        self._lock = threading.Lock()
        self._head: tuple[int, str] | None = None
        self._totals: dict[str, Fraction] = {}
        self._broken: RunError | None = None  # once found, every later check refuses
        self._append(run=0, charges={}, spent=dict.fromkeys(self.budgets, Fraction(0)))

    def _append(
        self, *, run: int, charges: dict[str, Fraction], spent: dict[str, Fraction]
    ) -> dict[str, Fraction]:
        """A new entry after the head, whose totals ``spent`` (verified by the caller,
        under the ledger's lock) are."""
        totals = {i: spent[i] + charges.get(i, Fraction(0)) for i in self.budgets}
        sequence = 0 if self._head is None else self._head[0] + 1
        entry = {
            "type": LEDGER_TYPE,
            "work_id": self._spec.work_id,
            "sequence": sequence,
            "previous": None if self._head is None else self._head[1],
            "run": run,
            "charges": {i: decimal_text(charge) for i, charge in charges.items()},
            "spent": {i: decimal_text(total) for i, total in totals.items()},
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

    def spent(self) -> dict[str, Fraction]:
        """ε spent per input, exactly: the totals this Worker wrote last, once their entry is read
        back from the sealed store and found to be the one it wrote.

        Time does not grow with the queries charged: the whole chain is read back by
        :meth:`status` only, outside this lock (it took 0.3 s per 1,000 entries, and a
        runner may charge 10,000; every check and charge read it, the charge under the
        room's lock, so every other session of the room waited)."""
        with self._lock:
            return self._checked_head()

    def _checked_head(self) -> dict[str, Fraction]:
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

    def _walked(self, head: tuple[int, str]) -> dict[str, Fraction]:
        """The totals of the whole chain read back from the sealed store, verified entry
        by entry up to ``head``. Entries are never rewritten, so no lock is held: a
        charge meanwhile appends after ``head``."""
        sequence_head, digest_head = head
        previous: str | None = None
        totals = dict.fromkeys(self.budgets, Fraction(0))
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
                amount = _decimal(charge)
                if input_id not in totals or amount is None or amount <= 0:
                    raise self._fail("a charge of an owner's budget", charge, "bad charge")
                totals[input_id] += amount
            # Exactly: the totals written are the charges' sums, to the last digit.
            if entry["spent"] != {i: decimal_text(total) for i, total in totals.items()}:
                raise self._fail(
                    {i: decimal_text(t) for i, t in totals.items()}, entry["spent"],
                    "totals do not add up",
                )  # fmt: skip
            previous = hashlib.sha256(data).hexdigest()
        if previous is None or not hmac.compare_digest(previous, digest_head):
            raise self._fail(digest_head, previous, "the ledger is not the one this Worker wrote")
        return totals

    def charge(self, run: int, epsilon: float, inputs: list[str]) -> dict[str, Fraction]:
        """Spend ``epsilon`` (as written: :func:`exact_epsilon`) of each of ``inputs``'
        budgets, or refuse; the new totals, exact. A charge fits if the exact total
        stays within the exact budget: no slack, and no ε too small to count (with
        floats, 1e-16 left a total of 1.0 at 1.0, and a spent budget took such queries
        for ever)."""
        amount = exact_epsilon(epsilon)
        with self._lock:
            spent = self._checked_head()
            if amount <= 0:
                raise RunError(
                    "differential_privacy.epsilon", "ε > 0", epsilon, "ε is a positive number"
                )
            for input_id in inputs:
                if spent[input_id] + amount > self._limits[input_id]:
                    left = max(self._limits[input_id] - spent[input_id], Fraction(0))
                    raise RunError(
                        "differential_privacy.budget", f"<= {decimal_text(left)} left", epsilon,
                        f"{input_id}'s privacy budget of ε={self.budgets[input_id]:g} is spent",
                    )  # fmt: skip
            return self._append(run=run, charges=dict.fromkeys(sorted(inputs), amount), spent=spent)

    def left(self, input_id: str, totals: dict[str, Fraction]) -> float:
        """The ε left of ``input_id``'s budget after ``totals`` (rounded only to be shown)."""
        return float(max(self._limits[input_id] - totals[input_id], Fraction(0)))

    def status(self) -> dict[str, dict[str, float]]:
        """Every DP owner's ε spent, left and total, from the whole chain read back and
        verified (outside the ledger's lock) to the head it had when asked."""
        with self._lock:
            self._checked_head()
            head = self._head
        assert head is not None
        spent = self._walked(head)
        return {
            i: {"spent": float(spent[i]), "left": self.left(i, spent), "budget": b}
            for i, b in self.budgets.items()
        }


def _decimal(text: object) -> Fraction | None:
    """A stored ε read back: the decimal text :func:`decimal_text` writes, or None."""
    if not isinstance(text, str):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if decimal_text(value) == text else None
