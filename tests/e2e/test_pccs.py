"""Collateral from PCCSs across real processes: the compute server's PCCS is down,
then up; a user with no PCCS of her own is refused meanwhile, a user with one is not.

The simulated platform is created before the compute server starts, so that the
fake PCCSs (on loopback, PCCS API v4) can serve its collateral.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cleanroom.client import CleanRoomClient
from cleanroom.client.collateral import CollateralUnavailableError
from cleanroom.insecure.localstack import LocalStack
from cleanroom.insecure.simulated import SimulatedPlatform
from tests.attestation.fake_pccs import FakePccs
from tests.e2e.conftest import User, confinement_available, make_user
from tests.e2e.helpers import approve, deploy

ROUTES = ("tcb", "qe/identity", "pckcrl", "rootcacrl")


@dataclass
class Setting:
    stack: LocalStack
    server_pccs: FakePccs
    own_pccs: FakePccs
    alice: User
    bob: User


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setting]:
    if not confinement_available():
        pytest.skip("functions cannot be confined here (needs root, unshare, setpriv)")
    directory = tmp_path_factory.mktemp("pccs-stack")
    platform = SimulatedPlatform.init(
        directory / "compute" / "simulated-platform", now=int(time.time())
    )
    collateral = json.loads(platform.collateral_json(now=int(time.time())))
    fmspc = platform.tcb.fmspc.hex()
    server_fake = FakePccs(collateral, fmspc=fmspc, failing=dict.fromkeys(ROUTES, 503))
    with (
        server_fake.serving() as server_pccs,
        FakePccs(collateral, fmspc=fmspc).serving() as own_pccs,
        LocalStack(directory, compute_options=["--pccs-url", server_pccs.url]) as stack,
    ):
        stack.add_project("acme")
        stack.add_project("globex")
        alice = make_user(stack, directory, "alice", "acme")
        bob = make_user(stack, directory, "bob", "globex")
        bob.profile = bob.profile.updated(pccs_url=own_pccs.url)
        bob.client = CleanRoomClient(bob.profile)
        yield Setting(stack, server_pccs, own_pccs, alice, bob)


def test_collateral_from_the_servers_pccs_or_your_own(setting: Setting, tmp_path: Path) -> None:
    alice, bob = setting.alice, setting.bob
    deploy(alice, bob, tmp_path, "pccs-room")
    approve(bob, "pccs-room")

    # The compute server's PCCS refuses: it serves the quote with no collateral.
    with pytest.raises(CollateralUnavailableError) as caught:
        alice.client.attest("pccs-room")
    assert caught.value.check == "collateral-unavailable"
    assert "pccs-response" in str(caught.value) and "HTTP 503" in str(caught.value)
    # The hint is a command alice can paste as it is: her profile's.
    assert caught.value.hint is not None
    assert "cleanroom --profile alice configure --pccs-url" in caught.value.hint

    # Bob's profile names his own PCCS: he attests with its collateral.
    attested = bob.client.attest("pccs-room")
    first = attested.checks[0]
    assert first.check == "collateral"
    assert first.actual.startswith(f"from your PCCS {setting.own_pccs.url}")
    assert "the compute server sent no collateral" in first.detail
    assert len(setting.own_pccs.requests) == 4

    # The server's PCCS comes back: both take the server's collateral, fetched once.
    setting.server_pccs.failing.clear()
    before = len(setting.server_pccs.requests)
    for user in (alice, bob):
        check = user.client.attest("pccs-room").checks[0]
        assert check.actual.startswith("from the compute server"), check
    assert len(setting.server_pccs.requests) - before == 4
    assert len(setting.own_pccs.requests) == 4  # Bob's PCCS was not asked again
