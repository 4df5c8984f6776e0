"""The manager's database: Alembic migrations, on SQLite and PostgreSQL, and restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from cleanroom.manager import audit
from cleanroom.manager.database import Base, Client, DatabaseError, head_revision, open_database
from cleanroom.manager.keys import KeyRing
from cleanroom.manager.revocation import revocation_list
from cleanroom.manager.settings import default_database_url
from cleanroom.tokens import (
    DEFAULT_LEEWAY,
    DEFAULT_LIFETIME,
    Revocations,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)

from .conftest import Manager, StandInController, make_bundle, make_spec, new_user


def _url(database_url: str | None, tmp_path: Path) -> str:
    return database_url or default_database_url(tmp_path)


def test_migrations_build_exactly_the_models_schema(
    database_url: str | None, tmp_path: Path
) -> None:
    url = _url(database_url, tmp_path)
    sessions = open_database(url)
    engine = sessions.kw["bind"]
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert context.get_current_revision() == head_revision()
            # A model changed without a new migration shows up here.
            assert compare_metadata(context, Base.metadata) == []
        assert set(inspect(engine).get_table_names()) == {
            *Base.metadata.tables,
            "alembic_version",
        }
    finally:
        engine.dispose()


def test_opening_a_database_at_head_again_changes_nothing(
    database_url: str | None, tmp_path: Path
) -> None:
    url = _url(database_url, tmp_path)
    first = open_database(url)
    with first() as session:
        audit.record(session, audit.OPERATOR, "test.marked", "db")
        session.commit()
    first.kw["bind"].dispose()
    again = open_database(url)
    try:
        with again() as session:
            assert [entry.action for entry in audit.entries(session)] == ["test.marked"]
            assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                head_revision()
            )
    finally:
        again.kw["bind"].dispose()


def test_migration_0005_gives_each_uploader_its_bundles_last_upload_time(
    database_url: str | None, tmp_path: Path
) -> None:
    """The uploaders of a bundle stored before it count it in their quota as before:
    from the bundle's last upload (cleanroom.manager.functions.charged_digests)."""
    url = _url(database_url, tmp_path)
    engine = create_engine(url)
    config = AlembicConfig()
    config.set_main_option("script_location", "cleanroom.manager:migrations")
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, "0004")
            connection.execute(text("INSERT INTO projects (id, name, created) VALUES (1, 'a', 5)"))
            connection.execute(
                text(
                    "INSERT INTO functions (digest, size, created, uploaded) "
                    "VALUES ('d1', 10, 100, 1234)"
                )
            )
            connection.execute(
                text("INSERT INTO function_uploaders (digest, project_id) VALUES ('d1', 1)")
            )
    finally:
        engine.dispose()
    sessions = open_database(url)
    try:
        with sessions() as session:
            uploaded = session.execute(text("SELECT uploaded FROM function_uploaders")).all()
        assert [row[0] for row in uploaded] == [1234]
    finally:
        sessions.kw["bind"].dispose()


def test_a_database_without_migrations_is_brought_to_head(tmp_path: Path) -> None:
    url = default_database_url(tmp_path)
    engine = create_engine(url)
    engine.dispose()  # an empty file: what a first start finds
    sessions = open_database(url)
    try:
        assert inspect(sessions.kw["bind"]).has_table("rooms")
    finally:
        sessions.kw["bind"].dispose()


