"""A fake PCCS on loopback: recorded collateral re-shaped into PCCS API v4 answers.

A real HTTP server (stdlib ``ThreadingHTTPServer``) answering the four routes a
PCCS serves under ``/sgx/certification/v4`` for one platform kind, with Intel's
shapes: ``{"tcbInfo": …, "signature": hex}`` with the issuer chain URL-encoded in
``TCB-Info-Issuer-Chain``, ``{"enclaveIdentity": …}`` with
``SGX-Enclave-Identity-Issuer-Chain``, the PCK CRL as DER with
``SGX-PCK-CRL-Issuer-Chain``, and the root CA CRL as hex text, as a PCCS sends it.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API = "/sgx/certification/v4"


@dataclass
class FakePccs:
    """What the fake serves: one platform kind's collateral (dcap-qvl's JSON form)."""

    collateral: dict[str, Any]
    fmspc: str
    ca: str = "processor"
    requests: list[str] = field(default_factory=list)
    # Each request's Accept-Encoding, in order (None where it had none).
    accepted: list[str | None] = field(default_factory=list)
    # Routes answered with this status instead (e.g. {"tcb": 503}).
    failing: dict[str, int] = field(default_factory=dict)
    # Per-route overrides: route -> (status, headers, body).
    answers: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    url: str = ""

    def answer(self, route: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        if route in self.failing:
            return self.failing[route], {}, b'{"error":"unavailable"}'
        if route in self.answers:
            return self.answers[route]
        c = self.collateral
        if route == "tcb":
            if query.get("fmspc", [""])[0].upper() != self.fmspc.upper():
                return 404, {}, b"no TCB info for this FMSPC"
            body = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
            return 200, _chain("TCB-Info-Issuer-Chain", c["tcb_info_issuer_chain"]), body.encode()
        if route == "qe/identity":
            body = (
                '{"enclaveIdentity":' + c["qe_identity"] + ',"signature":"'
                + c["qe_identity_signature"] + '"}'
            )  # fmt: skip
            headers = _chain("SGX-Enclave-Identity-Issuer-Chain", c["qe_identity_issuer_chain"])
            return 200, headers, body.encode()
        if route == "pckcrl":
            if query.get("ca", [""])[0] != self.ca or query.get("encoding", [""])[0] != "der":
                return 400, {}, b"unsupported ca or encoding"
            headers = _chain("SGX-PCK-CRL-Issuer-Chain", c["pck_crl_issuer_chain"])
            return 200, headers, bytes.fromhex(c["pck_crl"])
        if route == "rootcacrl":
            return 200, {}, c["root_ca_crl"].encode()
        return 404, {}, b"no such route"

    @contextmanager
    def serving(self) -> Iterator[FakePccs]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                fake.requests.append(self.path)
                fake.accepted.append(self.headers.get("Accept-Encoding"))
                if not parsed.path.startswith(API + "/"):
                    status, headers, body = 404, {}, b"not a PCCS v4 route"
                else:
                    route = parsed.path.removeprefix(API + "/")
                    status, headers, body = fake.answer(route, urllib.parse.parse_qs(parsed.query))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def _chain(name: str, pem: str) -> dict[str, str]:
    return {name: urllib.parse.quote(pem, safe=""), "Content-Type": "application/json"}
