"""The suite hashes client secrets cheaply (tests/conftest.py); the manager does not."""

from __future__ import annotations

import dataclasses

from argon2 import PasswordHasher, extract_parameters, profiles

from cleanroom.manager import credentials
from tests.conftest import TEST_ARGON2


def test_the_manager_hashes_with_rfc_9106_low_memory_parameters(
    production_secret_hashing: PasswordHasher,
) -> None:
    stored = credentials.hash_secret("a secret")
    assert extract_parameters(stored) == profiles.RFC_9106_LOW_MEMORY
    assert credentials._hasher.verify(stored, "a secret")


def test_the_suites_hasher_differs_from_the_managers_only_in_cost() -> None:
    suites = extract_parameters(credentials.hash_secret("a secret"))
    assert suites == TEST_ARGON2
    production = profiles.RFC_9106_LOW_MEMORY
    cost = dataclasses.replace(suites, time_cost=3, memory_cost=65536, parallelism=4)
    assert cost == production
