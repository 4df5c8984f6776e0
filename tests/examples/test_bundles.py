"""Each example directory is a valid function bundle with a stable ID."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cleanroom.protocol.bundle import pack, unpack
from tests.examples.harness import EXAMPLES

FUNCTIONS = ["overlap", "join"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_packs_deterministically(tmp_path: Path, name: str) -> None:
    bundle = pack(EXAMPLES / name)
    assert pack(EXAMPLES / name) == bundle
    # The bytes depend on names and contents only, not on where the tree lives.
    copy = shutil.copytree(EXAMPLES / name, tmp_path / "copy")
    assert pack(copy) == bundle
    files = unpack(bundle, tmp_path / "unpacked")
    assert "handler.py" in files
    assert pack(tmp_path / "unpacked") == bundle


def test_examples_are_distinct_functions() -> None:
    assert pack(EXAMPLES / "overlap") != pack(EXAMPLES / "join")
