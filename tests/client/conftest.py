"""Shared fixtures of the client tests: an isolated home, a function, some users."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.keys import user_id

# The manager's own fixtures (a real manager on loopback, a stand-in Controller),
# reused by test_with_manager.py.
from tests.manager.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    controller,
    manager,
    start_controller,
    start_manager,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh CLEANROOM_HOME, with no profile chosen by the environment."""
    directory = tmp_path / "home"
    monkeypatch.setenv("CLEANROOM_HOME", str(directory))
    monkeypatch.delenv("CLEANROOM_PROFILE", raising=False)
    return directory


def new_user_id() -> str:
    return user_id(ec.generate_private_key(ec.SECP256R1()).public_key())


@pytest.fixture(scope="session")
def alice() -> str:
    return new_user_id()


@pytest.fixture(scope="session")
def bob() -> str:
    return new_user_id()


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    """A small function: handler.py and a helper module."""
    directory = tmp_path / "function"
    (directory / "lib").mkdir(parents=True)
    (directory / "handler.py").write_text("def run(inputs, outputs, parameters):\n    pass\n")
    (directory / "lib" / "util.py").write_text("VALUE = 1\n")
    return directory


@pytest.fixture(scope="session")
def simulator_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root certificate of a fresh simulated platform, as a PEM file."""
    platform = SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=int(time.time()))
    path = tmp_path_factory.mktemp("root") / "root.pem"
    path.write_text(platform.root_certificate_pem())
    return path
