from __future__ import annotations

import time
from pathlib import Path

import pytest

from cleanroom.insecure.simulated import SimulatedPlatform

NOW = int(time.time())


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    """One simulated platform for the session (creating keys costs a little)."""
    return SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)


@pytest.fixture(scope="session")
def other_platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    """A second, unrelated simulated platform: its secret and root differ."""
    return SimulatedPlatform.init(tmp_path_factory.mktemp("other-platform"), now=NOW)


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path / "platform"
