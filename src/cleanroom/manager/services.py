"""The manager's services, built once per app from its settings (``create_app`` wires
each to its router)."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from sqlalchemy.orm import Session, sessionmaker

from cleanroom.manager.auth import Auth
from cleanroom.manager.database import open_database
from cleanroom.manager.functions import Functions
from cleanroom.manager.housekeeping import Housekeeping
from cleanroom.manager.rooms import Rooms
from cleanroom.manager.servers import HealthChecker
from cleanroom.manager.settings import Settings


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
    controller_calls: anyio.CapacityLimiter
    """Deploys and deletes, which wait for a Controller, at once (``Settings.controller_calls``;
    :mod:`cleanroom.manager.routes.rooms`)."""

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Open the data directory and the database, and build every service on them."""
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sessions: sessionmaker[Session] = open_database(settings.resolved_database_url)
        auth = Auth(settings, sessions)
        functions = Functions(settings, sessions)

        # The health checker asks a Controller about one room with a status token, and
        # deletes a failed room that keeps its slot with a delete token.
        health = HealthChecker(sessions, settings, auth.grants.operation_headers)
        return cls(
            settings=settings,
            sessions=sessions,
            auth=auth,
            functions=functions,
            rooms=Rooms(settings, sessions, functions, auth.grants),
            health=health,
            housekeeping=Housekeeping(settings, health, functions),
            controller_calls=anyio.CapacityLimiter(settings.controller_calls),
        )
