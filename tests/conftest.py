"""Shared fixtures for the whole test suite."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles
from sqlalchemy import event
from sqlalchemy.engine import Engine

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


# The manager stores client secrets as argon2id hashes with RFC 9106's "low memory"
# parameters: 64 MiB and three passes, about half a second per hash or check on a busy
# 2-core machine, and a test that logs three people in spends six of them. The managers
# the tests run in this process hash with argon2id at its lowest cost instead: the same
# algorithm, salt and hash lengths, and the same code paths, so every check of a secret
# is still made. test_secret_hashing.py holds the production parameters to their value;
# managers started as processes of their own hash as in production.
TEST_ARGON2 = dataclasses.replace(
    profiles.RFC_9106_LOW_MEMORY, time_cost=1, memory_cost=8, parallelism=1
)


@pytest.fixture(scope="session", autouse=True)
def cheap_secret_hashing() -> Iterator[PasswordHasher]:
    """The production hasher, while the session's in-process managers use TEST_ARGON2."""
    from cleanroom.manager import credentials

    production = credentials._hasher
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(credentials, "_hasher", PasswordHasher.from_parameters(TEST_ARGON2))
        yield production


@pytest.fixture
def production_secret_hashing(
    cheap_secret_hashing: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> PasswordHasher:
    """The manager's own argon2 parameters for this one test."""
    from cleanroom.manager import credentials

    monkeypatch.setattr(credentials, "_hasher", cheap_secret_hashing)
    return cheap_secret_hashing


def _sqlite_without_fsync(connection: Any, _record: Any) -> None:
    if isinstance(connection, sqlite3.Connection):
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


@pytest.fixture(scope="session", autouse=True)
def sqlite_without_fsync() -> Iterator[None]:
    """SQLite databases opened in this process do not wait for the disk to sync.

    Creating a manager's schema commits some thirty times, and each commit waits for
    an fsync: over half a second a manager on a disk that other suites keep busy. The
    same as the session's PostgreSQL (``fsync=off``, tests/postgres.py): the tests
    never lose power, and a database a test reopens is read back from the same page
    cache. Managers started as processes of their own sync as in production.
    """
    event.listen(Engine, "connect", _sqlite_without_fsync)
    yield
    event.remove(Engine, "connect", _sqlite_without_fsync)
