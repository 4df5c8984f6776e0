"""Collateral from a PCCS, through the PCCS API v4 (the routes of Intel's PCS v4).

Four GETs under ``{url}/sgx/certification/v4``, for one platform kind (its FMSPC
and the CA that issued its PCK certificate, both read from the quote's PCK chain):

- ``pckcrl?ca=processor|platform&encoding=der``: the PCK CA's CRL, issuer chain in
  the ``SGX-PCK-CRL-Issuer-Chain`` header;
- ``tcb?fmspc=…``: ``{"tcbInfo": …, "signature": hex}``, chain in
  ``TCB-Info-Issuer-Chain`` (``SGX-TCB-Info-Issuer-Chain`` before v4);
- ``qe/identity``: ``{"enclaveIdentity": …, "signature": hex}``, chain in
  ``SGX-Enclave-Identity-Issuer-Chain``;
- ``rootcacrl``: the root CA's CRL (a PCCS answers with its DER in hex).

Headers carry URL-encoded PEM. The signatures cover the exact bytes of the
``tcbInfo`` and ``enclaveIdentity`` members, so those are cut out of the body, never
parsed and re-serialised. Nothing here is trusted: dcap-qvl verifies every
signature, and :func:`~cleanroom.attestation.collateral.check_fresh` every window.

dcap-qvl has a fetcher too (``dcap_qvl.get_collateral``); this one exists because
the cache needs collateral by FMSPC, the Controller and the client need a bounded
timeout and a named failure for an unreachable PCCS, and the root CA CRL must come
from the configured PCCS only (dcap-qvl falls back to a URL in the root certificate).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import dcap_qvl
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cleanroom.answers import IDENTITY_ONLY, content_coding
from cleanroom.attestation.collateral import CollateralValidity, check_fresh
from cleanroom.attestation.errors import AttestationError, EvidenceError
from cleanroom.sgx import CertificationDataType, SgxParseError, parse_quote

log = logging.getLogger("cleanroom.attestation.pccs")

API_PREFIX = "/sgx/certification/v4"
CA_TYPES = ("processor", "platform")
MAX_RESPONSE_BYTES = 1 << 20  # TCB info is a few KiB; anything near this is not collateral
DEFAULT_TIMEOUT_S = 10.0
# Refetch after a day even while the cached collateral is valid: revocations reach
# the CRLs and TCB recoveries reach the TCB info long before their nextUpdate.
DEFAULT_REFRESH_AFTER_S = 24 * 3600.0
# After a failed refresh, serve the cached collateral this long before asking the
# PCCS again: a PCCS that is down must not make every attestation wait for it.
DEFAULT_RETRY_AFTER_S = 60.0

_JSON_WHITESPACE = " \t\n\r"
_HEX = re.compile(rb"\s*([0-9a-fA-F]{2})+\s*")


class PccsError(AttestationError):
    """The PCCS gave no usable collateral: ``pccs-unreachable`` (no answer) or
    ``pccs-response`` (an answer that is not PCCS v4 collateral)."""


@dataclass(frozen=True)
class PlatformKey:
    """What collateral depends on: the platform's FMSPC and its PCK certificate's CA."""

    fmspc: bytes
    ca: str

    def __post_init__(self) -> None:
        if len(self.fmspc) != 6 or self.ca not in CA_TYPES:
            raise ValueError(f"FMSPC must be 6 bytes and ca one of {CA_TYPES}")

    @property
    def fmspc_hex(self) -> str:
        return self.fmspc.hex().upper()


def platform_key(quote: bytes) -> PlatformKey:
    """The FMSPC and PCK CA of the platform that made ``quote`` (from its PCK chain).

    Raises :class:`EvidenceError` when the quote is malformed or carries no PCK
    certificate chain (certification data type 5).
    """
    try:
        parsed = parse_quote(quote)
        certification = parsed.signature_data.certification_data
        if certification.cert_type != CertificationDataType.PCK_CERT_CHAIN:
            raise EvidenceError(
                "pck-certificate-chain",
                "certification data type 5 (the PCK certificate chain)",
                f"type {certification.cert_type}",
                "the quote carries no PCK certificate chain to find its platform's FMSPC",
            )
        chain = certification.pem_chain()
        fmspc = bytes(dcap_qvl.parse_pck_extension_from_pem(b"".join(chain)).fmspc)
        leaf = x509.load_pem_x509_certificate(chain[0])
    except SgxParseError as error:
        raise EvidenceError(
            "quote-format", "an SGX ECDSA quote v3", f"{len(quote)} bytes", str(error)
        ) from error
    except ValueError as error:
        raise EvidenceError(
            "pck-certificate-chain",
            "a PCK certificate with the SGX extension",
            str(error),
            "the quote's PCK certificate cannot be read",
        ) from error
    issuer = " ".join(
        str(attribute.value)
        for attribute in leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    ca = next((kind for kind in CA_TYPES if kind in issuer.lower()), None)
    if ca is None:
        raise EvidenceError(
            "pck-certificate-chain",
            "a PCK certificate issued by a Processor or Platform CA",
            issuer,
            "the quote's PCK certificate names no known PCK CA",
        )
    return PlatformKey(fmspc=fmspc, ca=ca)


def _normalise(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"a PCCS URL is http(s)://host[:port][/path], got {url!r}")
    base = url.strip().rstrip("/")
    return base.removesuffix(API_PREFIX)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _JSON_WHITESPACE:
        index += 1
    return index


def _signed_member(body: bytes, member: str, where: str) -> tuple[str, bytes]:
    """The exact text of ``body[member]`` (an object) and the signature beside it."""
    try:
        text = body.decode("utf-8")
        decoder = json.JSONDecoder()
        members: dict[str, tuple[str, object]] = {}
        index = _skip(text, 0)
        if text[index : index + 1] != "{":
            raise ValueError("not a JSON object")
        index += 1
        while True:
            index = _skip(text, index)
            if text[index : index + 1] == "}" and not members:
                break
            key, index = decoder.raw_decode(text, index)
            index = _skip(text, index)
            if not isinstance(key, str) or text[index : index + 1] != ":":
                raise ValueError("malformed member")
            if key in members:
                raise ValueError(f"duplicate member {key!r}")
            index = _skip(text, index + 1)
            start = index
            value, index = decoder.raw_decode(text, index)
            members[key] = (text[start:index], value)
            index = _skip(text, index)
            if text[index : index + 1] == ",":
                index += 1
                continue
            if text[index : index + 1] == "}":
                break
            raise ValueError("expected ',' or '}'")
        raw, value = members[member]
        signature = members["signature"][1]
        if not isinstance(value, dict) or not isinstance(signature, str):
            raise ValueError(f"{member} must be an object and signature hex text")
        signature_bytes = bytes.fromhex(signature)
        if len(signature_bytes) != 64:
            raise ValueError(f"signature is {len(signature_bytes)} bytes, not 64 (ECDSA P-256)")
    except (UnicodeDecodeError, ValueError, KeyError) as error:
        raise PccsError(
            "pccs-response",
            f'{{"{member}": {{…}}, "signature": "<128 hex digits>"}}',
            f"{len(body)} bytes: {str(error)[:200]}",
            f"the PCCS's {where} answer is not signed {member} JSON",
        ) from error
    return raw, signature_bytes


def _crl_der(body: bytes, where: str) -> bytes:
    """A CRL as DER, from DER, hex-encoded DER (a PCCS's rootcacrl) or PEM."""
    try:
        if body[:1] == b"\x30":  # a DER SEQUENCE (hex text starts with "3", never 0x30)
            der = body
        elif _HEX.fullmatch(body):
            der = bytes.fromhex(body.decode("ascii").strip())
        elif b"-----BEGIN X509 CRL-----" in body:
            der = x509.load_pem_x509_crl(body).public_bytes(Encoding.DER)
        else:
            raise ValueError("neither DER, hex nor PEM")
        x509.load_der_x509_crl(der)
    except ValueError as error:
        raise PccsError(
            "pccs-response",
            "a CRL (DER, hex-encoded DER or PEM)",
            f"{len(body)} bytes: {error}",
            f"the PCCS's {where} answer is not a CRL",
        ) from error
    return der


class PccsClient:
    """A PCCS (Intel's reference PCCS, a cloud provider's, or Intel's PCS v4 routes).

    ``verify`` is passed to httpx: ``True`` (the system's CAs), a CA bundle path
    for a PCCS with its own certificate, or ``False``. TLS only decides who can
    withhold collateral here: the collateral itself is signed by Intel.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _normalise(url)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            verify=verify,
            transport=transport,
            follow_redirects=False,
            headers=IDENTITY_ONLY,  # cleanroom.answers: a coded answer is not read
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PccsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def for_quote(self, quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        """Collateral for the platform that made ``quote``."""
        return self.fetch(platform_key(quote))

    def fetch(self, key: PlatformKey) -> dcap_qvl.QuoteCollateralV3:
        """Collateral for one platform kind; :class:`PccsError` if the PCCS gives none."""
        pck_crl, pck_crl_headers = self._get("pckcrl", {"ca": key.ca, "encoding": "der"})
        tcb, tcb_headers = self._get("tcb", {"fmspc": key.fmspc_hex})
        qe, qe_headers = self._get("qe/identity", {})
        root_crl, _ = self._get("rootcacrl", {})
        tcb_info, tcb_signature = _signed_member(tcb, "tcbInfo", "tcb")
        served_fmspc = json.loads(tcb_info).get("fmspc")
        if not isinstance(served_fmspc, str) or served_fmspc.upper() != key.fmspc_hex:
            raise PccsError(
                "pccs-response",
                f"TCB info for FMSPC {key.fmspc_hex}",
                f"TCB info for FMSPC {served_fmspc}",
                "the PCCS answered with another platform's TCB info",
            )
        qe_identity, qe_signature = _signed_member(qe, "enclaveIdentity", "qe/identity")
        return dcap_qvl.QuoteCollateralV3(
            pck_crl_issuer_chain=self._chain(pck_crl_headers, "pckcrl", "SGX-PCK-CRL-Issuer-Chain"),
            root_ca_crl=_crl_der(root_crl, "rootcacrl"),
            pck_crl=_crl_der(pck_crl, "pckcrl"),
            tcb_info_issuer_chain=self._chain(
                tcb_headers, "tcb", "TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"
            ),
            tcb_info=tcb_info,
            tcb_info_signature=tcb_signature,
            qe_identity_issuer_chain=self._chain(
                qe_headers, "qe/identity", "SGX-Enclave-Identity-Issuer-Chain"
            ),
            qe_identity=qe_identity,
            qe_identity_signature=qe_signature,
        )

    def _get(self, route: str, params: dict[str, str]) -> tuple[bytes, httpx.Headers]:
        url = f"{self.url}{API_PREFIX}/{route}"
        try:
            with self._client.stream("GET", url, params=params) as response:
                coding = content_coding(response)
                if coding is not None:
                    # httpx inflates each part whole, through every coding named, before
                    # the bound below could count it: "gzip, gzip" of 2 KB is 1 GiB.
                    raise PccsError(
                        "pccs-response",
                        "an answer in no content coding (asked for identity)",
                        f"Content-Encoding: {coding}",
                        f"the PCCS answered GET {route} in a content coding it was not "
                        "asked for; it is not read",
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise PccsError(
                            "pccs-response",
                            f"at most {MAX_RESPONSE_BYTES} bytes",
                            f"more from GET {route}",
                            "the PCCS's answer is too large to be collateral",
                        )
        except httpx.HTTPError as error:
            raise PccsError(
                "pccs-unreachable",
                f"an answer from the PCCS at {self.url}",
                f"{type(error).__name__}: {error}"[:300],
                f"the PCCS did not answer GET {API_PREFIX}/{route}",
                "check the PCCS URL and that it runs; a client can use its own PCCS "
                "(cleanroom configure --pccs-url URL)",
            ) from error
        if response.status_code != 200:
            raise PccsError(
                "pccs-response",
                "HTTP 200",
                f"HTTP {response.status_code}: {bytes(body[:200]).decode(errors='replace')}",
                f"the PCCS refused GET {API_PREFIX}/{route}",
                "a PCCS without this platform's collateral must first fetch it from Intel",
            )
        return bytes(body), response.headers

    @staticmethod
    def _chain(headers: httpx.Headers, route: str, *names: str) -> str:
        for name in names:
            value = headers.get(name)
            if value:
                chain = urllib.parse.unquote(value)
                if "-----BEGIN CERTIFICATE-----" in chain:
                    return chain
        raise PccsError(
            "pccs-response",
            f"a PEM issuer chain in the {' or '.join(names)} header",
            "missing or not PEM",
            f"the PCCS's {route} answer has no issuer chain",
        )


@dataclass(frozen=True)
class CachedCollateral:
    """Collateral as a compute server serves it beside a quote."""

    collateral_json: str
    validity: CollateralValidity
    fetched_at: int
    source: str


class CollateralCache:
    """Collateral by platform kind, fetched from one PCCS and kept until it expires.

    An entry is served while valid; after ``refresh_after`` seconds it is fetched
    again, and if the PCCS cannot answer, the cached entry is served for as long as
    it is still valid, without asking the PCCS again for ``retry_after`` seconds.
    Expired collateral is never served. With nothing cached, every request asks the
    PCCS (so that collateral is served again as soon as it answers).
    """

    def __init__(
        self,
        client: PccsClient,
        *,
        clock: Callable[[], float] = time.time,
        refresh_after: float = DEFAULT_REFRESH_AFTER_S,
        retry_after: float = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        self.client = client
        self._clock = clock
        self._refresh_after = refresh_after
        self._retry_after = retry_after
        self._entries: dict[PlatformKey, CachedCollateral] = {}
        self._failed_at: dict[PlatformKey, int] = {}
        self._lock = threading.Lock()

    def for_quote(self, quote: bytes) -> CachedCollateral:
        return self.get(platform_key(quote))

    def get(self, key: PlatformKey) -> CachedCollateral:
        with self._lock:
            now = int(self._clock())
            entry = self._entries.get(key)
            if entry is not None and now >= entry.validity.not_after:
                del self._entries[key]
                entry = None
            if entry is not None and now < entry.fetched_at + self._refresh_after:
                return entry
            failed_at = self._failed_at.get(key)
            if entry is not None and failed_at is not None and now < failed_at + self._retry_after:
                return entry
            try:
                collateral = self.client.fetch(key)
                validity = check_fresh(collateral, now)
            except AttestationError as error:
                self._failed_at[key] = now
                if entry is not None:
                    log.warning(
                        "PCCS refresh for FMSPC %s failed (%s); serving cached collateral, %s",
                        key.fmspc_hex,
                        error,
                        entry.validity.describe(),
                    )
                    return entry
                raise
            entry = CachedCollateral(
                collateral_json=collateral.to_json(),
                validity=validity,
                fetched_at=now,
                source=self.client.url,
            )
            self._entries[key] = entry
            self._failed_at.pop(key, None)
            log.info(
                "collateral for FMSPC %s (%s CA) from %s, %s",
                key.fmspc_hex,
                key.ca,
                self.client.url,
                validity.describe(),
            )
            return entry
