"""Where cleanroom keeps its state: one home, overridable so two users can share a machine."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    """``$CLEANROOM_HOME`` if set, else the platform's per-user data directory."""
    override = os.environ.get("CLEANROOM_HOME")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("cleanroom", appauthor=False))


def simulated_platform_dir() -> Path:
    """``$CLEANROOM_SIM_DIR`` if set, else ``<home>/simulated-platform``."""
    override = os.environ.get("CLEANROOM_SIM_DIR")
    if override:
        return Path(override).expanduser()
    return home() / "simulated-platform"


def compute_data_dir() -> Path:
    """The compute server's default ``--data-dir``: ``<home>/compute``."""
    return home() / "compute"
