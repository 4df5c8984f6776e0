"""The management server: tokens, projects, function storage, the clean room registry.

Outside the TEE model (docs/architecture.md): it can deny service, never read data
or make a client accept the wrong function, spec or enclave. Its schema is created
with SQLAlchemy's ``create_all`` for now; Alembic migrations come in a later issue.
"""

from cleanroom.manager.app import create_app
from cleanroom.manager.settings import Settings

__all__ = ["Settings", "create_app"]
