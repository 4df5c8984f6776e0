"""Differential privacy for a SQL room's aggregates, calibrated and sampled by OpenDP.

The engine returns, per group, aggregates over contribution-bounded rows (each
owner's identity keeps at most ``max_contributions`` rows after the joins and
filters, :func:`cleanroom.sql.rules.plan_query`). Here the Worker releases them:

- the query's ε is split evenly over its measurements: the row count of each group
  (which also decides which groups are released) and one per other aggregate (an
  average is a noisy sum over a noisy count: two);
- groups are released by OpenDP's Laplace threshold mechanism (approximate DP: a
  group appears only if its noisy count reaches a threshold chosen so that δ stays
  under every owner's δ; no owner's minimum is ever lowered);
- the other aggregates of the released groups get Laplace noise (OpenDP's
  ``make_laplace`` over the vector of groups);
- each owner's sensitivity follows from its contribution bound (and, for sums, its
  clamping bounds); the noise scale is the largest any owner needs, and OpenDP's
  privacy map must confirm, for every owner, that each measurement costs at most
  its share of ε (``dp-calibration`` otherwise).

No noise is drawn here by hand: every sample comes from OpenDP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import opendp.prelude as dp

from cleanroom.errors import CheckFailed
from cleanroom.protocol.sql import HIDDEN_PREFIX
from cleanroom.sql.rules import DpPlan

dp.enable_features("contrib")

_TOLERANCE = 1e-9


class PrivacyError(CheckFailed):
    """OpenDP could not confirm that a release stays within its ε (or δ)."""


@dataclass(frozen=True)
class Release:
    columns: tuple[str, ...]
    rows: list[list[Any]]
    candidates: int  # groups before the threshold (not released: it is not private)
    scales: dict[str, float]  # measurement -> Laplace scale
    threshold: float | None


def _confirm(measurement: Any, d_in: Any, epsilon: float, delta: float | None, what: str) -> None:
    cost = measurement.map(d_in)
    spent, spent_delta = (cost, 0.0) if delta is None else cost
    if spent > epsilon * (1 + _TOLERANCE) or (delta is not None and spent_delta > delta):
        raise PrivacyError(
            "dp-calibration", f"ε <= {epsilon:g}" + ("" if delta is None else f", δ <= {delta:g}"),
            cost, f"OpenDP's privacy map refuses the {what} release",
        )  # fmt: skip


def _threshold_measurement(scale: float, threshold: float) -> Any:
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=float, nan=False))
    metric = dp.l01inf_distance(dp.absolute_distance(T=float))
    return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)


def _vector_measurement(scale: float) -> Any:
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    return dp.m.make_laplace(domain, dp.l1_distance(T=float), scale=scale)


def _smallest_threshold(
    scale: float, d_ins: Sequence[tuple[int, float, float]], delta: float
) -> float:
    """The smallest threshold whose δ is at most ``delta`` for every owner (OpenDP's map)."""

    def good(threshold: float) -> bool:
        measurement = _threshold_measurement(scale, threshold)
        return all(measurement.map(d_in)[1] <= delta for d_in in d_ins)

    low, high = 0.0, scale * 8.0
    while not good(high):
        high *= 2
        if high > 1e12:
            raise PrivacyError("dp-calibration", f"δ <= {delta:g}", "none", "no threshold fits")
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if good(middle) else (middle, high)
    return high


def calibrated(plan: DpPlan) -> Releaser:
    """The noise of ``plan``, calibrated and confirmed, or its refusal (``dp-calibration``)
    whatever failed: an ε OpenDP cannot calibrate (5e-324: a share of 0, a scale of
    infinity, ``ZeroDivisionError``) or no threshold fits (a GROUP BY at ε 1e-12). The
    Worker asks it when it checks the query, before any ε is charged or the engine reads
    any data: it asked it only when releasing, so such a query was charged, ran on the
    data and failed (h29). It depends on the plan alone, never on the data."""
    try:
        return Releaser(plan)
    except PrivacyError:
        raise
    except (ArithmeticError, ValueError, dp.OpenDPException) as error:
        raise PrivacyError(
            "dp-calibration", "an ε whose noise OpenDP can calibrate", plan.epsilon,
            f"the noise of ε={plan.epsilon:g} cannot be calibrated ({type(error).__name__})",
        ) from None  # fmt: skip


class Releaser:
    """The noise of one DP query, calibrated and confirmed by OpenDP's privacy maps before
    any group is read, then applied to the engine's groups chunk by chunk (:meth:`chunk`).

    Releasing disjoint groups chunk by chunk is the same mechanism as releasing them at
    once: OpenDP's Laplace threshold mechanism adds independent noise to each key of its
    map and keeps the keys whose noisy count reaches the threshold, and the Laplace
    mechanism on a vector adds independent noise to each coordinate; the threshold and
    the scales are fixed here, before any data, and the distances the privacy maps are
    confirmed for (``max_contributions``: groups touched, l1 and l∞ of the counts, times
    the clamping bound for sums) bound a person's effect on all the query's groups
    together, whichever chunk each falls in."""

    def __init__(self, plan: DpPlan) -> None:
        self.plan = plan
        measurements = 1 + sum(
            2 if a.kind == "avg" else 1 for a in plan.aggregates if a.kind != "count_rows"
        )
        self.share = share = plan.epsilon / measurements
        contributions = [option.max_contributions for option in plan.owners.values()]
        self.columns: tuple[str, ...] = (*plan.groups, *(a.output for a in plan.aggregates))
        self.candidates = 0
        count_scale = max(contributions) / share
        self.scales: dict[str, float] = {"count": count_scale}
        self.threshold: float | None = None
        self.selection: Any = None
        self.count_vector: Any = None
        if plan.groups:
            d_ins = [(c, float(c), float(c)) for c in contributions]
            self.threshold = max(
                _smallest_threshold(count_scale, d_ins, plan.delta), float(plan.minimum)
            )
            self.selection = _threshold_measurement(count_scale, self.threshold)
            for d_in in d_ins:
                _confirm(self.selection, d_in, share, plan.delta, "group counts")
        else:
            self.count_vector = _vector_measurement(count_scale)
            for c in contributions:
                _confirm(self.count_vector, float(c), share, None, "row count")
        # Every other measurement: (its measurement, the hidden column it reads), confirmed
        # now for every owner, whether or not any group is released.
        self.vectors: dict[str, Any] = {}

        def measure(what: str, sensitivity: list[float]) -> None:
            scale = max(sensitivity) / share
            self.scales[what] = scale
            measurement = _vector_measurement(scale)
            for d_in in sensitivity:
                _confirm(measurement, d_in, share, None, what)
            self.vectors[what] = measurement

        for aggregate in plan.aggregates:
            if aggregate.kind == "count":
                measure(aggregate.output, [float(c) for c in contributions])
            elif aggregate.kind in ("sum", "avg"):
                measure(f"{aggregate.output} (sum)", [c * aggregate.bound for c in contributions])
                if aggregate.kind == "avg":
                    measure(f"{aggregate.output} (count)", [float(c) for c in contributions])

    def chunk(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """The released rows of these engine groups (each group's line once, no group in
        another chunk), in their order. For a query without GROUP BY: all its rows (the
        engine writes one), once."""
        plan = self.plan
        groups = len(plan.groups)
        keyed: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = json.dumps([row[f"{HIDDEN_PREFIX}_g{i}"] for i in range(groups)], default=str)
            # Two engine groups under one released key (the engine adds up the groups it
            # cuts alike, so this should not happen) are added up, never one replaced by
            # the other: a sum of groups keeps the sensitivity the noise is calibrated
            # for, a replacement does not.
            merged = keyed.setdefault(key, {})
            for column, value in row.items():
                if column.startswith(f"{HIDDEN_PREFIX}_g") or value is None:
                    merged.setdefault(column, value)
                else:
                    merged[column] = (merged.get(column) or 0) + value
        self.candidates += len(keyed)
        if groups:
            exact_counts = {key: float(row[f"{HIDDEN_PREFIX}_n"]) for key, row in keyed.items()}
            noisy_counts: dict[str, float] = dict(self.selection(exact_counts)) if keyed else {}
            selected = [key for key in keyed if key in noisy_counts]  # the engine's order
        else:
            selected = ["[]"]
            total = float(keyed["[]"][f"{HIDDEN_PREFIX}_n"]) if "[]" in keyed else 0.0
            noisy_counts = {"[]": self.count_vector([total])[0]}

        def noisy(values: list[float], what: str) -> list[float]:
            return list(self.vectors[what](values)) if values else []

        def exact(key: str, column: str) -> float:
            row = keyed.get(key)
            value = None if row is None else row.get(column)
            return 0.0 if value is None else float(value)

        columns: list[list[Any]] = []
        for aggregate in plan.aggregates:
            if aggregate.kind == "count_rows":
                columns.append([max(0, round(noisy_counts[key])) for key in selected])
                continue
            assert aggregate.value is not None
            if aggregate.kind == "count":
                values = [exact(key, aggregate.value) for key in selected]
                result = noisy(values, aggregate.output)
                columns.append([max(0, round(value)) for value in result])
                continue
            sums = noisy(
                [exact(key, f"{aggregate.value}_sum") for key in selected],
                f"{aggregate.output} (sum)",
            )
            if aggregate.kind == "sum":
                columns.append(sums)
                continue
            divisors = noisy(
                [exact(key, f"{aggregate.value}_count") for key in selected],
                f"{aggregate.output} (count)",
            )
            columns.append(
                [
                    min(aggregate.high, max(aggregate.low, total / max(count, 1.0)))
                    for total, count in zip(sums, divisors, strict=True)
                ]
            )
        released: list[list[Any]] = []
        for index, key in enumerate(selected):
            group_values = json.loads(key)
            released.append([*group_values, *(column[index] for column in columns)])
        for line in released:
            for value in line:
                if isinstance(value, float) and not math.isfinite(value):
                    raise PrivacyError(
                        "dp-calibration", "finite values", value, "a non-finite release"
                    )
        return released


def release(plan: DpPlan, rows: Sequence[Mapping[str, Any]]) -> Release:
    """The noisy rows of a DP query, from the engine's exact, contribution-bounded ones,
    all at once (the Worker uses :class:`Releaser`, chunk by chunk)."""
    releaser = Releaser(plan)
    released = releaser.chunk(rows)
    return Release(
        columns=releaser.columns,
        rows=released,
        candidates=releaser.candidates,
        scales=releaser.scales,
        threshold=releaser.threshold,
    )
