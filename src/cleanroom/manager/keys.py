"""The manager's token signing keys: a key ring on disk that rotates without downtime.

Each key is one file ``<data_dir>/token-keys/<kid>.json`` (mode 0600, in a 0700
directory) holding its PEM private key, when it was created and when it becomes
the signing key (``activates``). What a key is at a moment follows from those
times alone (:func:`key_statuses`), so the manager and ``cleanroom admin keys``
always agree:

- ``next``: published in the JWKS, not signing yet (``activates`` is ahead);
- ``active``: the key with the latest ``activates`` not ahead: it signs new tokens;
- ``retired``: superseded when the next key activated, still published while
  tokens it signed may be valid: until ``retired + lifetime + leeway``;
- ``expired``: past that; no longer published, and the manager deletes its file.

``cleanroom admin keys rotate`` (:func:`rotate`) adds a key that activates
``activate_after`` seconds later (default 60). That pre-publication is what keeps
a rotation invisible to Controllers: they refetch the JWKS on an unknown ``kid``
at most every 30 s and may hold a copy up to the JWKS's ``max-age`` (30 s), so a
key published 60 s before it signs is known to every Controller by then.

A running manager notices a new key at once: :class:`KeyRing` checks the
directory's modification time on every use (a ``stat``) and re-reads it when it
changed, and at least every 30 s anyway. A data directory of an older manager
(one ``token-signing-key.pem``) is imported as the first key of the ring.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.tokens import DEFAULT_LEEWAY, DEFAULT_LIFETIME, Clock, kid_of

KEYS_DIR = "token-keys"
LEGACY_KEY_FILE = "token-signing-key.pem"
"""The single signing key of managers before key rotation; imported into the ring."""
DEFAULT_ACTIVATE_AFTER = 60
"""Seconds a rotated key is published before it signs (see the module docstring)."""
RESCAN_INTERVAL = 30.0
"""Re-read the directory at least this often, even if its mtime looks unchanged."""
KEY_STATES = ("next", "active", "retired", "expired")

_log = logging.getLogger("cleanroom.manager.keys")


class KeyRingError(Error):
    """The key ring cannot be used: a key file is unreadable or no key may sign."""

    http_status = 500  # this server's own failure: logged, never answered
    exit_code = EXIT_USAGE  # the key directory given cannot be used


@dataclass(frozen=True)
class StoredKey:
    """One signing key of the ring, as its file holds it."""

    kid: str
    created: int
    activates: int
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)


@dataclass(frozen=True)
class KeyStatus:
    """A key's state at a moment; ``retired``/``expires`` only once it was superseded."""

    kid: str
    created: int
    activates: int
    state: str
    retired: int | None = None
    expires: int | None = None


def key_statuses(
    keys: Sequence[StoredKey], now: int, lifetime: int, leeway: int
) -> list[KeyStatus]:
    """Every key's state at ``now``, in the order they activate (see the module docstring).

    A key retires when its successor activates; the tokens it signed last expire
    ``lifetime`` later, and verifiers accept them ``leeway`` beyond that.
    """
    ordered = sorted(keys, key=lambda key: (key.activates, key.created, key.kid))
    statuses: list[KeyStatus] = []
    for index, key in enumerate(ordered):
        successor = ordered[index + 1] if index + 1 < len(ordered) else None
        if key.activates > now:
            statuses.append(KeyStatus(key.kid, key.created, key.activates, "next"))
        elif successor is None or successor.activates > now:
            statuses.append(KeyStatus(key.kid, key.created, key.activates, "active"))
        else:
            retired = successor.activates
            expires = retired + lifetime + leeway
            state = "expired" if now >= expires else "retired"
            statuses.append(KeyStatus(key.kid, key.created, key.activates, state, retired, expires))
    return statuses


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _private_key(pem: bytes, where: Path) -> ec.EllipticCurvePrivateKey:
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise KeyRingError(f"{where}: not a PEM private key ({error})") from error
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise KeyRingError(f"{where} does not hold a P-256 private key")
    return loaded


def _read_key(path: Path) -> StoredKey:
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise KeyRingError(f"cannot read signing key {path}: {error}") from error
    if not isinstance(document, dict):
        raise KeyRingError(f"{path}: not a JSON object")
    kid, pem = document.get("kid"), document.get("private_key")
    created, activates = document.get("created"), document.get("activates")
    if not (
        isinstance(kid, str)
        and isinstance(pem, str)
        and isinstance(created, int)
        and isinstance(activates, int)
    ):
        raise KeyRingError(f"{path}: needs kid, private_key (text), created, activates (integers)")
    key = _private_key(pem.encode("ascii"), path)
    actual = kid_of(key.public_key())
    if kid != actual or path.name != f"{kid}.json":
        raise KeyRingError(
            f"{path}: kid {kid!r} is not the key's own ({actual}) or not its file's name"
        )
    return StoredKey(kid, created, activates, key)


def _write_key(directory: Path, key: StoredKey) -> Path:
    """Write ``key``'s file atomically (a reader sees all of it or nothing)."""
    document = {
        "kid": key.kid,
        "created": key.created,
        "activates": key.activates,
        "private_key": _pem(key.private_key),
    }
    path = directory / f"{key.kid}.json"
    partial = directory / f".{key.kid}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=1)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _new_key(now: int, activates: int) -> StoredKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    return StoredKey(kid_of(private_key.public_key()), now, activates, private_key)


def keys_dir(data_dir: Path) -> Path:
    """Where the ring of the manager with ``data_dir`` lives."""
    return data_dir / KEYS_DIR


