"""Deterministic synthetic inputs for the example functions, the demo and benchmarks.

Everything here is fake: emails are built from a customer number and a few word
lists on the reserved ``example.*`` domains. The generators stream their rows to
disk in chunks, so ten million rows cost no more memory than a thousand, and they
compute the answer the function should find while they write, so a test or a
benchmark can check a run without reading the files back.

The same ``seed`` gives the same bytes on every machine (``random.Random`` is
specified to be reproducible for a given seed and call sequence).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

REGIONS = ("north", "south", "east", "west", "islands")
SEGMENTS = ("retail", "premium", "business", "student")
# Skewed on purpose: some region x segment cells come out small, so suppression
# has something to do at the default k=10 on demo-sized data.
_REGION_WEIGHTS = (40, 30, 15, 13, 2)
_SEGMENT_WEIGHTS = (50, 25, 20, 5)

_FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jonas")
_LAST = ("smith", "muller", "rossi", "dubois", "novak", "silva", "jensen", "kowalski")
_DOMAINS = ("example.com", "example.org", "example.net")

_CHUNK_ROWS = 10_000
_DUPLICATE_RATE = 0.01  # party B rows that repeat the previous customer
_VARIANT_RATE = 0.05  # shared customers whose email party B spells differently
_CITIES = ("lisbon", "lyon", "turin", "gdansk", "aarhus")


def _table(values: tuple[str, ...], weights: tuple[int, ...]) -> tuple[str, ...]:
    # One entry per unit of weight: a weighted draw is then a single index.
    return tuple(
        value for value, weight in zip(values, weights, strict=True) for _ in range(weight)
    )


_REGION_TABLE = _table(REGIONS, _REGION_WEIGHTS)
_SEGMENT_TABLE = _table(SEGMENTS, _SEGMENT_WEIGHTS)


def email(customer: int) -> str:
    """The canonical (normalised) email of customer number ``customer``.

    The trailing number makes it unique: the word lists hold no digits.
    """
    first = _FIRST[customer % len(_FIRST)]
    last = _LAST[(customer // len(_FIRST)) % len(_LAST)]
    return f"{first}.{last}{customer}@{_DOMAINS[customer % len(_DOMAINS)]}"


def _variant(address: str, rng: random.Random) -> str:
    """The same address as a person might type it: other case, stray spaces."""
    choice = rng.randrange(3)
    if choice == 0:
        return address.upper()
    if choice == 1:
        return f"  {address.title()}"
    return f"{address.capitalize()} "


@dataclass(frozen=True)
class OverlapTruth:
    """What the overlap function must report for inputs from :func:`write_overlap_inputs`."""

    rows_a: int
    rows_b: int
    distinct_a: int
    distinct_b: int
    overlap: int  # distinct customers in both files
    crosstab: dict[tuple[str, str], int] = field(default_factory=dict)  # (region, segment)

    def suppressed(self, k: int) -> tuple[dict[tuple[str, str], int], int]:
        """The cells with at least ``k`` customers, and the customers in the others."""
        kept = {cell: n for cell, n in self.crosstab.items() if n >= k}
        return kept, sum(n for n in self.crosstab.values() if n < k)


@dataclass(frozen=True)
class JoinTruth:
    """What the join function must write for inputs from :func:`write_join_inputs`."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]  # in output order: party A's order, then party B's
    rows_a: int
    rows_b: int
    matched_keys: int


