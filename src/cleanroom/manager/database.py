"""The management server's database: projects, clients, compute servers, functions, rooms.

SQLite (``<data-dir>/manager.db``) by default, any SQLAlchemy URL otherwise
(PostgreSQL in production). The schema is made and kept by the Alembic
migrations in ``cleanroom/manager/migrations``: :func:`open_database` upgrades
the database to the newest revision before anything uses it, so a manager (or
`cleanroom admin`) started on an older database migrates it first.

Nothing here is secret except what is hashed: client secrets are stored only as
argon2id hashes. Function bundles live on disk (:mod:`cleanroom.manager.storage`);
the database only knows their IDs and who uploaded them.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    inspect,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)
from sqlalchemy.pool import ConnectionPoolEntry

from cleanroom.errors import EXIT_USAGE, Error

ROOM_STATES = ("deploying", "deployed", "failed", "lost", "deleted")
LIVE_ROOM_STATES = ("deploying", "deployed")
"""States in which a room counts against its compute server's load."""
ROLES = ("owner", "member")
"""Project roles: an owner manages the project's members and credentials."""
SERVER_STATES = ("unknown", "healthy", "unhealthy", "lost")


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


class Member(Base):
    """A person or system in a project, with a role; its credentials are clients."""

    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default="member")
    created: Mapped[int] = mapped_column(Integer, default=_now)

    project: Mapped[Project] = relationship()


class Client(Base):
    """An OAuth2 client (RFC 6749 §2): one user's credentials, in one project."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(Text)  # argon2id, never the secret
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    tokens_not_before: Mapped[int] = mapped_column(Integer, default=0)
    """Tokens issued (``iat``) before this are refused: set on rotate and disable."""
    user_key: Mapped[str | None] = mapped_column(Text)  # b64u DER SPKI
    user_id: Mapped[str | None] = mapped_column(String(43), index=True)
    user_jkt: Mapped[str | None] = mapped_column(String(43))
    """The DPoP key thumbprint the user key signed when it was last registered: only
    tokens bound to that key are the user (``callers.proven_user_id``)."""
    user_jkt_since: Mapped[int | None] = mapped_column(Integer)
    """When ``user_jkt`` last changed (the next second): a token bound to another DPoP key
    issued before it is refused at the manager (``callers.user_caller``, ``token-revoked``),
    as the key the client moved from."""
    created: Mapped[int] = mapped_column(Integer, default=_now)

    project: Mapped[Project] = relationship(back_populates="clients")
    member: Mapped[Member | None] = relationship()


class RevokedToken(Base):
    """A token revoked before its expiry; kept until ``exp`` (then it is refused anyway)."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    exp: Mapped[int] = mapped_column(Integer, index=True)
    revoked: Mapped[int] = mapped_column(Integer, default=_now)


class RoomToken(Base):
    """A user's token for one room on its Controller, kept until ``exp``: deleting the
    room revokes it (:func:`cleanroom.manager.revocation.revoke_room_tokens`).

    A room token names the room's project and name, not the room: a Controller cannot
    tell it from a token for another room of that name deployed there after it."""

    __tablename__ = "room_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    exp: Mapped[int] = mapped_column(Integer, index=True)
    jkt: Mapped[str | None] = mapped_column(String(43))
    """The DPoP key thumbprint the token is bound to (None: kept before migration 0007,
    treated as another key's): registering the client's user key from another DPoP key
    revokes it (:func:`cleanroom.manager.revocation.revoke_other_keys_room_tokens`)."""


class KeyLogout(Base):
    """When a client last logged out from one DPoP key (``POST /v1/whoami/logout``): the
    manager refuses its tokens of that client and key issued before ``not_before``
    (``callers.user_caller``, ``token-revoked``). The manager does not keep its own
    tokens, so without this a logout reached only the one it was sent with, and the
    tokens of the same key from an earlier login lived out their hour (left open by
    h24). Kept until no token issued before it can be alive (``revocation.prune``)."""

    __tablename__ = "key_logouts"

    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), primary_key=True)
    jkt: Mapped[str] = mapped_column(String(43), primary_key=True)
    not_before: Mapped[int] = mapped_column(Integer, index=True)


