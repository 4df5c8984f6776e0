"""A real deployment on loopback for the end-to-end tests: a manager process, a compute
server process (which starts the Attester and one Worker process per clean room), and
two users of two organisations, each with their own profile and CLEANROOM_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cleanroom.client import CleanRoomClient
from cleanroom.client.profile import Profile
from cleanroom.insecure.localstack import LocalStack
from cleanroom.tee.reference import LocalMeasurement
from tests.sandbox import require_sandbox


@dataclass
class User:
    name: str
    home: Path
    profile: Profile
    client: CleanRoomClient

    @property
    def user_id(self) -> str:
        return self.profile.user_id


def confinement_available() -> bool:
    """True, or the test skips (fails under CI=true): see tests/sandbox.py."""
    require_sandbox()
    return True


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    directory = tmp_path_factory.mktemp("stack")
    with LocalStack(directory) as running:
        running.add_project("acme")
        running.add_project("globex")
        yield running


def make_user(stack: LocalStack, tmp: Path, name: str, project: str) -> User:
    credentials = stack.add_client(project, name)
    home = tmp / f"home-{name}"
    profile = Profile.create(
        name,
        home,
        manager_url=stack.manager_url,
        client_id=credentials.client_id,
        client_secret=credentials.secret,
        project=project,
        simulator_root=stack.simulated_root_pem().encode(),
        reference=LocalMeasurement(),
    )
    profile.login().register_user_key(profile.user_key, credentials.client_id)
    return User(name, home, profile, CleanRoomClient(profile))


@pytest.fixture(scope="session")
def alice(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(stack, tmp_path_factory.mktemp("alice"), "alice", "acme")


@pytest.fixture(scope="session")
def bob(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(stack, tmp_path_factory.mktemp("bob"), "bob", "globex")


@pytest.fixture(scope="session")
def mallory(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> User:
    return make_user(stack, tmp_path_factory.mktemp("mallory"), "mallory", "globex")