@contextmanager
def _csv_writer(path: Path, header: str) -> Iterator[TextIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(header + "\n")
        yield handle


def _check(rows: int, overlap: float) -> None:
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be between 0 and 1, got {overlap}")


def write_overlap_inputs(
    dir_a: Path, dir_b: Path, rows: int, *, overlap: float = 0.3, seed: int = 0
) -> OverlapTruth:
    """Write ``dir_a/customers.csv`` (``email,region``) and ``dir_b/customers.csv``
    (``email,segment``), ``rows`` data rows each, and return the expected result.

    Party A holds ``rows`` distinct customers. Each row of party B is, in order of
    the draws: with probability 1 % a repeat of B's previous customer (same
    segment, possibly spelled differently); else with probability ``overlap`` one
    of A's customers (about 5 % of these with other case or stray whitespace, to
    show the function's normalisation); else a customer A does not have. So about
    ``overlap * rows`` customers are shared; the exact number is in the result.
    """
    _check(rows, overlap)
    rng = random.Random(seed)  # noqa: S311 - reproducible fake data, not secrets
    draw = rng.random
    regions, segments = _REGION_TABLE, _SEGMENT_TABLE
    crosstab: dict[tuple[str, str], int] = {}
    shared = distinct_b = 0
    previous: tuple[str, str] | None = None  # B's previous customer: (email, segment)
    with (
        _csv_writer(dir_a / "customers.csv", "email,region") as file_a,
        _csv_writer(dir_b / "customers.csv", "email,segment") as file_b,
    ):
        lines_a: list[str] = []
        lines_b: list[str] = []
        for row in range(rows):
            address = email(row)
            region = regions[int(draw() * len(regions))]
            lines_a.append(f"{address},{region}\n")
            if previous is not None and draw() < _DUPLICATE_RATE:
                lines_b.append(f"{_variant(previous[0], rng)},{previous[1]}\n")
            else:
                segment = segments[int(draw() * len(segments))]
                distinct_b += 1
                if draw() < overlap:
                    shared += 1
                    crosstab[region, segment] = crosstab.get((region, segment), 0) + 1
                    written = _variant(address, rng) if draw() < _VARIANT_RATE else address
                else:
                    # Numbers from ``rows`` up are customers party A never sees.
                    address = written = email(rows + row)
                previous = (address, segment)
                lines_b.append(f"{written},{segment}\n")
            if len(lines_a) >= _CHUNK_ROWS:
                file_a.writelines(lines_a)
                file_b.writelines(lines_b)
                lines_a.clear()
                lines_b.clear()
        file_a.writelines(lines_a)
        file_b.writelines(lines_b)
    return OverlapTruth(
        rows_a=rows,
        rows_b=rows,
        distinct_a=rows,
        distinct_b=distinct_b,
        overlap=shared,
        crosstab=crosstab,
    )


def write_join_inputs(
    dir_a: Path, dir_b: Path, rows: int, *, overlap: float = 0.5, seed: int = 0
) -> JoinTruth:
    """Write ``dir_a/accounts.csv`` (``id,name,city``) and ``dir_b/scores.csv``
    (``id,city,score``), and return the joined rows the join function must write.

    Party A has ``rows`` rows with distinct ids. Party B has one row for each of
    about ``overlap * rows`` of A's ids, a second row for every fifth of those (so
    one key can match twice), and ``rows // 2`` rows with ids A does not have. Both
    files have a ``city`` column, so the join must prefix it. Meant for small
    demos: the expected rows are kept in memory.
    """
    _check(rows, overlap)
    rng = random.Random(seed)  # noqa: S311 - reproducible fake data, not secrets
    lines_b: list[str] = []
    shared = 0
    for row in range(rows):
        if rng.random() < overlap:
            shared += 1
            repeats = 2 if shared % 5 == 1 else 1
            lines_b.extend(
                f"c{row:06d},{rng.choice(_CITIES)},{rng.randrange(300, 851)}\n"
                for _ in range(repeats)
            )
    lines_b.extend(
        f"x{row:06d},{rng.choice(_CITIES)},{rng.randrange(300, 851)}\n" for row in range(rows // 2)
    )
    rng.shuffle(lines_b)  # the join must not rely on the two files sharing an order
    # B's rows per key in B's file order: the order the join emits them in.
    matches: dict[str, list[tuple[str, ...]]] = {}
    for line in lines_b:
        key, *rest = line.rstrip("\n").split(",")
        matches.setdefault(key, []).append(tuple(rest))
    joined: list[tuple[str, ...]] = []
    matched_keys = 0
    with _csv_writer(dir_a / "accounts.csv", "id,name,city") as file_a:
        for row in range(rows):
            key = f"c{row:06d}"
            name = f"{_FIRST[row % len(_FIRST)]} {_LAST[row % len(_LAST)]}".title()
            city = rng.choice(_CITIES)
            file_a.write(f"{key},{name},{city}\n")
            matched_keys += key in matches
            joined.extend((key, name, city, *match) for match in matches.get(key, []))
    with _csv_writer(dir_b / "scores.csv", "id,city,score") as file_b:
        file_b.writelines(lines_b)
    return JoinTruth(
        header=("id", "name", "input_1.city", "input_2.city", "score"),
        rows=tuple(joined),
        rows_a=rows,
        rows_b=len(lines_b),
        matched_keys=matched_keys,
    )
