"""The manager's services, built once per app from its settings (``create_app`` wires
each to its router)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from cleanroom.manager.auth import Auth
from cleanroom.manager.database import open_database
from cleanroom.manager.functions import Functions
from cleanroom.manager.housekeeping import Housekeeping
from cleanroom.manager.rooms import Rooms
from cleanroom.manager.servers import HealthChecker
from cleanroom.manager.settings import Settings
from cleanroom.tokens import SCOPE_STATUS


@dataclass(frozen=True)
class Services:
    """One manager's state: its database, and a service per resource."""

    settings: Settings
    sessions: sessionmaker[Session]
    auth: Auth
    functions: Functions
    rooms: Rooms
    health: HealthChecker
    housekeeping: Housekeeping

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Open the data directory and the database, and build every service on them."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sessions: sessionmaker[Session] = open_database(settings.resolved_database_url)
        auth = Auth(settings, sessions)
        functions = Functions(settings, sessions)

        def status_headers(server_url: str, project: str, room: str) -> dict[str, str]:
            # The health checker asks a Controller about one room with a status token.
            return auth.grants.operation_headers(server_url, project, room, SCOPE_STATUS)

        health = HealthChecker(sessions, settings, status_headers)
        return cls(
            settings=settings,
            sessions=sessions,
            auth=auth,
            functions=functions,
            rooms=Rooms(settings, sessions, functions, auth.grants),
            health=health,
            housekeeping=Housekeeping(settings, health, functions),
        )
