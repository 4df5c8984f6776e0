"""Signing-key rotation: the ring's states, a running manager picking up a new key,
old tokens valid until they expire, then the old key gone from the JWKS."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cleanroom.cli.main import main
from cleanroom.dpop import ProofKey
from cleanroom.manager import audit
from cleanroom.manager.keys import (
    LEGACY_KEY_FILE,
    KeyRing,
    KeyRingError,
    StoredKey,
    key_statuses,
    keys_dir,
    list_statuses,
    rotate,
)
from cleanroom.tokens import TokenIssuer, TokenVerifier, kid_of
from tests.auth import dpop

from .conftest import Manager

NOW = 1_764_763_200
LIFETIME, LEEWAY = 3600, 30


def stored(name: str, activates: int, created: int | None = None) -> StoredKey:
    key = ec.derive_private_key(int.from_bytes(name.encode(), "big"), ec.SECP256R1())
    return StoredKey(name, activates if created is None else created, activates, key)


def states(keys: list[StoredKey], now: int) -> list[tuple[str, str]]:
    return [(s.kid, s.state) for s in key_statuses(keys, now, LIFETIME, LEEWAY)]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW, [("a", "active"), ("b", "next")]),
        (NOW + 59, [("a", "active"), ("b", "next")]),
        (NOW + 60, [("a", "retired"), ("b", "active")]),
        (NOW + 60 + LIFETIME + LEEWAY - 1, [("a", "retired"), ("b", "active")]),
        (NOW + 60 + LIFETIME + LEEWAY, [("a", "expired"), ("b", "active")]),
    ],
    ids=["published", "just-before", "activated", "last-retired-second", "expired"],
)
def test_key_states_follow_from_their_times(now: int, expected: list[tuple[str, str]]) -> None:
    keys = [stored("b", NOW + 60, created=NOW), stored("a", NOW - 100)]
    assert states(keys, now) == expected


def test_a_retired_key_expires_a_lifetime_and_leeway_after_its_successor_activated() -> None:
    keys = [stored("a", NOW - 100), stored("b", NOW + 60, created=NOW)]
    retired = key_statuses(keys, NOW + 60, LIFETIME, LEEWAY)[0]
    assert (retired.retired, retired.expires) == (NOW + 60, NOW + 60 + LIFETIME + LEEWAY)


def test_three_keys_one_active() -> None:
    keys = [stored("a", NOW - 7200), stored("b", NOW - 3700), stored("c", NOW + 60)]
    assert states(keys, NOW) == [("a", "expired"), ("b", "active"), ("c", "next")]
    keys = [stored("a", NOW - 7200), stored("b", NOW - 10), stored("c", NOW + 60)]
    assert states(keys, NOW) == [("a", "retired"), ("b", "active"), ("c", "next")]


def test_a_ring_with_only_future_keys_signs_nothing(tmp_path: Path) -> None:
    now = [float(NOW)]
    ring = KeyRing.open(tmp_path, clock=lambda: now[0])
    [only] = list(keys_dir(tmp_path).glob("*.json"))
    document = json.loads(only.read_text())
    document["activates"] = NOW + 3600
    changed = only.with_name("changed")
    changed.write_text(json.dumps(document))
    changed.replace(only)  # as every writer of the ring does: the directory changes
    with pytest.raises(KeyRingError, match="no active signing key"):
        ring.signing_key()


def test_the_ring_sees_a_rotation_at_once_and_retires_then_drops_the_old_key(
    tmp_path: Path,
) -> None:
    now = [float(NOW)]
    ring = KeyRing.open(tmp_path, lifetime=LIFETIME, leeway=LEEWAY, clock=lambda: now[0])
    old = kid_of(ring.signing_key().public_key())
    new = rotate(tmp_path, activate_after=60, clock=lambda: now[0])
    assert set(ring.public_keys()) == {old, new.kid}  # published before it signs
    assert kid_of(ring.signing_key().public_key()) == old
    now[0] = NOW + 60
    assert kid_of(ring.signing_key().public_key()) == new.kid
    assert set(ring.public_keys()) == {old, new.kid}  # old tokens still verify
    now[0] = NOW + 60 + LIFETIME + LEEWAY
    assert set(ring.public_keys()) == {new.kid}
    assert not (keys_dir(tmp_path) / f"{old}.json").exists()  # its private key is deleted


def test_a_key_rotated_in_the_second_its_predecessor_activated_still_supersedes_it(
    tmp_path: Path,
) -> None:
    ring = KeyRing.open(tmp_path, lifetime=LIFETIME, leeway=LEEWAY, clock=lambda: NOW)
    old = kid_of(ring.signing_key().public_key())
    new = rotate(tmp_path, activate_after=0, clock=lambda: NOW)  # the same second
    again = rotate(tmp_path, activate_after=0, clock=lambda: NOW)
    assert (new.activates, again.activates) == (NOW + 1, NOW + 2)
    statuses = list_statuses(tmp_path, lifetime=LIFETIME, leeway=LEEWAY, clock=lambda: NOW + 2)
    assert [(s.kid, s.state) for s in statuses] == [
        (old, "retired"),
        (new.kid, "retired"),
        (again.kid, "active"),
    ]


def test_key_files_are_private(tmp_path: Path) -> None:
    KeyRing.open(tmp_path)
    key = rotate(tmp_path)
    directory = keys_dir(tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / f"{key.kid}.json").stat().st_mode) == 0o600
    assert not [path for path in directory.iterdir() if path.suffix != ".json"]


def test_rotating_an_empty_ring_makes_one_key_that_signs_at_once(tmp_path: Path) -> None:
    key = rotate(tmp_path, activate_after=60, clock=lambda: NOW)
    assert key.activates == NOW
    assert [s.state for s in list_statuses(tmp_path, clock=lambda: NOW)] == ["active"]


def test_a_legacy_signing_key_is_imported_and_its_tokens_stay_valid(tmp_path: Path) -> None:
    legacy = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / LEGACY_KEY_FILE).write_bytes(
        legacy.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    old_token, _ = TokenIssuer("http://manager.test", legacy).issue(
        "c", audience="http://manager.test", scope="user", project="acme"
    )
    issuer = TokenIssuer("http://manager.test", KeyRing.open(tmp_path))
    assert issuer.kid == kid_of(legacy.public_key())
    assert not (tmp_path / LEGACY_KEY_FILE).exists()
    verifier = TokenVerifier("http://manager.test", "http://manager.test", keys=issuer.jwks())
    assert verifier.verify(old_token).sub == "c"


@pytest.mark.parametrize("damage", ["kid", "json", "curve"])
def test_a_bad_key_file_stops_the_ring(tmp_path: Path, damage: str) -> None:
    KeyRing.open(tmp_path)
    [path] = list(keys_dir(tmp_path).glob("*.json"))
    document = json.loads(path.read_text())
    if damage == "kid":
        document["kid"] = kid_of(ec.generate_private_key(ec.SECP256R1()).public_key())
        path.write_text(json.dumps(document))
    elif damage == "json":
        path.write_text("{")
    else:
        other = ec.generate_private_key(ec.SECP384R1())
        document["private_key"] = other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        path.write_text(json.dumps(document))
    with pytest.raises(KeyRingError):
        KeyRing.open(tmp_path)


# -- a running manager -----------------------------------------------------------------


def kid_in(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def published(manager: Manager) -> set[str]:
    answer = httpx.get(f"{manager.url}/.well-known/jwks.json")
    assert answer.headers["cache-control"] == "max-age=30"
    return {key["kid"] for key in answer.json()["keys"]}


KEY = ProofKey.generate()


def whoami(manager: Manager, token: str) -> httpx.Response:
    url = f"{manager.url}/v1/whoami"
    return httpx.get(url, headers=dpop(KEY, token, "GET", url))


def test_a_rotated_key_is_published_before_it_signs(manager: Manager) -> None:
    client, _ = manager.login("acme")
    assert client.token is not None
    old = kid_in(client.token)
    new = rotate(manager.settings.data_dir, activate_after=3600)
    assert published(manager) == {old, new.kid}
    client_id, secret = manager.new_client("acme")
    assert kid_in(manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token) == old


def test_after_a_rotation_new_tokens_use_the_new_key_and_old_ones_stay_valid(
    manager: Manager,
) -> None:
    client_id, secret = manager.new_client("acme")
    before = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    old = kid_in(before)
    new = rotate(manager.settings.data_dir, activate_after=0)
    time.sleep(max(0.0, new.activates - time.time()))  # a second later if `old` began now
    after = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    assert kid_in(after) == new.kid  # from the next request on, without a restart
    assert whoami(manager, after).status_code == 200
    assert whoami(manager, before).status_code == 200
    assert published(manager) == {old, new.kid}


def test_the_old_key_leaves_the_jwks_once_its_tokens_have_expired(
    start_manager: Callable[..., Manager],
) -> None:
    manager = start_manager(token_lifetime=2, token_leeway=0)
    client_id, secret = manager.new_client("acme")
    before = manager.client(dpop_key=KEY).fetch_token(client_id, secret).access_token
    old, exp = kid_in(before), jwt.decode(before, options={"verify_signature": False})["exp"]
    rotate(manager.settings.data_dir, activate_after=0)
    deadline = time.monotonic() + 60
    while old in published(manager):
        assert time.monotonic() < deadline, "the retired key is still published"
        time.sleep(0.2)
    assert time.time() >= exp  # never before the last token it signed expired
    refused = whoami(manager, before)
    assert refused.status_code == 401
    assert refused.json()["check"] in {"token-expired", "token-key"}


def operator(manager: Manager, *args: str) -> int:
    database = manager.settings.database_url
    return main(
        [
            "admin",
            "--data-dir",
            str(manager.settings.data_dir),
            *(["--database-url", database] if database else []),
            *args,
        ]
    )


def test_admin_keys_rotate_and_list(manager: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    [old] = published(manager)
    capsys.readouterr()
    assert operator(manager, "keys", "rotate", "--activate-after", "120") == 0
    out = capsys.readouterr().out
    new = out.split()[1]
    assert out.startswith(f"key {new} added: it signs from ")
    assert published(manager) == {old, new}
    assert operator(manager, "keys", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KID", "CREATED", "SIGNS_FROM", "STATE", "EXPIRES"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[old][5] == "active" and rows[new][5] == "next"
    with manager.sessions() as session:
        [entry] = [e for e in audit.entries(session) if e.action == "key.rotated"]
    assert (entry.actor, entry.target) == (audit.OPERATOR, f"key:{new}")
    details = json.loads(entry.details)
    assert details["kid"] == new and details["activates"] - details["created"] == 120
    assert "private" not in entry.details
