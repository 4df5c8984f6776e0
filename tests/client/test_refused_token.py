"""A kept token the server refuses at authentication is renewed once, and the request sent again.

After the operator disables and enables a client, or rotates its secret, every token
it was issued is revoked (401 ``token-revoked``). The client drops its kept tokens,
logs in again with its credentials and sends the refused request once more; a refused
login is then the error, and nothing else is sent again (h3's walk through the docs:
every command failed until the user ran ``cleanroom login``).

Real manager on loopback and the operator's ``cleanroom admin`` on its database; the
Controller's side with a stand-in that revokes a token as the real one does (refused
401 ``token-revoked`` before anything is done).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cleanroom.client.compute import ComputeClient
from cleanroom.client.errors import ServerError
from cleanroom.client.profile import Profile, RenewedToken
from cleanroom.client.renewal import renew_for_retry, token_refused
from cleanroom.protocol.bundle import pack
from cleanroom.protocol.framing import MEDIA_TYPE, encode_frames
from tests.auth import TOKEN_REVOKED
from tests.client.test_with_manager import deployed, parties, run  # noqa: F401 - fixtures
from tests.manager.conftest import Manager, StandInController, bind, operator, serve, url_of


@pytest.fixture
def database_url() -> None:
    """About the client: SQLite only."""
    return None


def kept_token(profile: Profile) -> str:
    record = json.loads((profile.directory / "token.json").read_text())
    token: str = record["tokens"]["manager"]["access_token"]
    return token


def test_a_token_revoked_by_disable_and_enable_is_renewed_by_the_next_command(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],  # noqa: F811
    manager: Manager,
) -> None:
    """`rooms` after the operator disabled and enabled the client: logged in again, exit 0
    (before: 401 token-revoked until the user ran cleanroom login)."""
    alice, _ = parties
    before = kept_token(alice)
    assert operator(manager, "client", "disable", alice.config.client_id) == 0
    assert operator(manager, "client", "enable", alice.config.client_id) == 0
    code, _, err = run(capsys, "--profile", "alice", "rooms")
    assert code == 0, err
    assert kept_token(Profile.load("alice")) != before  # the new login's, kept


def test_an_upload_stream_refused_for_its_token_is_uploaded_again_after_a_login(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],  # noqa: F811
    manager: Manager,
    function_dir: Path,
) -> None:
    """A bundle's upload, a stream the client does not send again itself: the command
    uploads it again once after a new login (with_manager, token checks only)."""
    alice, _ = parties
    assert operator(manager, "client", "disable", alice.config.client_id) == 0
    assert operator(manager, "client", "enable", alice.config.client_id) == 0
    capsys.readouterr()
    code, out, err = run(capsys, "--profile", "alice", "function", "upload", str(function_dir))
    assert code == 0, err
    assert out.startswith("fs://")


def test_the_sdks_download_of_a_function_alone_renews_a_revoked_token(
    parties: tuple[Profile, Profile],  # noqa: F811
    manager: Manager,
    function_dir: Path,
) -> None:
    """``download_function``, the one request of a kept client: after the operator
    disabled and enabled the client it is refused 401 token-revoked at its head, before
    any byte of the bundle, then sent once more after a new login (before: the refusal
    was the error, the only manager request the client did not renew)."""
    alice, _ = parties
    bundle = pack(function_dir)
    with alice.manager() as client:
        uploaded = client.upload_function(bundle).function_id
    before = kept_token(alice)
    assert operator(manager, "client", "disable", alice.config.client_id) == 0
    assert operator(manager, "client", "enable", alice.config.client_id) == 0
    with alice.manager() as client:
        assert client.token == before  # the kept token, which the manager now refuses
        assert client.download_function(uploaded) == bundle
        assert isinstance(client.token_source, RenewedToken)
        assert client.token_source.refusals == 1
    assert kept_token(alice) != before  # the new login's, kept


def test_the_sdks_download_of_a_function_to_a_file_renews_a_revoked_token(
    parties: tuple[Profile, Profile],  # noqa: F811
    manager: Manager,
    function_dir: Path,
    tmp_path: Path,
) -> None:
    """The same, writing the bundle into a file (what deploy's handler check reads), whose
    earlier bytes are dropped first (a command that downloads again after a new login
    writes into the same file)."""
    alice, _ = parties
    bundle = pack(function_dir)
    with alice.manager() as client:
        uploaded = client.upload_function(bundle).function_id
    assert operator(manager, "client", "disable", alice.config.client_id) == 0
    assert operator(manager, "client", "enable", alice.config.client_id) == 0
    target = tmp_path / "bundle.tar"
    target.write_bytes(b"an earlier attempt's bytes " * len(bundle))
    with alice.manager() as client, target.open("r+b") as file:
        assert client.download_function_to(uploaded, file) == len(bundle)
    assert target.read_bytes() == bundle


def test_a_refused_login_is_the_error_and_nothing_is_tried_again(
    capsys: pytest.CaptureFixture[str],
    parties: tuple[Profile, Profile],  # noqa: F811
    manager: Manager,
) -> None:
    """A disabled client: the kept token is refused (token-revoked), the new login too
    (invalid_client): that refusal is the error, in one line, after one login."""
    alice, _ = parties
    assert operator(manager, "client", "disable", alice.config.client_id) == 0
    code, _, err = run(capsys, "--profile", "alice", "rooms")
    assert code == 1
    assert err.startswith("error: manager: 401"), err
    assert "invalid_client" in err and "check the client id and secret" in err
    assert len(err.strip().splitlines()) == 1


# --- the Controller's side ---------------------------------------------------------------


@pytest.fixture
def revoking_controller() -> Iterator[tuple[str, list[str]]]:
    """A stand-in Controller that refuses the token ``revoked`` as the real one refuses a
    revoked token (401, check ``token-revoked``) and answers any other; every token seen."""
    seen: list[str] = []
    app = FastAPI()

    @app.get("/v1/rooms/{name}")
    def state(name: str, request: Request) -> JSONResponse:
        token = request.headers.get("authorization", "").removeprefix("DPoP ")
        seen.append(token)
        if token == "revoked":
            return JSONResponse(TOKEN_REVOKED, status_code=401)
        return JSONResponse({"name": name, "state": "ready"})

    @app.post("/v1/rooms/{name}/sessions/{session_id}/download")
    def download(name: str, session_id: str, request: Request) -> Response:
        refused = state(name, request)
        if refused.status_code != 200:
            return refused
        return Response(b"".join(encode_frames([b"record 1", b"record 2"])), media_type=MEDIA_TYPE)

    sock = bind()
    with serve(app, sock):
        yield url_of(sock), seen


class Source:
    """A token source as Profile.renewed_token: the kept token, then a new login's."""

    def __init__(self, kept: str, renewed: str) -> None:
        self.tokens = [kept]
        self.renewed = renewed
        self.refusals = 0

    def __call__(self) -> str:
        return self.tokens[-1]

    def refused(self) -> None:
        self.refusals += 1
        self.tokens.append(self.renewed)


def test_a_room_token_refused_by_the_controller_is_renewed_once(
    revoking_controller: tuple[str, list[str]],
    parties: tuple[Profile, Profile],  # noqa: F811
) -> None:
    url, seen = revoking_controller
    alice, _ = parties
    source = Source("revoked", "fresh")
    with ComputeClient(url, token=source, dpop_key=alice.proof_key) as compute:
        assert compute.state("room")["state"] == "ready"
    assert seen == ["revoked", "fresh"] and source.refusals == 1


def test_an_output_download_refused_for_its_token_is_renewed_before_any_record(
    revoking_controller: tuple[str, list[str]],
    parties: tuple[Profile, Profile],  # noqa: F811
) -> None:
    """The download of an output, a stream: refused at its head (no record came), it is
    sent once more with the renewed token (before: the refusal was the error)."""
    url, seen = revoking_controller
    alice, _ = parties
    source = Source("revoked", "fresh")
    with ComputeClient(url, token=source, dpop_key=alice.proof_key) as compute:
        assert list(compute.download("room", "session")) == [b"record 1", b"record 2"]
    assert seen == ["revoked", "fresh"] and source.refusals == 1


def test_a_room_token_refused_again_is_the_error(
    revoking_controller: tuple[str, list[str]],
    parties: tuple[Profile, Profile],  # noqa: F811
) -> None:
    """The renewed token refused too: that refusal is the error, nothing sent a third time."""
    url, seen = revoking_controller
    alice, _ = parties
    source = Source("revoked", "revoked")
    compute = ComputeClient(url, token=source, dpop_key=alice.proof_key)
    with compute, pytest.raises(ServerError) as refused:
        compute.state("room")
    assert (refused.value.status, refused.value.check) == (401, "token-revoked")
    assert seen == ["revoked", "revoked"] and source.refusals == 1


@pytest.fixture
def lying_controller() -> Iterator[tuple[str, list[str]]]:
    """A stand-in Controller that answers every request `401 token-revoked`, whatever the
    token (a hostile one may); every token seen."""
    seen: list[str] = []
    app = FastAPI()

    @app.get("/v1/rooms/{name}")
    def state(name: str, request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization", "").removeprefix("DPoP "))
        return JSONResponse(TOKEN_REVOKED, status_code=401)

    sock = bind()
    with serve(app, sock):
        yield url_of(sock), seen


def test_a_room_token_source_renews_after_one_refusal_only(
    lying_controller: tuple[str, list[str]],
    deployed: str,  # noqa: F811
    parties: tuple[Profile, Profile],  # noqa: F811
    controller: StandInController,
) -> None:
    """One source of room tokens (a command's requests to one room: `run --wait`'s polls)
    renews after one Controller refusal, not after each: every renewal is a revocation
    and a login with the client's secret, and a Controller refusing every poll spent the
    client's logins from its address (10 at once, then one every 2 s) within 10 polls, so
    that the client's other commands waited on 429 (h33)."""
    url, seen = lying_controller
    alice, _ = parties
    source = alice.renewed_token(resource=controller.url, room="overlap", project="acme")
    with ComputeClient(url, token=source, dpop_key=alice.proof_key) as compute:
        for _ in range(3):
            with pytest.raises(ServerError) as refused:
                compute.state("overlap")
            assert (refused.value.status, refused.value.check) == (401, "token-revoked")
    assert len(set(seen)) == 2, "renewed more than once"  # the first token and one renewal
    assert len(seen) == 4  # the first request sent again once, then one each


def test_a_fixed_token_is_not_renewed(
    revoking_controller: tuple[str, list[str]],
    parties: tuple[Profile, Profile],  # noqa: F811
) -> None:
    url, seen = revoking_controller
    alice, _ = parties
    compute = ComputeClient(url, token="revoked", dpop_key=alice.proof_key)
    with compute, pytest.raises(ServerError):
        compute.state("room")
    assert seen == ["revoked"]


def refusal(status: int, check: str | None) -> ServerError:
    return ServerError("manager", status, {"check": check} if check else {})


@pytest.mark.parametrize(
    ("status", "check", "content", "again"),
    [
        (401, "token-revoked", None, True),
        (401, "token-expired", b"body", True),
        (401, "token-client", "text", True),
        (401, "dpop-proof", None, False),  # a proof refused (a replay): not the token
        (401, None, None, False),  # invalid_client: a login refused
        (403, "token-scope", None, False),  # authenticated, not allowed
        (409, None, None, False),
        (401, "token-revoked", iter([b"stream"]), False),  # read once: not sent again
    ],
)
def test_only_a_token_refused_at_authentication_is_renewed(
    status: int, check: str | None, content: object, again: bool
) -> None:
    source = Source("kept", "renewed")
    request = {} if content is None else {"content": content}
    assert renew_for_retry(refusal(status, check), source, request) is again
    assert source.refusals == (1 if again else 0)
    assert token_refused(refusal(status, check)) is (status == 401 and "token-" in (check or ""))
    assert renew_for_retry(refusal(401, "token-revoked"), lambda: "fixed", {}) is False
