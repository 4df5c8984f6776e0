"""Client credentials: random secrets, stored only as argon2id hashes.

Two kinds of client log in with them: a user's client (:func:`authenticate`) and
a compute server's Controller (:func:`authenticate_server`; its client id starts
with :data:`SERVER_CLIENT_PREFIX`). A wrong secret, an unknown client, a disabled
client, a client whose member was removed and a removed compute server are
indistinguishable to the caller: each answers ``None``, after the same argon2
work (an unknown client is checked against a dummy hash), and the token endpoint
turns ``None`` into one fixed ``401 {"error": "invalid_client"}``.
"""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cleanroom.manager.database import Client, ComputeServer

_hasher = PasswordHasher()  # argon2id with the RFC 9106 "low memory" parameters


@functools.cache
def _dummy_hash() -> str:
    """What an unknown client's secret is checked against (the same argon2 work).

    Made on first use, not on import: hashing takes argon2's 64 MiB, which every
    process importing this module (a Controller, the CLI) would otherwise spend.
    """
    return _hasher.hash(secrets.token_urlsafe(32))


SERVER_CLIENT_PREFIX = "cs-"
"""How a compute server's client id starts (a user's client id is 32 hex digits)."""


def new_client_id() -> str:
    """A random client id (128 bits, hex so that it never looks like an option)."""
    return secrets.token_hex(16)


def new_server_client_id() -> str:
    """A random client id for a compute server: :data:`SERVER_CLIENT_PREFIX` and 32 hex."""
    return SERVER_CLIENT_PREFIX + secrets.token_hex(16)


def new_secret() -> str:
    """A random client secret (256 bits, base64url)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The argon2id hash (PHC string) stored in place of ``secret``."""
    return _hasher.hash(secret)


def authenticate(session: Session, client_id: str, secret: str) -> Client | None:
    """The client ``client_id`` if ``secret`` is its secret and it may log in, else ``None``.

    It may log in when it is enabled and belongs to a member of its project.
    """
    client = session.get(Client, client_id) if client_id else None
    stored = client.secret_hash if client is not None else _dummy_hash()
    matches: bool
    try:
        matches = _hasher.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        matches = False
    if client is None or client.disabled or client.member_id is None or not matches:
        return None
    return client


def authenticate_server(session: Session, client_id: str, secret: str) -> ComputeServer | None:
    """The compute server whose client id is ``client_id`` if ``secret`` is its secret and
    it is not removed, else ``None`` (after the same argon2 work as for a user's client)."""
    server = (
        session.scalar(select(ComputeServer).where(ComputeServer.client_id == client_id))
        if client_id
        else None
    )
    stored = server.secret_hash if server is not None and server.secret_hash else _dummy_hash()
    matches: bool
    try:
        matches = _hasher.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        matches = False
    if server is None or server.removed or server.secret_hash is None or not matches:
        return None
    return server
