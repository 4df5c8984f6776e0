"""A Controller's host name resolved within the manager's timeouts.

A compute server registered by a host name was resolved before httpx's timeouts and
the manager's deadline started, and nothing interrupted the lookup: a name server that
answers slowly added its 10-30 s to every health check, deploy and delete (found by the
manager's red team). Here the lookup of one name is made slow in the manager's process
(``socket.getaddrinfo`` for that host only: a fault injected, as a hostile name server
would), and the Controller behind it is a real server on loopback.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cleanroom.client.errors import ServerError
from cleanroom.manager import resolution, servers

from .conftest import Manager, bind, make_bundle, make_spec, serve

SLOW_NAME = "slow-name.test"
LOOKUP_S = 12.0
"""How long the name server takes to answer for SLOW_NAME."""
TIMEOUT = 1.5
"""The manager's timeouts here (health, deploy and delete)."""


class SlowNameServer:
    """``socket.getaddrinfo`` that takes LOOKUP_S for SLOW_NAME (while ``slow``), then
    answers loopback; every other name as before."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slow = True
        self.asked = 0
        self.ended = threading.Event()
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host == SLOW_NAME:
                self.asked += 1
                if self.slow:
                    self.ended.wait(LOOKUP_S)
                return real("127.0.0.1", port, *args, **kwargs)
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def slow_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowNameServer]:
    server = SlowNameServer(monkeypatch)
    yield server
    # The lookups still running end with the test (they count against the next test's:
    # resolution.LOOKUPS_PER_NAME).
    server.ended.set()
    for thread in threading.enumerate():
        if thread.name == f"resolve {SLOW_NAME}":
            thread.join(10)


@pytest.fixture
def controller_by_name() -> Iterator[str]:
    """A Controller on loopback that answers everything at once, by its URL with
    SLOW_NAME as its host."""
    app = FastAPI()

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "tee": "simulated", "rooms": 0}

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    with serve(app, sock):
        yield f"http://{SLOW_NAME}:{sock.getsockname()[1]}"


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        outcome = call()
    except ServerError as error:
        outcome = error
    return outcome, time.monotonic() - started


def test_a_health_check_does_not_wait_for_a_slow_name_server(
    slow_name: SlowNameServer, controller_by_name: str
) -> None:
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        seen, waited = timed(lambda: servers.observe(client, controller_by_name, "simulated"))
    assert slow_name.asked >= 1
    assert waited < LOOKUP_S / 2, (
        f"health check: expected no answer within the health timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert not seen.answered
    assert seen.error is not None and "dns-resolution" in seen.error, seen
    assert f"within {TIMEOUT} s" in seen.error
    slow_name.slow = False  # the same check, the name answered at once
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        assert servers.observe(client, controller_by_name, "simulated").answered


def test_a_deploy_and_a_delete_do_not_wait_for_a_slow_name_server(
    start_manager: Callable[..., Manager],
    slow_name: SlowNameServer,
    controller_by_name: str,
    tmp_path: Path,
) -> None:
    manager = start_manager(controller_timeout=TIMEOUT)
    manager.add_server(controller_by_name)
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    refused, waited = timed(lambda: acme.deploy(make_spec(function, name="first")))
    assert waited < LOOKUP_S / 2, (
        f"deploy: expected a refusal within the deploy timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert isinstance(refused, ServerError) and refused.status == 502, refused
    assert "dns-resolution" in refused.detail and SLOW_NAME in refused.detail
    # Never sent: the room frees its slot (and is not asked to be deleted).
    assert acme.room("first").state == "failed"

    slow_name.slow = False
    assert acme.deploy(make_spec(function, name="second")).state == "deployed"
    slow_name.slow = True
    refused, waited = timed(lambda: acme.delete("second"))
    assert waited < LOOKUP_S / 2, (
        f"delete: expected a refusal within the delete timeout ({TIMEOUT} s), "
        f"it waited {waited:.1f} s for the name server"
    )
    assert isinstance(refused, ServerError) and refused.status == 502, refused
    assert "dns-resolution" in refused.detail
    assert acme.room("second").state == "deployed"


# -- every address of a name -----------------------------------------------------------

MANY_NAME = "many-addresses.test"


@pytest.fixture
def name_server(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """``socket.getaddrinfo`` answering the addresses in ``answers[MANY_NAME]``, in
    that order, for MANY_NAME (every other name as before)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [real(address, port, *args, **kwargs)[0] for address in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def controller_on_one_address() -> Iterator[tuple[str, list[str]]]:
    """A Controller listening on 127.0.0.1 only (nothing on 127.0.0.2 and .3, on the same
    port: refused there), by its URL with MANY_NAME as its host; the Host headers seen."""
    hosts: list[str] = []
    app = FastAPI()

    @app.get("/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        hosts.append(request.headers.get("host", ""))
        return {"status": "ok", "tee": "simulated", "rooms": 0}

    @app.put("/v1/rooms/{name}")
    async def put(name: str, request: Request) -> JSONResponse:
        hosts.append(request.headers.get("host", ""))
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    sock = bind()
    with serve(app, sock):
        yield f"http://{MANY_NAME}:{sock.getsockname()[1]}", hosts


def test_each_address_a_controllers_name_resolves_to_is_tried_in_turn(
    start_manager: Callable[..., Manager],
    name_server: dict[str, list[str]],
    controller_on_one_address: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    """Only the first address was tried: a name whose first address does not take the
    connection (an IPv6 address where the Controller listens on IPv4 only; a replica
    that is down) made the server unhealthy and every deploy fail."""
    url, hosts = controller_on_one_address
    name_server[MANY_NAME] = ["127.0.0.2", "127.0.0.1"]
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        seen = servers.observe(client, url, "simulated")
    assert seen.answered, (
        f"health check: expected the second address of {MANY_NAME} tried after the first "
        f"refused, got no answer: {seen.error}"
    )
    manager = start_manager(controller_timeout=TIMEOUT)
    manager.add_server(url)
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    assert acme.deploy(make_spec(function, name="first")).state == "deployed"
    # Host still names the server (and with TLS, sni_hostname would).
    assert set(hosts) == {url.removeprefix("http://")}, hosts


def test_a_name_none_of_whose_addresses_answers_is_refused_naming_each(
    start_manager: Callable[..., Manager],
    name_server: dict[str, list[str]],
    controller_on_one_address: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    url, hosts = controller_on_one_address
    name_server[MANY_NAME] = ["127.0.0.2", "127.0.0.3"]
    with httpx.Client(timeout=TIMEOUT, transport=servers.controller_transport(TIMEOUT)) as client:
        seen, waited = timed(lambda: servers.observe(client, url, "simulated"))
    assert not seen.answered and seen.error is not None
    assert seen.error.startswith(f"controller-address: GET {url}/v1/health: no address of "), seen
    assert "expected one of 127.0.0.2, 127.0.0.3 to connect within 1.5 s" in seen.error, seen
    assert "127.0.0.2: " in seen.error and "127.0.0.3: " in seen.error, seen
    assert waited < TIMEOUT + 1, waited
    manager = start_manager(controller_timeout=TIMEOUT)
    manager.add_server(url)
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    refused, _ = timed(lambda: acme.deploy(make_spec(function, name="first")))
    assert isinstance(refused, ServerError) and refused.status == 502, refused
    assert "controller-address" in refused.detail and "127.0.0.3" in refused.detail, refused
    # Never sent: the room frees its slot.
    room = acme.room("first")
    assert room.state == "failed" and "keeps its slot" not in (room.reason or "")
    assert hosts == []


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A certificate for the DNS name ``name`` and its key, as files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("certified", [MANY_NAME, "another-name.test"])
def test_over_tls_each_address_is_tried_with_the_certificate_checked_against_the_name(
    name_server: dict[str, list[str]], tmp_path: Path, certified: str
) -> None:
    """The connection to the second address still checks the server's certificate
    against the registered name (SNI and verification), and sends that name as Host."""
    cert_file, key_file = self_signed(tmp_path, certified)
    hosts: list[str] = []
    app = FastAPI()

    @app.get("/v1/health")
    async def health(request: Request) -> dict[str, Any]:
        hosts.append(request.headers.get("host", ""))
        return {"status": "ok", "tee": "simulated", "rooms": 0}

    sock = bind()
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    name_server[MANY_NAME] = ["127.0.0.2", "127.0.0.1"]
    url = f"https://{MANY_NAME}:{sock.getsockname()[1]}"
    trust = ssl.create_default_context(cafile=str(cert_file))
    transport = resolution.BoundedResolution(
        httpx.HTTPTransport(verify=trust, limits=servers.NO_KEEPALIVE), TIMEOUT
    )
    try:
        with httpx.Client(timeout=TIMEOUT, transport=transport) as client:
            seen = servers.observe(client, url, "simulated")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    if certified == MANY_NAME:
        assert seen.answered, seen
        assert hosts == [url.removeprefix("https://")], hosts
    else:
        assert not seen.answered and seen.error is not None
        assert seen.error.startswith("controller-address: "), seen
        assert "127.0.0.1: " in seen.error and "CERTIFICATE_VERIFY_FAILED" in seen.error, seen
        assert hosts == []


# -- lookups past their deadline -------------------------------------------------------

HUNG_NAME = "hung-name.test"


def test_lookups_of_a_name_that_never_resolves_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup past its deadline goes on in its thread; a name server that never
    answers, asked again and again (every health round, deploy and delete), held one
    thread per question until the resolver gave up. At most LOOKUPS_PER_NAME run at
    once; past them the name is refused at once, and other names are not affected."""
    answer = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == HUNG_NAME:
            answer.wait(60)
            return real("127.0.0.1", port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    request = httpx.Request("GET", f"http://{HUNG_NAME}:9/v1/health")

    def hung_threads() -> int:
        return sum(t.name == f"resolve {HUNG_NAME}" for t in threading.enumerate())

    refusals = []
    try:
        for _ in range(3 * resolution.LOOKUPS_PER_NAME):
            with pytest.raises(resolution.NameTooSlow) as refused:
                resolution.lookup(HUNG_NAME, 9, 0.01, request)
            refusals.append(str(refused.value))
        assert hung_threads() == resolution.LOOKUPS_PER_NAME, (
            f"expected at most {resolution.LOOKUPS_PER_NAME} lookups of {HUNG_NAME} at once, "
            f"got {hung_threads()} threads"
        )
        assert f"{resolution.LOOKUPS_PER_NAME} still running" in refusals[-1], refusals[-1]
        assert "dns-resolution" in refusals[-1]
        # Another name is looked up as before.
        assert resolution.lookup("127.0.0.1", 9, 5.0, request) == ["127.0.0.1"]
    finally:
        answer.set()
    for thread in threading.enumerate():
        if thread.name == f"resolve {HUNG_NAME}":
            thread.join(10)
    assert hung_threads() == 0
    # Once they have ended, the name is looked up again.
    assert resolution.lookup(HUNG_NAME, 9, 5.0, request) == ["127.0.0.1"]
