"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.postgres import database_url, postgres_server

__all__ = ["database_url", "postgres_server"]  # fixtures for every suite

# Recorded evidence lives beside the project, not inside it (see ../shared/vectors/README.md).
VECTORS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The recorded attestation vectors; fails in CI when missing, skips elsewhere."""
    if not VECTORS_DIR.is_dir():
        message = f"recorded vectors not found at {VECTORS_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return VECTORS_DIR