class ComputeServer(Base):
    """A compute server whose Controller the manager deploys rooms on."""

    __tablename__ = "compute_servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    capacity: Mapped[int] = mapped_column(Integer, default=20)
    """How many live rooms it may host at once."""
    tee_kind: Mapped[str] = mapped_column(String(32), default="simulated")
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    reason: Mapped[str | None] = mapped_column(Text)
    last_seen: Mapped[int | None] = mapped_column(Integer)
    """When it last answered a health check (None: never)."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Health checks failed in a row."""
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[int] = mapped_column(Integer, default=_now)
    # Its Controller's credentials towards the manager (client credentials, like a
    # user's): the id it logs in with and the argon2id hash of its secret. Tokens it
    # was issued before ``tokens_not_before`` (set when its secret is rotated or it is
    # removed) are refused.
    client_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(Text)
    tokens_not_before: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StoredFunction(Base):
    """A function bundle on disk, named by its ID (``fs://`` + b64u SHA-256)."""

    __tablename__ = "functions"

    digest: Mapped[str] = mapped_column(String(43), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[int] = mapped_column(Integer, default=_now)
    uploaded: Mapped[int] = mapped_column(Integer, default=_now, index=True)
    """When it was last uploaded: garbage collection keeps it a grace period after."""


class FunctionUploader(Base):
    """A project that uploaded a function: it may read the bundle back."""

    __tablename__ = "function_uploaders"
    __table_args__ = (UniqueConstraint("digest", "project_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(ForeignKey("functions.digest"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    uploaded: Mapped[int] = mapped_column(Integer, default=_now, server_default="0")
    """When this project last uploaded it: its function quota counts the bundle for
    ``function_grace`` seconds after (cleanroom.manager.functions.charged_digests)."""


class Room(Base):
    """A clean room: its spec, where it is deployed and in what state.

    Names live per project: within a project, a name belongs to at most one room
    that is not ``deleted`` (a partial unique index), so a deleted room's name can
    be deployed again, and another project's use of a name is invisible.
    """

    __tablename__ = "rooms"
    __table_args__ = (
        Index(
            "rooms_live_project_name",
            "project_id",
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
    # Not a foreign key: a room that is no longer live keeps its function's ID after
    # garbage collection deletes the bundle (cleanroom.manager.storage.collect_garbage).
    function_digest: Mapped[str] = mapped_column(String(43), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    compute_server_id: Mapped[int] = mapped_column(ForeignKey("compute_servers.id"), index=True)
    compute_url: Mapped[str] = mapped_column(String(2000))
    created: Mapped[int] = mapped_column(Integer, default=_now)
    # A failed room whose Controller may still start its Worker: the deploy got no
    # answer, and the Controller did not confirm the room's delete. It keeps its slot
    # (holds_slot) until it is deleted.
    may_still_run: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    project: Mapped[Project] = relationship()
    members: Mapped[list[RoomMember]] = relationship(
        back_populates="room", cascade="all, delete-orphan"
    )


def holds_slot() -> ColumnElement[bool]:
    """The rooms that count against their project's quota and their compute server's
    capacity: the live ones, and a failed one whose Controller may still run its Worker
    (``Room.may_still_run``), until it is deleted."""
    return Room.state.in_(LIVE_ROOM_STATES) | ((Room.state == "failed") & Room.may_still_run)


class RoomMember(Base):
    """A user_id that appears in a room's spec (inputs, outputs or runners)."""

    __tablename__ = "room_members"
    __table_args__ = (UniqueConstraint("room_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(43), index=True)

    room: Mapped[Room] = relationship(back_populates="members")


class AuditEntry(Base):
    """One line of the append-only, hash-chained audit log (:mod:`cleanroom.manager.audit`).

    ``seq`` is unique and dense, and each ``hash`` covers the previous one, so an
    entry changed, removed or inserted anywhere breaks the chain from there on.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(2000))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON (RFC 8785)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """The audit log's newest ``seq`` and ``hash``: one row, updated by every append.

    Updating it is what serialises appends (a row lock on PostgreSQL, the write
    lock on SQLite), so two writers can never chain onto the same entry.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


def _sqlite_pragmas(connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_database(url: str) -> sessionmaker[Session]:
    """A session factory for the database at ``url``, its schema created if missing.

    A URL SQLAlchemy cannot use (no such dialect or driver, not a URL) is a
    :class:`DatabaseError`, naming it without its password: ``server manager
    --database-url nope://`` ended as an internal error (found by h25)."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # its words quote the URL, password and all
        raise DatabaseError(
            f"the database URL {_shown_url(url)} is not a URL SQLAlchemy reads "
            "(dialect+driver://user:password@host/database)"
        ) from None
    engine: Engine
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Requests run on a thread pool: one connection may serve several threads.
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except ArgumentError as error:  # no such dialect or driver, or an argument it refuses
        raise DatabaseError(
            f"the database URL {_shown_url(url)} cannot be used: {str(error).splitlines()[0]}"
        ) from None
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _shown_url(url: str) -> str:
    """``url`` without its password, or only its scheme when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return f"{url.partition(':')[0][:40]}:…"


class DatabaseError(Error):
    """The database cannot be used as it is; the message says why, in one line."""

    http_status = 500  # this server's own failure: logged, never answered
    exit_code = EXIT_USAGE  # the --data-dir or --database-url given cannot be used


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", "cleanroom.manager:migrations")
    return config


def upgrade(engine: Engine) -> None:
    """Migrate the database behind ``engine`` to the newest revision (a no-op when there)."""
    config = _alembic_config()
    with engine.begin() as connection:
        tables = set(inspect(connection).get_table_names())
        if tables and "alembic_version" not in tables:
            raise DatabaseError(
                f"the database at {engine.url.render_as_string(hide_password=True)} has "
                "tables but no migration record: it was made before the schema was kept by "
                "migrations (a development build); start on a new database"
            )
        config.attributes["connection"] = connection
        alembic_command.upgrade(config, "head")


def head_revision() -> str | None:
    """The newest migration's revision id."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
