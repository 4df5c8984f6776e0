"""Benchmark function: copy every file of input_1 to output_1, byte for byte.

Standard library only; used by the ingest/egress figures so that an output of
exactly the uploaded size exists to download.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def run() -> None:
    work_dir = Path(os.environ.get("WORK_DIR", "."))
    source = work_dir / "inputs" / "input_1"
    target = work_dir / "outputs" / "output_1"
    for path in sorted(source.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as reader, destination.open("wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
