"""A deployment whose compute server is reachable only through a tampering proxy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.insecure.localstack import LocalStack, free_port
from tests.adversarial.proxy import TamperingProxy
from tests.e2e.conftest import User, confinement_available, make_user


@contextlib.contextmanager
def hostile_stack_in(directory: Path) -> Iterator[tuple[LocalStack, TamperingProxy]]:
    """A stack in ``directory`` whose compute server the manager (and every client)
    reaches only through a tampering proxy, with the projects acme and globex."""
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    proxy_port = free_port()
    with LocalStack(directory, advertise_url=f"http://127.0.0.1:{proxy_port}") as stack:
        proxy = TamperingProxy(stack.compute_url, port=proxy_port)
        proxy.start()
        stack.add_project("acme")
        stack.add_project("globex")
        try:
            yield stack, proxy
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
def hostile_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalStack, TamperingProxy]]:
    with hostile_stack_in(tmp_path_factory.mktemp("hostile")) as stack:
        yield stack


@pytest.fixture
def proxy(hostile_stack: tuple[LocalStack, TamperingProxy]) -> Iterator[TamperingProxy]:
    """The proxy, honest at the start of each test and reset after it."""
    hostile_stack[1].reset()
    yield hostile_stack[1]
    hostile_stack[1].reset()


@pytest.fixture(scope="module")
def alice(
    hostile_stack: tuple[LocalStack, TamperingProxy], tmp_path_factory: pytest.TempPathFactory
) -> User:
    return make_user(hostile_stack[0], tmp_path_factory.mktemp("alice"), "alice", "acme")


@pytest.fixture(scope="module")
def bob(
    hostile_stack: tuple[LocalStack, TamperingProxy], tmp_path_factory: pytest.TempPathFactory
) -> User:
    return make_user(hostile_stack[0], tmp_path_factory.mktemp("bob"), "bob", "globex")


@pytest.fixture(scope="module")
def mallory(
    hostile_stack: tuple[LocalStack, TamperingProxy], tmp_path_factory: pytest.TempPathFactory
) -> User:
    return make_user(hostile_stack[0], tmp_path_factory.mktemp("mallory"), "mallory", "globex")
