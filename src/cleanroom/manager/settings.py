"""The management server's settings: where its state lives and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cleanroom.tokens import DEFAULT_LIFETIME

DEFAULT_MAX_FUNCTION_BYTES = 256 * 1024 * 1024
DATABASE_FILE = "manager.db"


@dataclass(frozen=True)
class Settings:
    """How one management server runs.

    ``public_url`` is the URL clients and Controllers reach it at; it is the
    tokens' ``iss``, so it is stored without a trailing slash. ``database_url``
    defaults to the SQLite file ``<data_dir>/manager.db``.
    """

    data_dir: Path
    public_url: str
    database_url: str | None = None
    max_function_bytes: int = DEFAULT_MAX_FUNCTION_BYTES
    token_lifetime: int = DEFAULT_LIFETIME
    controller_timeout: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the database: the given one or the default SQLite file."""
        return self.database_url or default_database_url(self.data_dir)

    @property
    def functions_dir(self) -> Path:
        return self.data_dir / "functions"


def default_database_url(data_dir: Path) -> str:
    """The SQLite database in ``data_dir``: the default when no URL is given."""
    return f"sqlite:///{data_dir / DATABASE_FILE}"
