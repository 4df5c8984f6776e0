"""The user's profile: files and modes, isolation, approvals, policy and trust anchor, token."""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.parse
from pathlib import Path

import httpx
import pytest

from cleanroom.attestation import DEFAULT_ACCEPTED_STATUSES, TrustAnchor
from cleanroom.cleartext import CleartextSecret
from cleanroom.client import profile as profile_module
from cleanroom.client.manager import ManagerClient
from cleanroom.client.profile import (
    NotApprovedError,
    Profile,
    ProfileError,
    profile_dir,
    resolve_name,
    write_atomic,
)
from cleanroom.dpop import ProofKey, ProofVerifier
from cleanroom.errors import CheckFailed
from cleanroom.tee.measure import measure
from cleanroom.tee.reference import LocalMeasurement

MANAGER = "https://manager.test"
WORK_ID = "w" * 43
OTHER_WORK_ID = "v" * 43
FUNCTION = "fs://" + "f" * 43


def create(name: str | None = None, home: Path | None = None, **changes: object) -> Profile:
    arguments: dict[str, object] = {
        "manager_url": MANAGER,
        "client_id": "alice-client",
        "client_secret": "s3cret",
        "reference": LocalMeasurement(),
        **changes,
    }
    return Profile.create(name, home, **arguments)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -------------------------------------------------------------------- files


def test_round_trip(home: Path) -> None:
    created = create(project="acme")
    loaded = Profile.load()
    assert loaded.name == "default"
    assert loaded.directory == home / "profiles" / "default"
    assert loaded.config == created.config
    assert loaded.config.project == "acme"
    assert loaded.user_id == created.user_id
    assert loaded.client_secret == "s3cret"


def test_file_modes(home: Path) -> None:
    profile = create()
    assert mode(home) == 0o700
    assert mode(home / "profiles") == 0o700
    assert mode(profile.directory) == 0o700
    assert mode(profile.directory / "credentials.json") == 0o600
    assert mode(profile.directory / "user-key.pem") == 0o600
    assert b"BEGIN PRIVATE KEY" in (profile.directory / "user-key.pem").read_bytes()  # PKCS8


def test_no_temporary_files_are_left(home: Path) -> None:
    profile = create()
    profile.approve("room", WORK_ID, FUNCTION)
    assert sorted(path.name for path in profile.directory.iterdir()) == [
        "approvals.json",
        "config.json",
        "credentials.json",
        "user-key.pem",
    ]


def test_atomic_write_keeps_the_old_file_when_replacing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.json"
    target.write_bytes(b"old")

    def broken_replace(source: str, destination: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["file.json"]


def test_atomic_write_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    write_atomic(target, b"x", 0o600)
    assert mode(target) == 0o600
    assert target.read_bytes() == b"x"


def test_reconfigure_keeps_the_user_key(home: Path) -> None:
    first = create()
    second = create(client_secret="rotated")
    assert second.user_id == first.user_id
    assert Profile.load().client_secret == "rotated"


def test_new_key_replaces_the_user_key(home: Path) -> None:
    first = create()
    second = create(new_key=True)
    assert second.user_id != first.user_id
    assert Profile.load().user_id == second.user_id


def test_two_profiles_in_one_home_are_isolated(home: Path) -> None:
    alice = create("alice")
    bob = create("bob", client_id="bob-client")
    alice.approve("room", WORK_ID, FUNCTION)
    assert alice.user_id != bob.user_id
    assert Profile.load("bob").approval("room") is None
    assert Profile.load("alice").approval("room") is not None
    assert Profile.load("bob").config.client_id == "bob-client"


def test_two_homes_are_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEANROOM_PROFILE", raising=False)
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "one"))
    one = create()
    one.approve("room", WORK_ID, FUNCTION)
    monkeypatch.setenv("CLEANROOM_HOME", str(tmp_path / "two"))
    with pytest.raises(ProfileError):
        Profile.load()
    two = create()
    assert two.user_id != one.user_id
    assert two.approval("room") is None
    assert Profile.load(home=tmp_path / "one").user_id == one.user_id


def test_profile_name_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEANROOM_PROFILE", "work")
    created = create()
    assert created.name == "work"
    assert created.directory == home / "profiles" / "work"
    assert Profile.load().user_id == created.user_id
    assert resolve_name("explicit") == "explicit"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 65])
