"""The management server's database: projects, clients, compute servers, functions, rooms.

SQLite (``<data-dir>/manager.db``) by default, any SQLAlchemy URL otherwise
(PostgreSQL in production). The schema is created with ``create_all`` on start
for now; migrations (Alembic) come in a later issue, and until then a schema
change means a fresh database.

Nothing here is secret except what is hashed: client secrets are stored only as
argon2id hashes. Function bundles live on disk (:mod:`cleanroom.manager.storage`);
the database only knows their IDs and who uploaded them.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import ConnectionPoolEntry

ROOM_STATES = ("deploying", "deployed", "failed", "deleted")
LIVE_ROOM_STATES = ("deploying", "deployed")
"""States in which a room counts against its compute server's load."""


def _now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created: Mapped[int] = mapped_column(Integer, default=_now)

    clients: Mapped[list[Client]] = relationship(back_populates="project")


class Client(Base):
    """An OAuth2 client (RFC 6749 §2): one user's credentials, in one project."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(Text)  # argon2id, never the secret
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    user_key: Mapped[str | None] = mapped_column(Text)  # b64u DER SPKI
    user_id: Mapped[str | None] = mapped_column(String(43), index=True)
    created: Mapped[int] = mapped_column(Integer, default=_now)

    project: Mapped[Project] = relationship(back_populates="clients")


class ComputeServer(Base):
    """A compute server whose Controller the manager deploys rooms on."""

    __tablename__ = "compute_servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    created: Mapped[int] = mapped_column(Integer, default=_now)


class StoredFunction(Base):
    """A function bundle on disk, named by its ID (``fs://`` + b64u SHA-256)."""

    __tablename__ = "functions"

    digest: Mapped[str] = mapped_column(String(43), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    created: Mapped[int] = mapped_column(Integer, default=_now)


class FunctionUploader(Base):
    """A project that uploaded a function: it may read the bundle back."""

    __tablename__ = "function_uploaders"
    __table_args__ = (UniqueConstraint("digest", "project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(ForeignKey("functions.digest"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))


class Room(Base):
    """A clean room: its spec, where it is deployed and in what state.

    A name belongs to at most one room that is not ``deleted`` (a partial unique
    index), so a deleted room's name can be deployed again.
    """

    __tablename__ = "rooms"
    __table_args__ = (
        Index(
            "rooms_live_name",
            "name",
            unique=True,
            sqlite_where=text("state != 'deleted'"),
            postgresql_where=text("state != 'deleted'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    deployer: Mapped[str] = mapped_column(ForeignKey("clients.id"))
    spec: Mapped[str] = mapped_column(Text)  # the spec's canonical JSON
    work_id: Mapped[str] = mapped_column(String(43))
    function_digest: Mapped[str] = mapped_column(ForeignKey("functions.digest"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    compute_server_id: Mapped[int] = mapped_column(ForeignKey("compute_servers.id"), index=True)
    compute_url: Mapped[str] = mapped_column(String(2000))
    created: Mapped[int] = mapped_column(Integer, default=_now)

    project: Mapped[Project] = relationship()
    members: Mapped[list[RoomMember]] = relationship(
        back_populates="room", cascade="all, delete-orphan"
    )


class RoomMember(Base):
    """A user_id that appears in a room's spec (inputs, outputs or runners)."""

    __tablename__ = "room_members"
    __table_args__ = (UniqueConstraint("room_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(43), index=True)

    room: Mapped[Room] = relationship(back_populates="members")


def _sqlite_pragmas(connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_database(url: str) -> sessionmaker[Session]:
    """A session factory for the database at ``url``, its schema created if missing."""
    parsed = make_url(url)
    engine: Engine
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Requests run on a thread pool: one connection may serve several threads.
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)
