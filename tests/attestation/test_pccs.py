"""Collateral from a PCCS (API v4) and its cache, against a fake PCCS on loopback.

The fake serves the recorded real collateral of ../shared/vectors/sgx-dcap-qvl (and,
in another test module, a simulated platform's) in the shapes Intel's PCS v4 uses.
dcap-qvl's own fetcher reads the same fake, so the fake is checked against a third
party's idea of a PCCS, and our client against dcap-qvl's.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cleanroom.attestation import (
    AttestationPolicy,
    QuoteSignatureError,
    TrustAnchor,
    appraise_quote,
)
from cleanroom.attestation.collateral import CollateralExpiredError, check_fresh
from cleanroom.attestation.errors import EvidenceError
from cleanroom.attestation.pccs import (
    CollateralCache,
    PccsClient,
    PccsError,
    PlatformKey,
    platform_key,
)
from tests.attestation.fake_pccs import FakePccs

NOW = 1752919277  # the recorded collateral's window ends one second later
STATUS = "ConfigurationAndSWHardeningNeeded"
FMSPC = "00A067110000"
ACCEPTING = AttestationPolicy(accepted_statuses=frozenset({"UpToDate", STATUS}))


@pytest.fixture(scope="module")
def quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "sgx-dcap-qvl" / "sgx_quote").read_bytes()


@pytest.fixture(scope="module")
def recorded(vectors_dir: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (vectors_dir / "sgx-dcap-qvl" / "sgx_quote_collateral.json").read_text()
    )
    return document


@pytest.fixture
def pccs(recorded: dict[str, Any]) -> Iterator[FakePccs]:
    with FakePccs(dict(recorded), fmspc=FMSPC).serving() as fake:
        yield fake


def test_the_platform_key_comes_from_the_pck_certificate(quote: bytes) -> None:
    assert platform_key(quote) == PlatformKey(fmspc=bytes.fromhex(FMSPC), ca="processor")


def test_collateral_from_the_pccs_is_the_recorded_collateral(
    pccs: FakePccs, quote: bytes, recorded: dict[str, Any]
) -> None:
    with PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    assert json.loads(collateral.to_json()) == recorded
    appraisal = appraise_quote(
        quote, collateral, at=NOW, trust=TrustAnchor.intel_production(), policy=ACCEPTING
    )
    assert appraisal.quote.status == STATUS
    routes = sorted(urllib.parse.urlsplit(path).path.rsplit("/v4/", 1)[1] for path in pccs.requests)
    assert routes == ["pckcrl", "qe/identity", "rootcacrl", "tcb"]
    assert f"/sgx/certification/v4/tcb?fmspc={FMSPC}" in pccs.requests
    assert "/sgx/certification/v4/pckcrl?ca=processor&encoding=der" in pccs.requests


def test_dcap_qvls_own_fetcher_agrees_with_the_fake_and_with_ours(
    pccs: FakePccs, quote: bytes
) -> None:
    async def fetch() -> dcap_qvl.QuoteCollateralV3:
        return await dcap_qvl.get_collateral(pccs.url, quote)

    theirs = asyncio.run(fetch())
    with PccsClient(pccs.url + "/sgx/certification/v4/") as client:  # either form of URL
        ours = client.for_quote(quote)
    mine, other = json.loads(ours.to_json()), json.loads(theirs.to_json())
    other.pop("pck_certificate_chain", None)
    assert mine == other


def test_the_collateral_windows_are_named_when_expired(pccs: FakePccs, quote: bytes) -> None:
    with PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    validity = check_fresh(collateral, NOW)
    assert validity.not_after == NOW + 1
    with pytest.raises(CollateralExpiredError) as caught:
        check_fresh(collateral, NOW + 1)
    assert caught.value.check == "collateral-expired"
    assert "qe_identity" in str(caught.value)  # the first part to expire
    with pytest.raises(CollateralExpiredError) as caught:
        check_fresh(collateral, 1750000000)
    assert caught.value.check == "collateral-not-yet-valid"


# ------------------------------------------------------------ unusable PCCS answers


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_pccs_is_named(quote: bytes) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with PccsClient(url, timeout=2) as client, pytest.raises(PccsError) as caught:
        client.for_quote(quote)
    assert caught.value.check == "pccs-unreachable"
    assert url in str(caught.value)


def test_a_silent_pccs_times_out(quote: bytes) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with PccsClient(url, timeout=0.5) as client, pytest.raises(PccsError) as caught:
            client.for_quote(quote)
    assert caught.value.check == "pccs-unreachable"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("route", ["tcb", "qe/identity", "pckcrl", "rootcacrl"])
def test_a_refusing_route_is_named(pccs: FakePccs, quote: bytes, route: str) -> None:
    pccs.failing[route] = 503
    with PccsClient(pccs.url) as client, pytest.raises(PccsError) as caught:
        client.for_quote(quote)
    assert caught.value.check == "pccs-response"
    assert route in str(caught.value)
    assert "HTTP 503" in str(caught.value)


def _answer(pccs: FakePccs, route: str, **changes: Any) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = pccs.answer(route, {"fmspc": [FMSPC], "ca": ["processor"],
                                                "encoding": ["der"]})  # fmt: skip
    return changes.get("status", status), changes.get("headers", headers), changes.get("body", body)


@pytest.mark.parametrize(
    ("route", "change"),
    [
        ("tcb", {"headers": {}}),
        ("qe/identity", {"headers": {"SGX-Enclave-Identity-Issuer-Chain": "not%20pem"}}),
        ("pckcrl", {"headers": {}}),
        ("tcb", {"body": b"not json"}),
        ("tcb", {"body": b'{"tcbInfo":{}}'}),
        ("tcb", {"body": b'{"tcbInfo":{},"signature":"00"}'}),
        ("tcb", {"body": b'{"tcbInfo":{},"tcbInfo":{},"signature":"' + b"00" * 64 + b'"}'}),
        ("qe/identity", {"body": b'{"enclaveIdentity":"x","signature":"' + b"00" * 64 + b'"}'}),
        ("pckcrl", {"body": b"not a crl"}),
        ("rootcacrl", {"body": b"30zz"}),
        ("rootcacrl", {"body": b"0" * (1 << 20 + 1)}),
    ],
    ids=[
        "tcb-no-chain", "qe-chain-not-pem", "pckcrl-no-chain", "tcb-not-json", "tcb-unsigned",
        "tcb-short-signature", "tcb-duplicate-member", "qe-not-an-object", "pckcrl-not-crl",
        "rootcacrl-bad-hex", "too-large",
    ],
)  # fmt: skip
def test_unusable_answers_are_refused(
    pccs: FakePccs, quote: bytes, route: str, change: dict[str, Any]
) -> None:
    pccs.answers[route] = _answer(pccs, route, **change)
    with PccsClient(pccs.url) as client, pytest.raises(PccsError) as caught:
        client.for_quote(quote)
    assert caught.value.check == "pccs-response"


def _gzipped(body: bytes, layers: int) -> bytes:
    for _ in range(layers):
        body = gzip.compress(body, compresslevel=9, mtime=0)
    return body


@pytest.mark.parametrize("bomb", [False, True], ids=["genuine-gzip", "gzip-bomb"])
def test_an_answer_in_a_content_coding_is_refused_unread(
    pccs: FakePccs, quote: bytes, bomb: bool
) -> None:
    """The client asks for no coding, and reads none: httpx inflates each part of an
    answer whole, through every coding it names, before the size bound counts it
    ("gzip, gzip" of a few hundred bytes is 64 MiB in memory at once; another layer, any
    size). Before, the genuine one was read and the bomb refused only once inflated."""
    status, headers, plain = _answer(pccs, "tcb")
    # The genuine TCB info compressed once, or 64 MiB of zeros twice (a few hundred bytes)
    sent, coding = (
        (_gzipped(b"\0" * (64 << 20), 2), "gzip, gzip") if bomb else (_gzipped(plain, 1), "gzip")
    )
    pccs.answers["tcb"] = (status, {**headers, "Content-Encoding": coding}, sent)
    with PccsClient(pccs.url) as client, pytest.raises(PccsError) as caught:
        client.for_quote(quote)
    assert caught.value.check == "pccs-response"
    assert caught.value.actual == f"Content-Encoding: {coding}", caught.value
    assert "in a content coding it was not asked for" in str(caught.value)
    assert pccs.accepted and set(pccs.accepted) == {"identity"}


def test_tcb_info_for_another_fmspc_is_refused(pccs: FakePccs, quote: bytes) -> None:
    status, headers, body = _answer(pccs, "tcb")
    pccs.answers["tcb"] = (status, headers, body.replace(FMSPC.encode(), b"00906ED50000"))
    with PccsClient(pccs.url) as client, pytest.raises(PccsError) as caught:
        client.for_quote(quote)
    assert caught.value.check == "pccs-response"
    assert "00906ED50000" in str(caught.value)


def test_the_signed_members_are_cut_out_byte_for_byte(
    pccs: FakePccs, quote: bytes, recorded: dict[str, Any]
) -> None:
    """Whitespace around members is fine; inside the signed member it breaks the signature."""
    status, headers, _body = _answer(pccs, "tcb")
    signature = recorded["tcb_info_signature"]
    spaced = ' { "signature" : "' + signature + '" ,\n "tcbInfo" : ' + recorded["tcb_info"] + " }\n"
    pccs.answers["tcb"] = (status, headers, spaced.encode())
    with PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    assert collateral.tcb_info == recorded["tcb_info"]
    appraise_quote(
        quote, collateral, at=NOW, trust=TrustAnchor.intel_production(), policy=ACCEPTING
    )

    reformatted = json.dumps(json.loads(recorded["tcb_info"]), indent=1)
    body = '{"tcbInfo":' + reformatted + ',"signature":"' + signature + '"}'
    pccs.answers["tcb"] = (status, headers, body.encode())
    with PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    assert collateral.tcb_info == reformatted  # kept as served, never "repaired"
    with pytest.raises(QuoteSignatureError):
        appraise_quote(
            quote, collateral, at=NOW, trust=TrustAnchor.intel_production(), policy=ACCEPTING
        )


def test_crls_in_pem_or_hex_are_accepted(
    pccs: FakePccs, quote: bytes, recorded: dict[str, Any]
) -> None:
    root = x509.load_der_x509_crl(bytes.fromhex(recorded["root_ca_crl"]))
    pccs.answers["rootcacrl"] = (200, {}, root.public_bytes(Encoding.PEM))
    status, headers, _ = _answer(pccs, "pckcrl")
    pccs.answers["pckcrl"] = (status, headers, recorded["pck_crl"].encode())
    with PccsClient(pccs.url) as client:
        collateral = client.for_quote(quote)
    assert json.loads(collateral.to_json()) == recorded


@pytest.mark.parametrize("url", ["ftp://pccs", "pccs.example:8081", "https://", ""])
def test_a_pccs_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="PCCS URL"):
        PccsClient(url)


def test_a_quote_without_a_pck_chain_has_no_platform_key(vectors_dir: Path) -> None:
    intel_sample = (vectors_dir / "sgx-intel-qvl-sample" / "quote.dat").read_bytes()
    with pytest.raises(EvidenceError) as caught:
        platform_key(intel_sample)
    assert caught.value.check == "pck-certificate-chain"
    with pytest.raises(EvidenceError) as caught:
        platform_key(b"not a quote")
    assert caught.value.check == "quote-format"


# -------------------------------------------------------------------- the cache


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_cache_serves_by_fmspc_until_refresh(pccs: FakePccs, quote: bytes) -> None:
    clock = Clock(NOW - 3600)
    cache = CollateralCache(PccsClient(pccs.url), clock=clock, refresh_after=600)
    first = cache.for_quote(quote)
    assert len(pccs.requests) == 4
    assert first.source == pccs.url
    assert first.validity.not_after == NOW + 1
    assert cache.for_quote(quote) is first
    assert len(pccs.requests) == 4
    clock.now += 601
    second = cache.for_quote(quote)
    assert len(pccs.requests) == 8
    assert second.fetched_at == int(clock.now)


def test_the_cache_serves_valid_collateral_while_the_pccs_is_down(
    pccs: FakePccs, quote: bytes
) -> None:
    clock = Clock(NOW - 3600)
    cache = CollateralCache(PccsClient(pccs.url), clock=clock, refresh_after=600)
    cached = cache.for_quote(quote)
    pccs.failing["tcb"] = 503
    clock.now = NOW - 100  # past the refresh, still valid
    assert cache.for_quote(quote) is cached
    asked = len(pccs.requests)
    clock.now = NOW - 50  # the PCCS just failed: not asked again for a minute
    assert cache.for_quote(quote) is cached
    assert len(pccs.requests) == asked
    clock.now = NOW  # a minute later it is asked again, and fails again
    assert cache.for_quote(quote) is cached
    assert len(pccs.requests) > asked
    clock.now = NOW + 1  # expired: never served
    with pytest.raises(PccsError) as caught:
        cache.for_quote(quote)
    assert caught.value.check == "pccs-response"


def test_the_cache_never_stores_expired_collateral(pccs: FakePccs, quote: bytes) -> None:
    cache = CollateralCache(PccsClient(pccs.url), clock=Clock(NOW + 86400))
    with pytest.raises(CollateralExpiredError) as caught:
        cache.for_quote(quote)
    assert caught.value.check == "collateral-expired"
    with pytest.raises(CollateralExpiredError):
        cache.for_quote(quote)
    assert len(pccs.requests) == 8  # asked again: nothing was cached


def test_concurrent_misses_fetch_once(pccs: FakePccs, quote: bytes) -> None:
    cache = CollateralCache(PccsClient(pccs.url), clock=Clock(NOW - 60))
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.for_quote(quote))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len({id(result) for result in results}) == 1
    assert len(pccs.requests) == 4


def test_with_nothing_cached_every_request_asks_the_pccs(pccs: FakePccs, quote: bytes) -> None:
    cache = CollateralCache(PccsClient(pccs.url), clock=Clock(NOW - 60))
    pccs.failing["rootcacrl"] = 503
    for _ in range(2):
        with pytest.raises(PccsError):
            cache.for_quote(quote)
    pccs.failing.clear()
    assert cache.for_quote(quote).source == pccs.url  # served as soon as the PCCS answers
