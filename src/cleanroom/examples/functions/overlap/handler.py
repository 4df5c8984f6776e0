"""Overlap of two parties' customer lists, with small-cell suppression.

Inputs (one CSV each, any name ending in ``.csv``):

- ``inputs/input_1/``: party 1, columns ``email,region``;
- ``inputs/input_2/``: party 2, columns ``email,segment``.

Other columns are ignored. Parameter ``k`` (an integer ≥ 1, default 10): a cell of
the cross-tabulation is released only if it holds at least ``k`` customers.

Every directory under ``outputs/`` receives the same ``result.json`` and
``result.txt``: the number of customers the parties share, each party's row and
distinct-customer counts, and the region x segment table of the shared customers
with the small cells removed (format: ``examples/README.md``).

This runs on the bare system interpreter inside the clean room: standard library
only. Error messages go to stderr, which reaches the log output's recipient if the
spec names one, so they describe positions and column names, never cell values.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any

PARTIES = {"input_1": "region", "input_2": "segment"}  # input id -> its attribute column
DEFAULT_K = 10
BUCKETS = 256


def fail(message: str) -> None:
    """Stop with exit status 1 and ``message`` on stderr."""
    raise SystemExit(f"overlap: {message}")


def read_k(work_dir: Path) -> int:
    """The suppression threshold from ``parameters.json``; refuse anything but an int ≥ 1."""
    path = work_dir / "parameters.json"
    # No file means the spec has no parameters: the default applies.
    parameters = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not isinstance(parameters, dict):
        fail("parameters.json is not a JSON object")
    k = parameters.get("k", DEFAULT_K)
    # bool is a subclass of int in Python; k=true is a mistake, not k=1.
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        fail(f"parameter k must be an integer >= 1, got {k!r}")
    return k


def input_csv(work_dir: Path, input_id: str) -> Path:
    """The one ``*.csv`` file in ``inputs/<input_id>/``."""
    directory = work_dir / "inputs" / input_id
    if not directory.is_dir():
        fail(f"input {input_id} is missing (no directory inputs/{input_id})")
    found = sorted(p.name for p in directory.glob("*.csv") if p.is_file())
    if len(found) != 1:
        fail(f"input {input_id} must hold exactly one .csv file, found {found or 'none'}")
    return directory / found[0]


class Party:
    """One party's customers, as SHA-256 digests of normalised emails, in buckets.

    Memory is what limits a clean-room function (the spec's ``memory_mib`` is an
    address-space limit), and a Python dict or set costs well over 100 bytes per
    entry. So while reading, each row is reduced to 32 bytes of digest plus a
    4-byte code for its attribute, appended to flat arrays, split into buckets by
    the digest's first byte. Later one bucket at a time becomes a dict (see
    :func:`overlap`). Equal emails have equal digests and so share a bucket, which
    makes the per-bucket counts add up to the exact totals.
    """

    def __init__(self, input_id: str, attribute: str) -> None:
        self.input_id = input_id
        self.attribute = attribute
        self.rows = 0
        self.rows_without_email = 0
        self.labels: list[str] = []  # attribute code -> value
        self.digests = [bytearray() for _ in range(BUCKETS)]
        self.codes = [array("I") for _ in range(BUCKETS)]

    def read(self, path: Path) -> None:
        """Stream ``path``: only digests and attribute codes are kept, never an email."""
        codes: dict[str, int] = {}
        sha256 = hashlib.sha256
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                fail(f"{self.input_id}: {path.name} is empty (expected a header row)")
            names = [name.strip().lower() for name in header]
            for column in ("email", self.attribute):
                if names.count(column) != 1:
                    # The header is not echoed: without one, the first row is data.
                    fail(
                        f"{self.input_id}: {path.name} needs exactly one column {column!r} "
                        f"in its first line (found it {names.count(column)} times)"
                    )
            email_at, attribute_at = names.index("email"), names.index(self.attribute)
            for row in reader:
                if not row:
                    continue  # a blank line is not a row
                self.rows += 1
                if len(row) != len(names):
                    fail(
                        f"{self.input_id}: {path.name} line {reader.line_num} has "
                        f"{len(row)} fields, expected {len(names)}"
                    )
                # Normalise, then hash at once: matching compares digests only.
                email = row[email_at].strip().lower()
                if not email:
                    self.rows_without_email += 1
                    continue
                digest = sha256(email.encode("utf-8")).digest()
                label = row[attribute_at].strip()
                code = codes.get(label)
                if code is None:
                    code = codes[label] = len(self.labels)
                    self.labels.append(label)
                bucket = digest[0]
                self.digests[bucket] += digest
                self.codes[bucket].append(code)

    def bucket(self, index: int) -> dict[bytes, int]:
        """Digest -> attribute code for one bucket; the first row of a customer wins."""
        digests, codes = bytes(self.digests[index]), self.codes[index]
        first: dict[bytes, int] = {}
        for position, code in enumerate(codes):
            digest = digests[position * 32 : position * 32 + 32]
            if digest not in first:
                first[digest] = code
        # Done with this bucket's arrays: give the memory back as we go.
        self.digests[index], self.codes[index] = bytearray(), array("I")
        return first


def overlap(one: Party, two: Party) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Distinct customers per party and the (region, segment) counts of shared ones."""
    distinct = {one.input_id: 0, two.input_id: 0}
    counts: dict[tuple[int, int], int] = {}
    for index in range(BUCKETS):
        first, second = one.bucket(index), two.bucket(index)
        distinct[one.input_id] += len(first)
        distinct[two.input_id] += len(second)
        for digest, region in first.items():
            segment = second.get(digest)
            if segment is not None:
                counts[region, segment] = counts.get((region, segment), 0) + 1
    labelled = {(one.labels[r], two.labels[s]): n for (r, s), n in counts.items()}
    return distinct, labelled


