"""A real deployment on loopback for the reliability suites (like tests/e2e), and the
helpers they share: deploy a clean room for two parties, feed it, run it, and look
everywhere outside the Workers for the parties' plaintext."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cleanroom.insecure.localstack import LocalStack
from tests.e2e.conftest import User, confinement_available, make_user


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    with LocalStack(tmp_path_factory.mktemp("reliability")) as running:
        running.add_project("acme")
        running.add_project("globex")
        yield running


@pytest.fixture(scope="module")
def alice(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(stack, tmp_path_factory.mktemp("alice"), "alice", "acme")


@pytest.fixture(scope="module")
def bob(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(stack, tmp_path_factory.mktemp("bob"), "bob", "globex")
