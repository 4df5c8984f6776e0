"""Inner join of two parties' CSV files on one key column.

This releases row-level data: every joined row goes to the recipient of
``output_1``. Use it only when the spec's parties agreed to exactly that (see
``README.md`` beside this file).

Inputs: ``inputs/input_1/`` and ``inputs/input_2/``, one ``*.csv`` each, both with
the key column (parameter ``key``, default ``id``). Outputs:

- ``outputs/output_1/joined.csv``: one row per pair of rows with equal keys, in
  input_1's row order and, for one key, input_2's row order. Columns: the key,
  then input_1's other columns, then input_2's; a name that both files use is
  prefixed ``input_1.`` / ``input_2.``;
- ``summary.json`` (counts only) in every directory under ``outputs/``.

Keys match exactly as written (no trimming or case folding); rows with an empty
key match nothing. input_2 is held in memory, input_1 is streamed: put the larger
file in input_1.

Standard library only. Error messages go to stderr, which reaches the log output's
recipient if the spec names one, so they name positions and columns, never values.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

DEFAULT_KEY = "id"
INPUTS = ("input_1", "input_2")


def fail(message: str) -> None:
    """Stop with exit status 1 and ``message`` on stderr."""
    raise SystemExit(f"join: {message}")


def read_key(work_dir: Path) -> str:
    """The key column's name from ``parameters.json``: a non-empty string."""
    path = work_dir / "parameters.json"
    # No file means the spec has no parameters: the default applies.
    parameters = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not isinstance(parameters, dict):
        fail("parameters.json is not a JSON object")
    key = parameters.get("key", DEFAULT_KEY)
    if not isinstance(key, str) or not key:
        fail(f"parameter key must be a non-empty column name, got {key!r}")
    return key


def input_csv(work_dir: Path, input_id: str) -> Path:
    """The one ``*.csv`` file in ``inputs/<input_id>/``."""
    directory = work_dir / "inputs" / input_id
    if not directory.is_dir():
        fail(f"input {input_id} is missing (no directory inputs/{input_id})")
    found = sorted(p.name for p in directory.glob("*.csv") if p.is_file())
    if len(found) != 1:
        fail(f"input {input_id} must hold exactly one .csv file, found {found or 'none'}")
    return directory / found[0]


class Table:
    """One input file: its header, where the key is, and its rows, streamed."""

    def __init__(self, input_id: str, path: Path, key: str) -> None:
        self.input_id, self.path = input_id, path
        self.rows = 0
        self.rows_without_key = 0
        self._handle = path.open(newline="", encoding="utf-8-sig")
        self._reader = csv.reader(self._handle)
        header = next(self._reader, None)
        if header is None:
            fail(f"{input_id}: {path.name} is empty (expected a header row)")
        self.header = [name.strip() for name in header]
        if len(set(self.header)) != len(self.header):
            fail(f"{input_id}: {path.name} repeats a column name in its first line")
        if key not in self.header:
            # The header is not echoed: without one, the first row is data.
            fail(f"{input_id}: {path.name} has no key column {key!r} in its first line")
        self.key_at = self.header.index(key)
        self.others = [name for name in self.header if name != key]

    def __iter__(self) -> Iterator[tuple[str, list[str]]]:
        """``(key, other fields)`` for every row with a key; then the file is closed."""
        with self._handle:
            for row in self._reader:
                if not row:
                    continue  # a blank line is not a row
                self.rows += 1
                if len(row) != len(self.header):
                    fail(
                        f"{self.input_id}: {self.path.name} line {self._reader.line_num} has "
                        f"{len(row)} fields, expected {len(self.header)}"
                    )
                key = row.pop(self.key_at)
                if key == "":
                    self.rows_without_key += 1
                    continue
                yield key, row


def merged_header(key: str, left: Table, right: Table) -> list[str]:
    """The key, then each side's other columns; a name on both sides gets its input's prefix."""
    both = set(left.others) & set(right.others)

    def named(table: Table) -> list[str]:
        return [f"{table.input_id}.{n}" if n in both else n for n in table.others]

    header = [key, *named(left), *named(right)]
    # A prefixed name could still collide with a column literally called "input_1.x".
    if len(set(header)) != len(header):
        fail("the joined header would repeat a column name (input_1.x or input_2.x?)")
    return header


def run() -> None:
    """Entry point (``handler.run``): join input_1 with input_2 into output_1."""
    work_dir = Path(os.environ.get("WORK_DIR", "."))
    key = read_key(work_dir)
    outputs = work_dir / "outputs"
    if not (outputs / "output_1").is_dir():
        fail("no output directory outputs/output_1 for the joined rows")
    left, right = (Table(i, input_csv(work_dir, i), key) for i in INPUTS)
    header = merged_header(key, left, right)

    by_key: dict[str, list[list[str]]] = {}
    for value, fields in right:
        by_key.setdefault(value, []).append(fields)

    joined_rows = 0
    matched: set[str] = set()
    with (outputs / "output_1" / "joined.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for value, fields in left:
            for other in by_key.get(value, ()):
                writer.writerow([value, *fields, *other])
                joined_rows += 1
                matched.add(value)

    summary = {
        "key": key,
        "inputs": {
            table.input_id: {"rows": table.rows, "rows_without_key": table.rows_without_key}
            for table in (left, right)
        },
        "matched_keys": len(matched),
        "joined_rows": joined_rows,
        "columns": header,
    }
    document = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    for directory in sorted(p for p in outputs.glob("*") if p.is_dir()):
        (directory / "summary.json").write_text(document, encoding="utf-8")


if __name__ == "__main__":
    run()