def test_bad_profile_names_are_refused(home: Path, name: str) -> None:
    if name == "":
        # An empty name means "not given": the default profile.
        assert resolve_name(name) == "default"
        return
    with pytest.raises(ProfileError, match="bad profile name"):
        profile_dir(name)


def test_missing_profile(home: Path) -> None:
    with pytest.raises(ProfileError) as error:
        Profile.load("x")
    assert str(error.value) == (
        "profile 'x' is not configured: run cleanroom --profile x configure"
    )
    with pytest.raises(ProfileError) as error:
        Profile.load()
    assert str(error.value) == "profile 'default' is not configured: run cleanroom configure"


def test_malformed_config_is_refused(home: Path) -> None:
    profile = create()
    path = profile.directory / "config.json"
    document = json.loads(path.read_text())
    document["surprise"] = True
    path.write_text(json.dumps(document))
    with pytest.raises(ProfileError, match="surprise"):
        Profile.load()
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        Profile.load()


def test_secret_readable_by_others_is_refused(home: Path) -> None:
    profile = create()
    (profile.directory / "credentials.json").chmod(0o644)
    with pytest.raises(ProfileError, match=r"accessible by others \(mode 0644\)"):
        _ = Profile.load().client_secret


def test_user_key_readable_by_others_is_refused(home: Path) -> None:
    profile = create()
    (profile.directory / "user-key.pem").chmod(0o640)
    with pytest.raises(ProfileError, match=re.escape("user-key.pem is accessible by others")):
        _ = Profile.load().user_key


def test_missing_user_key(home: Path) -> None:
    profile = create()
    (profile.directory / "user-key.pem").unlink()
    with pytest.raises(ProfileError, match=re.escape("user-key.pem is missing")):
        _ = Profile.load().user_id


# -------------------------------------------------------------------- approvals


def test_approve_and_require(home: Path) -> None:
    profile = create()
    approval = profile.approve("overlap", WORK_ID, FUNCTION, at=1_700_000_000)
    assert approval.approved_at == 1_700_000_000
    assert Profile.load().approval("overlap") == approval
    assert Profile.load().require_approval("overlap", WORK_ID) == approval
    assert Profile.load().approval("other") is None


def test_reapproving_replaces_the_pin(home: Path) -> None:
    profile = create()
    profile.approve("overlap", WORK_ID, FUNCTION)
    profile.approve("overlap", OTHER_WORK_ID, FUNCTION)
    assert profile.require_approval("overlap", OTHER_WORK_ID).work_id == OTHER_WORK_ID


def test_an_approval_keeps_its_rooms_project_and_worker(home: Path) -> None:
    """The project says which room of the name was approved; the Worker pin stays while
    the same Work-ID is approved again, and goes with another Work-ID."""
    profile = create()
    profile.approve("overlap", WORK_ID, FUNCTION, project="acme")
    assert profile.pin_worker("overlap", WORK_ID, "W" * 43) == "W" * 43
    assert profile.pin_worker("overlap", OTHER_WORK_ID, "V" * 43) is None
    approval = Profile.load().approval("overlap")
    assert approval is not None and (approval.project, approval.worker_id) == ("acme", "W" * 43)
    profile.approve("overlap", WORK_ID, FUNCTION, project="acme")
    assert profile.pin_worker("overlap", WORK_ID, "V" * 43) == "W" * 43
    profile.approve("overlap", OTHER_WORK_ID, FUNCTION, project="acme")
    assert Profile.load().approval("overlap").worker_id is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "record",
    [{"project": "Not A Project"}, {"worker_id": "short"}, {"project": 7}],
    ids=["project-name", "worker-id", "project-type"],
)
def test_an_approvals_project_and_worker_are_checked_when_read(
    home: Path, record: dict[str, object]
) -> None:
    profile = create()
    document = {"work_id": WORK_ID, "function_id": FUNCTION, "approved_at": 1, **record}
    (profile.directory / "approvals.json").write_text(json.dumps({"overlap": document}))
    with pytest.raises(ProfileError, match=re.escape("approvals.json: room 'overlap'")):
        profile.approval("overlap")


def test_not_approved_at_all(home: Path) -> None:
    profile = create()
    with pytest.raises(NotApprovedError) as error:
        profile.require_approval("overlap", WORK_ID)
    assert isinstance(error.value, CheckFailed)
    assert error.value.check == "work-id-approved"
    assert error.value.expected == "an approved Work-ID"
    assert error.value.actual == WORK_ID
    assert "run `cleanroom inspect overlap` then `cleanroom approve overlap`" in str(error.value)


