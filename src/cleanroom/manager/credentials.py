"""Client credentials: random secrets, stored only as argon2id hashes.

Two kinds of client log in with them: a user's client (:func:`authenticate`) and
a compute server's Controller (:func:`authenticate_server`; its client id starts
with :data:`SERVER_CLIENT_PREFIX`). A wrong secret, an unknown client, a disabled
client, a client whose member was removed and a removed compute server are
indistinguishable to the caller: each answers ``None``, after the same argon2
work (an unknown client is checked against a dummy hash), and the token endpoint
turns ``None`` into one fixed ``401 {"error": "invalid_client"}``.

An active client's secret that argon2 accepted is remembered in this process
(:class:`AcceptedSecrets`), so that its next token requests cost no argon2: every
operation of a user asks for a room's token, and under 40 users at once the argon2
checks were most of the manager's CPU and held up every session on the machine.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

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


class AcceptedSecrets:
    """Secrets argon2 accepted lately, each for one client and one stored hash.

    What is kept, in this process's memory only: for each client, the stored hash that
    accepted the secret and the secret's HMAC-SHA-256 under a key made at start. A new
    secret (a new stored hash) is not known; only a correct secret hits, and only an
    active client's is looked up, so every refusal still costs argon2's work and looks
    like every other. The secrets are 256 random bits (:func:`new_secret`): the digest
    of one in a dump of this memory gives nothing to guess from. At most ``capacity``
    clients are remembered, the least recently used forgotten first.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).digest()

    def knows(self, who: str, stored: str, secret: str) -> bool:
        """Whether argon2 accepted ``secret`` for ``who`` against ``stored`` lately."""
        digest = self._digest(secret)
        with self._lock:
            known = self._known.get(who)
            if known is None or known[0] != stored:
                return False
            self._known.move_to_end(who)
        return hmac.compare_digest(known[1], digest)

    def remember(self, who: str, stored: str, secret: str) -> None:
        """Remember that argon2 accepted ``secret`` for ``who`` against ``stored``."""
        digest = self._digest(secret)
        with self._lock:
            self._known[who] = (stored, digest)
            self._known.move_to_end(who)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._known.clear()


accepted = AcceptedSecrets()


def _argon2_matches(stored: str, secret: str) -> bool:
    try:
        return _hasher.verify(stored, secret)
    except (VerificationError, InvalidHashError):
        return False


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
    if client is None or client.disabled or client.member_id is None:
        _argon2_matches(_dummy_hash() if client is None else client.secret_hash, secret)
        return None
    if accepted.knows("client:" + client_id, client.secret_hash, secret):
        return client
    if not _argon2_matches(client.secret_hash, secret):
        return None
    accepted.remember("client:" + client_id, client.secret_hash, secret)
    return client


def authenticate_server(session: Session, client_id: str, secret: str) -> ComputeServer | None:
    """The compute server whose client id is ``client_id`` if ``secret`` is its secret and
    it is not removed, else ``None`` (after the same argon2 work as for a user's client)."""
    server = (
        session.scalar(select(ComputeServer).where(ComputeServer.client_id == client_id))
        if client_id
        else None
    )
    if server is None or server.removed or server.secret_hash is None:
        stored = server.secret_hash if server is not None and server.secret_hash else None
        _argon2_matches(stored or _dummy_hash(), secret)
        return None
    if accepted.knows("server:" + client_id, server.secret_hash, secret):
        return server
    if not _argon2_matches(server.secret_hash, secret):
        return None
    accepted.remember("server:" + client_id, server.secret_hash, secret)
    return server
