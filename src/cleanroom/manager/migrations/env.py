"""Alembic's entry point: migrate the connection ``open_database`` hands over.

Run by :func:`cleanroom.manager.database.upgrade` (every start of the manager and
of `cleanroom admin`), or by hand for a new revision::

    alembic -c src/cleanroom/manager/migrations/alembic.ini revision --autogenerate -m "…"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from cleanroom.manager.database import Base

_MIGRATION_LOCK = 0x636C72  # PostgreSQL advisory lock: one migrator at a time


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        context.run_migrations()


def _run() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        _migrate(given)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (alembic -x or alembic.ini) to the manager's database")
    with create_engine(url).connect() as connection:
        _migrate(connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
_run()