def test_approved_another_work_id(home: Path) -> None:
    profile = create()
    profile.approve("overlap", WORK_ID, FUNCTION)
    with pytest.raises(NotApprovedError) as error:
        profile.require_approval("overlap", OTHER_WORK_ID)
    assert error.value.check == "work-id-approved"
    assert error.value.expected == WORK_ID
    assert error.value.actual == OTHER_WORK_ID
    # The review of what changed since the approval, not the whole room again (h22).
    assert (
        "run `cleanroom inspect overlap --against approved` (what changed since you approved "
        "it) then `cleanroom approve overlap`"
    ) in str(error.value)


def test_malformed_approvals_are_refused(home: Path) -> None:
    profile = create()
    (profile.directory / "approvals.json").write_text('{"overlap": {"work_id": 1}}')
    with pytest.raises(ProfileError, match=re.escape("approvals.json: room 'overlap'")):
        profile.approval("overlap")


# -------------------------------------------------------------------- attestation policy


def test_default_policy_is_this_release(home: Path) -> None:
    attester, worker = measure("attester"), measure("worker")
    profile = create()
    policy = profile.attestation_policy()
    assert policy.mrenclaves == frozenset({attester.mr_enclave})
    assert policy.mrsigner == attester.mr_signer
    assert policy.isv_prod_id == attester.isv_prod_id
    assert policy.min_isv_svn == attester.isv_svn
    assert policy.accepted_statuses == DEFAULT_ACCEPTED_STATUSES
    assert policy.accepted_advisories is None
    assert policy.allow_debug is False
    assert policy.report_data is None
    assert profile.expected_worker_mrenclaves == frozenset({worker.mr_enclave})


def test_configured_policy(home: Path) -> None:
    profile = create(
        attester_mrenclaves=["aa" * 32, "0x" + "BB" * 32],
        attester_mrsigner=bytes(32),
        worker_mrenclaves=["cc" * 32],
        accepted_tcb_statuses=["UpToDate"],
        accepted_advisories=["INTEL-SA-00615"],
        isv_prod_id=7,
        min_isv_svn=3,
    )
    policy = Profile.load().attestation_policy()
    assert policy.mrenclaves == frozenset({bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)})
    assert policy.mrsigner == bytes(32)
    assert policy.accepted_statuses == frozenset({"UpToDate"})
    assert policy.accepted_advisories == frozenset({"INTEL-SA-00615"})
    assert policy.isv_prod_id == 7
    assert policy.min_isv_svn == 3
    assert profile.expected_worker_mrenclaves == frozenset({bytes.fromhex("cc" * 32)})


def test_empty_advisory_list_accepts_none(home: Path) -> None:
    create(accepted_advisories=[])
    assert Profile.load().attestation_policy().accepted_advisories == frozenset()


def test_bad_measurement_is_refused(home: Path) -> None:
    with pytest.raises(ProfileError, match="Attester MRENCLAVE must be 32 bytes"):
        create(attester_mrenclaves=["abcd"])
    assert not (home / "profiles" / "default" / "config.json").exists()


def test_unknown_tcb_status_is_refused(home: Path) -> None:
    with pytest.raises(ProfileError, match="unknown TCB status"):
        create(accepted_tcb_statuses=["Uptodate"])
    assert not (home / "profiles" / "default" / "config.json").exists()


def test_bad_manager_url_is_refused(home: Path) -> None:
    with pytest.raises(ProfileError, match="manager_url"):
        create(manager_url="manager.test")


@pytest.mark.parametrize(
    "url",
    ["http://manager.test", "http://10.0.0.7:8080", "http://127.0.0.1.example.com",
     "http://localhost.example.com"],
)  # fmt: skip
def test_a_manager_the_secret_would_reach_in_the_clear_is_refused(home: Path, url: str) -> None:
    with pytest.raises(CleartextSecret) as caught:
        create(manager_url=url)
    assert caught.value.check == "manager-url" and caught.value.exit_code == 2
    assert not (home / "profiles" / "default" / "config.json").exists()
    # Nor is the secret sent there by a profile that holds such a URL already.
    sent: list[httpx.Request] = []
    manager = ManagerClient(url, dpop_key=ProofKey.generate(), transport=httpx.MockTransport(
        lambda request: sent.append(request) or httpx.Response(500)))  # fmt: skip
    with pytest.raises(CleartextSecret):
        manager.fetch_token("alice-client", "s3cret")
    assert sent == []


