"""The Controller serves collateral from a PCCS beside each quote, or null and why not."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from cleanroom.attestation.pccs import CollateralCache, PccsClient
from cleanroom.controller.collateral import add_collateral
from cleanroom.insecure.simulated import SimulatedPlatform
from cleanroom.protocol.encoding import b64u
from cleanroom.tee.measure import measure
from tests.attestation.fake_pccs import FakePccs

NOW = int(time.time())


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.init(tmp_path_factory.mktemp("platform"), now=NOW)


def evidence(platform: SimulatedPlatform) -> dict[str, Any]:
    """What the Attester process answers to /attest (its own collateral included)."""
    quote = platform.enclave(measure("attester").identity()).quote(bytes(64))
    return {"claims": {}, "quote": b64u(quote), "collateral": "the Attester's own"}


def test_collateral_from_the_pccs_replaces_the_attesters_own(
    platform: SimulatedPlatform,
) -> None:
    served = json.loads(platform.collateral_json(now=NOW))
    with FakePccs(served, fmspc=platform.tcb.fmspc.hex()).serving() as pccs:
        cache = CollateralCache(PccsClient(pccs.url))
        first = asyncio.run(add_collateral(evidence(platform), cache))
        second = asyncio.run(add_collateral(evidence(platform), cache))
    assert json.loads(first["collateral"]) == served
    assert second["collateral"] == first["collateral"]
    assert "collateral_error" not in first
    assert len(pccs.requests) == 4  # the second quote was served from the cache


def test_an_unreachable_pccs_gives_null_collateral_and_the_reason(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    answer = asyncio.run(add_collateral(evidence(platform), CollateralCache(PccsClient(url))))
    assert answer["collateral"] is None
    assert answer["collateral_error"]["check"] == "pccs-unreachable"
    assert url in json.dumps(answer["collateral_error"])


def test_a_malformed_quote_gives_null_collateral(platform: SimulatedPlatform) -> None:
    cache = CollateralCache(PccsClient("http://127.0.0.1:9"))
    answer = asyncio.run(add_collateral({"quote": "not a quote!", "claims": {}}, cache))
    assert answer["collateral"] is None
    assert answer["collateral_error"]["check"] in {"quote-format", "pck-certificate-chain"}
    assert asyncio.run(add_collateral(["not", "a", "dict"], cache)) == ["not", "a", "dict"]
