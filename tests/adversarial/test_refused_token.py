"""A hostile Controller that says a room token was refused (401 ``token-…``), on a real stack.

The client renews a token a server refused at authentication and sends the request once
more (cleanroom.client.renewal). From a Controller that refusal is its own word: it may
say it of any token it is shown. Before, the client then revoked at the manager every
token its profile kept, the manager's own and every other room's, and dropped them: one
lie logged the user out everywhere, and every other command of the profile (another
room, on another Controller) was refused in its turn (left open by h31).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jwt
from sqlalchemy import select

from cleanroom.client.manager import ManagerClient
from cleanroom.insecure.localstack import LocalStack
from cleanroom.manager.database import RevokedToken, open_database
from cleanroom.manager.settings import default_database_url
from tests.adversarial.proxy import Message, TamperingProxy
from tests.auth import TOKEN_REVOKED
from tests.e2e.conftest import User
from tests.e2e.helpers import deploy


def revoked_jtis(stack: LocalStack) -> set[str]:
    sessions = open_database(default_database_url(stack.manager_dir))
    with sessions() as session:
        return set(session.scalars(select(RevokedToken.jti)))


def jti_of(token: str) -> str:
    jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
    return jti


def kept_tokens(user: User) -> dict[str, str]:
    record = json.loads((user.profile.directory / "token.json").read_text())
    return {key: kept["access_token"] for key, kept in record["tokens"].items()}


def test_a_controllers_refusal_of_a_room_token_ends_that_token_only(
    hostile_stack: tuple[LocalStack, TamperingProxy],
    proxy: TamperingProxy,
    alice: User,
    bob: User,
    tmp_path: Path,
) -> None:
    """The Controller answers Alice's first request about one room `401 token-revoked`
    without relaying it: the client revokes and drops that room's token, renews it and
    asks again (relayed: the answer); her manager token and her other room's token stay
    kept and good (before: all three were revoked at the manager)."""
    stack, _ = hostile_stack
    for name in ("refused-here", "elsewhere"):
        deploy(alice, bob, tmp_path, name)
    try:
        expected = alice.client.state("elsewhere")
        before = kept_tokens(alice)
        manager_token = before["manager"]
        (elsewhere,) = (t for key, t in before.items() if key.split()[1:2] == ["acme/elsewhere"])
        lied: list[str] = []

        def refuse_once(message: Message) -> None:
            if not lied and re.search(r"/v1/rooms/refused-here$", message.path):
                lied.append(message.headers["authorization"].removeprefix("DPoP "))
                message.relay = False
                message.status, message.response = 401, json.dumps(TOKEN_REVOKED).encode()

        proxy.on_request = refuse_once
        assert alice.client.state("refused-here").keys() == expected.keys()  # asked again
        (refused,) = lied
        after = kept_tokens(alice)
        revoked = revoked_jtis(stack)
        assert jti_of(refused) in revoked  # the token the Controller saw and refused
        assert refused not in after.values()
        assert jti_of(manager_token) not in revoked, "the manager token was revoked"
        assert jti_of(elsewhere) not in revoked, "another room's token was revoked"
        assert after["manager"] == manager_token
        assert elsewhere in after.values()
        with ManagerClient(
            stack.manager_url, token=manager_token, dpop_key=alice.profile.proof_key
        ) as manager:
            assert manager.whoami()["user_id"] == alice.user_id  # still good
    finally:
        proxy.reset()
        for name in ("refused-here", "elsewhere"):
            alice.client.delete(name)
