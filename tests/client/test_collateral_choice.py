"""Which collateral the client checks a quote with: the server's, its own PCCS's, or none.

A simulated platform's quote and collateral; the client's own PCCS is a fake PCCS
on loopback serving that platform's collateral.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cleanroom.attestation import TrustAnchor, verify_quote
from cleanroom.attestation.collateral import CollateralExpiredError
from cleanroom.attestation.errors import EvidenceError
from cleanroom.attestation.pccs import PccsError
from cleanroom.client.collateral import (
    COLLATERAL_CHECK,
    FROM_SERVER,
    CollateralUnavailableError,
    choose_collateral,
)
from cleanroom.client.profile import Profile, ProfileError
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.tee.measure import measure
from cleanroom.tee.reference import LocalMeasurement
from tests.attestation.fake_pccs import FakePccs

NOW = int(time.time())
DAY = 86400


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)


@pytest.fixture(scope="module")
def quote(platform: SimulatedPlatform) -> bytes:
    return platform.enclave(measure("attester").identity()).quote(bytes(64))


@pytest.fixture(scope="module")
def fresh(platform: SimulatedPlatform) -> str:
    return platform.collateral_json(now=NOW)


@pytest.fixture(scope="module")
def expired(platform: SimulatedPlatform, fresh: str) -> str:
    old = platform._issue_collateral(NOW - 40 * DAY)[0]
    return json.dumps(old)


@pytest.fixture
def own_pccs(platform: SimulatedPlatform, fresh: str) -> Iterator[FakePccs]:
    with FakePccs(json.loads(fresh), fmspc=platform.tcb.fmspc.hex()).serving() as pccs:
        yield pccs


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_the_servers_fresh_collateral_is_used(
    platform: SimulatedPlatform, quote: bytes, fresh: str, own_pccs: FakePccs
) -> None:
    chosen = choose_collateral(
        quote=quote, served=fresh, served_error=None, at=NOW, pccs_url=own_pccs.url
    )
    assert chosen.source == FROM_SERVER
    assert chosen.fallback_reason is None
    assert own_pccs.requests == []
    check = chosen.check()
    assert check.check == COLLATERAL_CHECK and "from the compute server" in check.actual
    trust = TrustAnchor.from_certificate(platform.root_certificate_der())
    verify_quote(quote, chosen.collateral, at=NOW, trust=trust)


def test_no_collateral_from_the_server_falls_back_to_your_pccs(
    quote: bytes, own_pccs: FakePccs
) -> None:
    reason = {"check": "pccs-unreachable", "message": "the PCCS did not answer"}
    chosen = choose_collateral(
        quote=quote, served=None, served_error=reason, at=NOW, pccs_url=own_pccs.url
    )
    assert chosen.source == f"your PCCS {own_pccs.url}"
    assert chosen.fallback_reason is not None
    assert "pccs-unreachable: the PCCS did not answer" in chosen.fallback_reason
    assert "used because the compute server sent no collateral" in chosen.check().detail


def test_expired_collateral_from_the_server_falls_back_to_your_pccs(
    quote: bytes, expired: str, own_pccs: FakePccs
) -> None:
    chosen = choose_collateral(
        quote=quote, served=expired, served_error=None, at=NOW, pccs_url=own_pccs.url
    )
    assert chosen.source.startswith("your PCCS")
    assert chosen.fallback_reason is not None and "collateral-expired" in chosen.fallback_reason


def test_expired_collateral_without_a_pccs_is_refused_with_the_part_named(
    quote: bytes, expired: str
) -> None:
    with pytest.raises(CollateralExpiredError) as caught:
        choose_collateral(quote=quote, served=expired, served_error=None, at=NOW, pccs_url=None)
    assert caught.value.check == "collateral-expired"
    assert "expired at" in caught.value.message
    assert caught.value.hint is not None and "--pccs-url" in caught.value.hint


def test_no_collateral_and_no_pccs_is_refused_clearly(quote: bytes) -> None:
    with pytest.raises(CollateralUnavailableError) as caught:
        choose_collateral(
            quote=quote,
            served=None,
            served_error={"check": "pccs-unreachable", "message": "no answer"},
            at=NOW,
            pccs_url=None,
        )
    error = caught.value
    assert error.check == "collateral-unavailable"
    assert "pccs-unreachable: no answer" in str(error)
    assert error.hint is not None and "cleanroom configure --pccs-url" in error.hint


def test_malformed_collateral_from_the_server_is_not_used(quote: bytes, own_pccs: FakePccs) -> None:
    with pytest.raises(EvidenceError):
        choose_collateral(quote=quote, served="{}", served_error=None, at=NOW, pccs_url=None)
    chosen = choose_collateral(
        quote=quote, served="{}", served_error=None, at=NOW, pccs_url=own_pccs.url
    )
    assert chosen.source.startswith("your PCCS")


def test_no_collateral_anywhere_names_both_reasons(quote: bytes) -> None:
    url = dead_url()
    with pytest.raises(CollateralUnavailableError) as caught:
        choose_collateral(
            quote=quote,
            served=None,
            served_error={"check": "pccs-response", "message": "HTTP 503"},
            at=NOW,
            pccs_url=url,
        )
    text = str(caught.value)
    assert "pccs-response: HTTP 503" in text
    assert f"your PCCS {url}: pccs-unreachable" in text


def test_only_your_own_pccs_never_the_servers(quote: bytes, fresh: str, own_pccs: FakePccs) -> None:
    chosen = choose_collateral(
        quote=quote,
        served=fresh,
        served_error=None,
        at=NOW,
        pccs_url=own_pccs.url,
        collateral_from="pccs",
    )
    assert chosen.source == f"your PCCS {own_pccs.url}"
    assert len(own_pccs.requests) == 4
    with pytest.raises(PccsError) as caught:
        choose_collateral(
            quote=quote,
            served=fresh,
            served_error=None,
            at=NOW,
            pccs_url=dead_url(),
            collateral_from="pccs",
        )
    assert caught.value.check == "pccs-unreachable"
    with pytest.raises(CollateralUnavailableError):
        choose_collateral(
            quote=quote, served=fresh, served_error=None, at=NOW, pccs_url=None,
            collateral_from="pccs",
        )  # fmt: skip


def test_your_pccs_serving_expired_collateral_is_refused(
    platform: SimulatedPlatform, quote: bytes, expired: str
) -> None:
    stale = FakePccs(json.loads(expired), fmspc=platform.tcb.fmspc.hex())
    with stale.serving(), pytest.raises(CollateralExpiredError) as caught:
        choose_collateral(
            quote=quote,
            served=None,
            served_error=None,
            at=NOW,
            pccs_url=stale.url,
            collateral_from="pccs",
        )
    assert caught.value.check == "collateral-expired"


def test_the_profile_keeps_the_pccs_and_refuses_pccs_only_without_one(tmp_path: Path) -> None:
    common = {
        "manager_url": "https://m",
        "client_id": "c",
        "client_secret": "s",
        "reference": LocalMeasurement(),
    }
    profile = Profile.create(
        "p", tmp_path, **common, pccs_url="https://pccs.example:8081/", collateral_from="pccs"
    )
    loaded = Profile.load("p", tmp_path)
    assert (loaded.config.pccs_url, loaded.config.collateral_from) == (
        "https://pccs.example:8081",
        "pccs",
    )
    assert profile.config == loaded.config
    with pytest.raises(ProfileError, match="--pccs-url"):
        Profile.create("q", tmp_path, **common, collateral_from="pccs")
    with pytest.raises(ProfileError):
        Profile.create("r", tmp_path, **common, pccs_url="ftp://pccs")