def suppress(cells: dict[tuple[str, str], int], k: int) -> tuple[list[dict[str, Any]], int, int]:
    """Cells with at least ``k`` customers, sorted; and the number of cells and
    customers left out.

    A left-out cell is simply absent, like an empty one, so the result does not
    say which combinations exist with fewer than ``k`` customers.
    """
    kept = [
        {"region": region, "segment": segment, "customers": n}
        for (region, segment), n in sorted(cells.items())
        if n >= k
    ]
    small = [n for n in cells.values() if n < k]
    return kept, len(small), sum(small)


def table(result: dict[str, Any]) -> str:
    """``result`` (as written to ``result.json``) as a plain-text report for people."""
    parties, cells, suppressed = result["parties"], result["crosstab"], result["suppressed"]
    lines = [f"Customer overlap (cells with fewer than {result['k']} customers suppressed)", ""]
    for input_id, counts in parties.items():
        lines.append(
            f"{input_id}: {counts['rows']} rows, {counts['distinct_customers']} distinct "
            f"customers, {counts['rows_without_email']} rows without email"
        )
    lines += [f"shared customers: {result['overlap']}", ""]
    # Only labels of released cells appear: listing every region would tell which
    # regions have shared customers at all, however few.
    regions = sorted({cell["region"] for cell in cells})
    segments = sorted({cell["segment"] for cell in cells})
    if cells:
        grid = {(cell["region"], cell["segment"]): str(cell["customers"]) for cell in cells}
        rows = [["region \\ segment", *segments]]
        rows += [[r, *(grid.get((r, s), "-") for s in segments)] for r in regions]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append(
                "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
            )
        lines += ["", f"'-': fewer than {result['k']} customers (possibly none)."]
    else:
        lines.append(f"No cell has {result['k']} or more customers.")
    lines.append(f"Suppressed: {suppressed['customers']} customers in {suppressed['cells']} cells.")
    return "\n".join(lines) + "\n"


def run() -> None:
    """Entry point (``handler.run``): read both inputs, write the result to every output."""
    work_dir = Path(os.environ.get("WORK_DIR", "."))
    k = read_k(work_dir)
    outputs = sorted(p for p in (work_dir / "outputs").glob("*") if p.is_dir())
    if not outputs:
        fail("no output directory under outputs/")
    one, two = (Party(input_id, column) for input_id, column in PARTIES.items())
    for party in (one, two):
        party.read(input_csv(work_dir, party.input_id))
    distinct, cells = overlap(one, two)
    kept, suppressed_cells, suppressed_customers = suppress(cells, k)
    result: dict[str, Any] = {
        "k": k,
        "parties": {
            party.input_id: {
                "rows": party.rows,
                "distinct_customers": distinct[party.input_id],
                "rows_without_email": party.rows_without_email,
            }
            for party in (one, two)
        },
        "overlap": sum(cells.values()),
        "crosstab": kept,
        "suppressed": {"cells": suppressed_cells, "customers": suppressed_customers},
    }
    document = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    report = table(result)
    for directory in outputs:
        (directory / "result.json").write_text(document, encoding="utf-8")
        (directory / "result.txt").write_text(report, encoding="utf-8")


if __name__ == "__main__":
    run()