def read_keys(data_dir: Path) -> list[StoredKey]:
    """Every key in the ring of ``data_dir`` (none when it has no ring yet)."""
    directory = keys_dir(data_dir)
    if not directory.is_dir():
        return []
    return [_read_key(path) for path in sorted(directory.glob("*.json"))]


def _prepare(data_dir: Path, now: int) -> StoredKey | None:
    """Make the ring's directory (0700) and, if it has no key, its first one.

    The first key activates at once: nothing was signed before it. A legacy
    ``token-signing-key.pem`` becomes that key, so its tokens stay valid.
    Returns the key it generated, if it did.
    """
    directory = keys_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if any(directory.glob("*.json")):
        return None
    legacy = data_dir / LEGACY_KEY_FILE
    if legacy.exists():
        private_key = _private_key(legacy.read_bytes(), legacy)
        created = int(legacy.stat().st_mtime)
        _write_key(directory, StoredKey(kid_of(private_key.public_key()), created, 0, private_key))
        legacy.unlink()
        _log.info("imported the signing key %s into the key ring %s", legacy, directory)
        return None
    first = _new_key(now, now)
    _write_key(directory, first)
    return first


def rotate(
    data_dir: Path, *, activate_after: int = DEFAULT_ACTIVATE_AFTER, clock: Clock = time.time
) -> StoredKey:
    """Add a new key to the ring of ``data_dir``; it signs from ``activate_after`` s on.

    A ring that had no key gets one that signs at once (and no second one).
    The new key activates at least one second after every key already in the
    ring: two keys activating in the same second would leave which one signs to
    the order of their kids, and the older one might never retire.
    """
    if activate_after < 0:
        raise KeyRingError(f"activate_after must be at least 0, got {activate_after}")
    now = int(clock())
    first = _prepare(data_dir, now)
    if first is not None:
        return first
    latest = max(key.activates for key in read_keys(data_dir))
    key = _new_key(now, max(now + activate_after, latest + 1))
    _write_key(keys_dir(data_dir), key)
    return key


def list_statuses(
    data_dir: Path,
    *,
    lifetime: int = DEFAULT_LIFETIME,
    leeway: int = DEFAULT_LEEWAY,
    clock: Clock = time.time,
) -> list[KeyStatus]:
    """The state of every key in the ring of ``data_dir`` now (``cleanroom admin keys list``)."""
    return key_statuses(read_keys(data_dir), int(clock()), lifetime, leeway)


def remove_key(data_dir: Path, kid: str) -> None:
    """Remove key ``kid`` from the ring (undoes a :func:`rotate` whose audit failed)."""
    (keys_dir(data_dir) / f"{kid}.json").unlink(missing_ok=True)


class KeyRing:
    """The manager's ring of signing keys in one directory (a :class:`SigningKeys`).

    Re-reads the directory when its mtime changes (a ``stat`` per use) or every
    :data:`RESCAN_INTERVAL` seconds; deletes the files of expired keys.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        leeway: int = DEFAULT_LEEWAY,
        clock: Clock = time.time,
    ) -> None:
        self.data_dir = data_dir
        self.directory = keys_dir(data_dir)
        self.lifetime = lifetime
        self.leeway = leeway
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[StoredKey] = []
        self._marker: tuple[int, int] | None = None
        self._read_at = 0.0

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        leeway: int = DEFAULT_LEEWAY,
        clock: Clock = time.time,
    ) -> KeyRing:
        """The ring in ``data_dir``, created with a first key if it has none."""
        _prepare(data_dir, int(clock()))
        ring = cls(data_dir, lifetime=lifetime, leeway=leeway, clock=clock)
        ring.statuses()  # read it now: a bad key file stops the manager at start
        return ring

    def _current(self) -> tuple[list[StoredKey], list[KeyStatus]]:
        with self._lock:
            stat = self.directory.stat()
            marker = (stat.st_mtime_ns, stat.st_ino)
            monotonic = time.monotonic()
            if marker != self._marker or monotonic - self._read_at >= RESCAN_INTERVAL:
                self._keys = read_keys(self.data_dir)
                self._marker, self._read_at = marker, monotonic
            statuses = key_statuses(self._keys, int(self._clock()), self.lifetime, self.leeway)
            for status in statuses:
                if status.state == "expired":
                    self._delete(status.kid)
            return self._keys, statuses

    def _delete(self, kid: str) -> None:
        """Delete an expired key's file: nothing it signed is valid any more."""
        try:
            (self.directory / f"{kid}.json").unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            _log.warning("cannot delete the expired signing key %s: %s", kid, error)
            return
        _log.info("deleted the expired signing key %s", kid)

    def statuses(self) -> list[KeyStatus]:
        """Every key's state now, in the order they activate."""
        return self._current()[1]

    def signing_key(self) -> ec.EllipticCurvePrivateKey:
        """The active key; :class:`KeyRingError` when none is (e.g. its file was removed)."""
        keys, statuses = self._current()
        by_kid = {key.kid: key for key in keys}
        for status in statuses:
            if status.state == "active":
                return by_kid[status.kid].private_key
        raise KeyRingError(
            f"no active signing key in {self.directory} "
            f"(keys: {[(status.kid, status.state) for status in statuses]})"
        )

    def public_keys(self) -> Mapping[str, ec.EllipticCurvePublicKey]:
        """The published keys: next, active and retired (not expired), by kid."""
        keys, statuses = self._current()
        by_kid = {key.kid: key for key in keys}
        return {
            status.kid: by_kid[status.kid].private_key.public_key()
            for status in statuses
            if status.state != "expired"
        }