@pytest.mark.parametrize(
    "url", ["https://manager.test", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:1"]
)
def test_a_manager_over_tls_or_on_this_machine_is_taken(home: Path, url: str) -> None:
    assert create(manager_url=url).config.manager_url == url


# -------------------------------------------------------------------- trust anchor


def test_default_trust_anchor_is_intel(home: Path) -> None:
    profile = create()
    assert profile.simulated is False
    assert profile.trust_anchor() == TrustAnchor.intel_production()
    assert not (profile.directory / "simulator-root.pem").exists()


def test_simulator_root_only_when_configured(home: Path, simulator_root: Path) -> None:
    expected = TrustAnchor.from_certificate(simulator_root.read_bytes())
    profile = create(simulator_root=simulator_root.read_bytes())
    assert profile.simulated is True
    anchor = Profile.load().trust_anchor()
    assert anchor.is_intel_production is False
    assert anchor.fingerprint == expected.fingerprint
    assert (profile.directory / "simulator-root.pem").read_bytes().startswith(b"-----BEGIN")
    # Reconfiguring without it goes back to Intel's root and removes the copy.
    again = create()
    assert again.simulated is False
    assert again.trust_anchor() == TrustAnchor.intel_production()
    assert not (again.directory / "simulator-root.pem").exists()


def test_swapped_simulator_root_is_refused(
    home: Path, simulator_root: Path, tmp_path: Path
) -> None:
    profile = create(simulator_root=simulator_root.read_bytes())
    other = create("other", simulator_root=_other_root(tmp_path))
    (profile.directory / "simulator-root.pem").write_bytes(
        (other.directory / "simulator-root.pem").read_bytes()
    )
    with pytest.raises(ProfileError, match="changed since it was configured"):
        Profile.load().trust_anchor()


def test_missing_simulator_root_is_refused(home: Path, simulator_root: Path) -> None:
    profile = create(simulator_root=simulator_root.read_bytes())
    (profile.directory / "simulator-root.pem").unlink()
    with pytest.raises(ProfileError, match=re.escape("simulator-root.pem cannot be read")):
        Profile.load().trust_anchor()


def test_simulator_root_that_is_not_a_certificate(home: Path) -> None:
    with pytest.raises(ProfileError, match="not a root certificate"):
        create(simulator_root=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def _other_root(tmp_path: Path) -> bytes:
    import time

    from cleanroom.insecure.simulated import SimulatedPlatform

    platform = SimulatedPlatform.init(tmp_path / "other-platform", now=int(time.time()))
    return platform.root_certificate_pem().encode()


# -------------------------------------------------------------------- token cache


class TokenEndpoint:
    """The manager's token endpoint, counting logins (the rest is tested against a real one):
    it checks each request's DPoP proof and remembers the forms it was sent."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.logins = 0
        self.expires_in = expires_in
        self.forms: list[dict[str, str]] = []
        self.keys: list[str] = []
        self.proofs = ProofVerifier()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/oauth/token"
        self.keys.append(
            self.proofs.verify(
                request.headers.get_list("dpop"), method="POST", url=str(request.url)
            )
        )
        self.forms.append(dict(urllib.parse.parse_qsl(request.content.decode())))
        self.logins += 1
        return httpx.Response(
            200,
            json={
                "access_token": f"token-{self.logins}",
                "token_type": "DPoP",
                "expires_in": self.expires_in,
            },
        )


def test_token_is_cached_until_close_to_expiry(home: Path) -> None:
    profile = create()
    endpoint = TokenEndpoint(expires_in=3600)
    transport = httpx.MockTransport(endpoint)
    start = profile_module.time.time()
    with profile.manager(transport=transport, clock=lambda: start) as manager:
        assert manager.token == "token-1"
    assert mode(profile.directory / "token.json") == 0o600
    with profile.manager(transport=transport, clock=lambda: start + 3000) as manager:
        assert manager.token == "token-1"
    assert endpoint.logins == 1
    # Within the 60 s margin of its expiry the cached token is not used.
    with profile.manager(transport=transport, clock=lambda: start + 3600 - 59) as manager:
        assert manager.token == "token-2"
    assert endpoint.logins == 2
    assert profile.access_token(transport=transport, clock=lambda: start + 10) == "token-2"
    assert profile.access_token(transport=transport, clock=lambda: start + 3600) == "token-3"
    assert endpoint.logins == 3
    # Every token bound to the profile's one DPoP key, which is private.
    assert set(endpoint.keys) == {profile.proof_key.jkt}
    assert mode(profile.directory / "dpop-key.pem") == 0o600


def test_a_kept_token_past_any_clock_is_ignored_not_a_crash(home: Path) -> None:
    """A token.json from an earlier version, which took any expires_in, may hold an
    expiry past any float: the margin's arithmetic ended every command in
    OverflowError. Such a cache is ignored, and the command logs in again (h10)."""
    profile = create()
    endpoint = TokenEndpoint()
    transport = httpx.MockTransport(endpoint)
    assert profile.access_token(transport=transport) == "token-1"
    path = profile.directory / "token.json"
    kept = json.loads(path.read_text())
    kept["tokens"]["manager"]["expires_at"] = 10**400
    path.write_text(json.dumps(kept))
    assert profile.access_token(transport=transport) == "token-2"
    assert endpoint.logins == 2


def test_one_token_per_resource_and_room(home: Path) -> None:
    profile = create()
    endpoint = TokenEndpoint()
    transport = httpx.MockTransport(endpoint)
    server = "http://compute-1.test:8081"

    def token(**resource: str) -> str:
        return profile.access_token(transport=transport, **resource)

    manager_token = token()
    overlap = token(resource=server, room="overlap", project="acme")
    join = token(resource=server, room="join", project="acme")
    assert len({manager_token, overlap, join}) == 3
    assert token(resource=server, room="overlap", project="acme") == overlap  # cached
    assert token() == manager_token
    assert endpoint.logins == 3
    assert endpoint.forms[1]["resource"] == server
    assert (endpoint.forms[1]["room"], endpoint.forms[1]["project"]) == ("overlap", "acme")
    assert "resource" not in endpoint.forms[0]
    cached = json.loads((profile.directory / "token.json").read_text())
    assert cached["jkt"] == profile.proof_key.jkt
    assert sorted(cached["tokens"]) == [
        f"{server} acme/join",
        f"{server} acme/overlap",
        "manager",
    ]


def test_a_room_token_is_kept_for_its_room_not_for_the_next_room_of_its_name(
    home: Path,
) -> None:
    """A room token names the room's project and name; deleting the room revokes it, and
    a room of that name deployed after is another room (another Work-ID). The token kept
    for the first was used for the second until its revocation reached the Controller,
    which then refused it, an upload too (never sent twice): h17's red team."""
    profile = create()
    endpoint = TokenEndpoint()
    transport = httpx.MockTransport(endpoint)
    server = "http://compute-1.test:8081"

    def token(work_id: str) -> str:
        return profile.renewed_token(
            resource=server, room="overlap", project="acme", work_id=work_id, transport=transport
        )()

    first = token(WORK_ID)
    assert token(WORK_ID) == first  # kept for its room
    assert token(OTHER_WORK_ID) != first  # the next room of the name gets its own
    assert endpoint.logins == 2


def test_tokens_bound_to_another_key_are_not_used(home: Path) -> None:
    profile = create()
    endpoint = TokenEndpoint()
    transport = httpx.MockTransport(endpoint)
    first = profile.access_token(transport=transport)
    (profile.directory / "dpop-key.pem").unlink()  # a new key: the cached token is useless
    again = profile_module.Profile.load(profile.name)
    assert again.proof_key.jkt != profile.proof_key.jkt
    assert again.access_token(transport=transport) != first
    assert endpoint.logins == 2


def test_the_dpop_key_is_created_once_and_must_be_private(home: Path) -> None:
    profile = create()
    jkt = profile.proof_key.jkt
    assert profile_module.Profile.load(profile.name).proof_key.jkt == jkt  # the same key
    (profile.directory / "dpop-key.pem").chmod(0o644)
    with pytest.raises(ProfileError, match="accessible by others"):
        _ = profile_module.Profile.load(profile.name).proof_key


def test_token_of_another_client_is_not_used(home: Path) -> None:
    profile = create()
    endpoint = TokenEndpoint()
    transport = httpx.MockTransport(endpoint)
    profile.manager(transport=transport).close()
    other = create(client_id="another-client")  # reconfiguring drops the cache, too
    assert not (other.directory / "token.json").exists()
    other.manager(transport=transport).close()
    assert endpoint.logins == 2