def test_a_database_made_before_migrations_is_refused_in_one_line(tmp_path: Path) -> None:
    url = default_database_url(tmp_path)
    engine = create_engine(url)
    Base.metadata.create_all(engine)  # what development builds did before Alembic
    engine.dispose()
    with pytest.raises(DatabaseError, match="no migration record") as caught:
        open_database(url)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nope://", "the database URL nope:// cannot be used: Can't load plugin"),
        ("postgresql+nodriver://u:hunter2@h/db", "postgresql+nodriver://u:***@h/db cannot be"),
        ("not-a-url:hunter2", "the database URL not-a-url:… is not a URL SQLAlchemy reads"),
    ],
)
def test_a_database_url_sqlalchemy_cannot_use_is_refused_in_one_line(url: str, says: str) -> None:
    """``server manager --database-url nope://`` ended as an internal error (found by
    h25): a URL with no dialect or driver, or none at all, is a DatabaseError (exit 2)
    naming it, never its password."""
    with pytest.raises(DatabaseError) as caught:
        open_database(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def test_every_state_survives_a_restart_of_the_manager(
    start_manager: Callable[..., Manager],
    start_controller: Callable[[Manager], StandInController],
    database_url: str | None,
    tmp_path: Path,
) -> None:
    first = start_manager()
    controller = start_controller(first)
    client, client_id = first.login("acme")
    key, uid = new_user()
    client.register_user_key(key, client_id)
    bundle = make_bundle(tmp_path / "function")
    function = client.upload_function(bundle).function_id
    room = client.deploy(make_spec(function, owner=uid))
    token = client.token
    with first.sessions() as session:
        log_before = [(e.seq, e.hash) for e in audit.entries(session)]
    port = int(first.url.rsplit(":", 1)[1])
    first.stop()

    second = start_manager(
        port=port, data_dir=first.settings.data_dir, database_url=first.settings.database_url
    )
    assert second.url == first.url
    again = second.client(token, client.dpop_key)  # the token from before the restart is good
    whoami = again.whoami()
    assert (whoami["client_id"], whoami["project"], whoami["user_id"]) == (client_id, "acme", uid)
    assert whoami["role"] == "member"
    assert again.room(room.name) == room
    assert again.rooms() == [room]
    assert again.download_function(function) == bundle
    with second.sessions() as session:
        assert [(e.seq, e.hash) for e in audit.entries(session)][: len(log_before)] == log_before
        assert audit.verify(session).ok
    # And it keeps working: the registered compute server is still there.
    again.delete(room.name)
    assert controller.deleted == [room.name]


def test_a_room_token_issued_before_room_tokens_were_kept_is_refused_after_the_upgrade(
    database_url: str | None, tmp_path: Path
) -> None:
    """A manager before migration 0006 did not keep the room tokens it issued, so
    deleting their room did not revoke them. Migration 0007 refuses every token issued
    before it (each client's tokens_not_before, which the revocation list carries to
    every Controller); a token issued after counts."""
    url = _url(database_url, tmp_path)
    engine = create_engine(url)
    config = AlembicConfig()
    config.set_main_option("script_location", "cleanroom.manager:migrations")
    manager_url, server_url = "https://manager.test", "https://compute.test"
    issuer = TokenIssuer(manager_url, KeyRing.open(tmp_path / "keys"))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, "0005")
            connection.execute(text("INSERT INTO projects (id, name, created) VALUES (1, 'a', 5)"))
            connection.execute(
                text(
                    "INSERT INTO clients (id, project_id, secret_hash, disabled, "
                    "tokens_not_before, created) VALUES ('c1', 1, 'x', false, 0, 5)"
                )
            )
        # As a manager before 0006 issued it: signed, audited, not kept.
        before, _ = issuer.issue(
            "c1", audience=server_url, scope="user", project="a", room="r", jkt="k" * 43
        )
    finally:
        engine.dispose()
    sessions = open_database(url)
    try:
        with sessions() as session:
            not_before = session.get_one(Client, "c1").tokens_not_before
            listed = revocation_list(session, not_before, DEFAULT_LIFETIME, DEFAULT_LEEWAY)
    finally:
        sessions.kw["bind"].dispose()
    at_a_controller = Revocations.from_json(listed.to_json())  # what GET /v1/revocations says
    verifier = TokenVerifier(manager_url, server_url, key_source=issuer.keys.public_keys)
    with pytest.raises(TokenError) as refused:
        at_a_controller.check(verifier.issued_claims(before))
    assert refused.value.check == "token-revoked"
    after = TokenIssuer(manager_url, issuer.keys, clock=lambda: not_before)
    token, _ = after.issue(
        "c1", audience=server_url, scope="user", project="a", room="r", jkt="k" * 43
    )
    at_a_controller.check(verifier.issued_claims(token))  # issued after: counts
