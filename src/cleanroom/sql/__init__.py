"""SQL clean rooms: the query checker (rules.py), differential privacy (privacy.py) and
the engine that runs a checked query in the function sandbox (engine/handler.py)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from cleanroom.protocol.bundle import function_id, pack

ENGINE_DIRECTORY = Path(__file__).parent / "engine"


@cache
def engine_bundle() -> bytes:
    """The bundle of this release's SQL engine: the function of every SQL room."""
    return pack(ENGINE_DIRECTORY)


def engine_function_id() -> str:
    """Its function ID; a Worker runs a SQL room only if the spec names exactly this."""
    return function_id(engine_bundle())
