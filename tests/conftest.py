"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.postgres import database_url, postgres_server

__all__ = ["database_url", "postgres_server"]  # fixtures for every suite

# Recorded evidence lives beside the project, not inside it (see ../shared/vectors/README.md);
# $CLEANROOM_TEST_VECTORS names another place.
VECTORS_DIR = Path(
    os.environ.get("CLEANROOM_TEST_VECTORS")
    or Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The recorded attestation vectors; a test that needs them fails when they are missing.

    Never a skip: a run without them would pass without checking the verifier against
    real evidence, and say so only in a skip count.
    """
    if not VECTORS_DIR.is_dir():
        pytest.fail(
            f"recorded vectors expected at {VECTORS_DIR}, found nothing there"
            " (they sit beside the checkout: see ../shared/vectors/README.md)"
        )
    return VECTORS_DIR
