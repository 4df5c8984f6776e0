"""The management server: tokens, projects, function storage, the clean room registry.

Outside the TEE model (docs/architecture.md): it can deny service, never read data
or make a client accept the wrong function, spec or enclave. Its schema is kept by
Alembic migrations (``cleanroom.manager.migrations``), applied when the database is
opened; docs/management.md describes running it for several organisations.
"""

from cleanroom.manager.app import create_app
from cleanroom.manager.settings import Settings

__all__ = ["Settings", "create_app"]
