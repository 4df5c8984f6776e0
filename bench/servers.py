"""The baseline servers, each its own process, on the same stack as the clean room
(FastAPI on uvicorn, httpx between processes; the
annotations must resolve at module level for FastAPI, hence the imports at the top):

    python -m bench.servers tls   --port P --cert C --key K   TLS 1.3, GET /ping
    python -m bench.servers bare  --port P                    plain HTTP, GET /ping
    python -m bench.servers sink  --socket S --dir D          Unix socket: the "Worker"
    python -m bench.servers relay --port P --socket S         TCP -> Unix socket: the "Controller"

``relay`` relays uploads and downloads to ``sink`` exactly as the Controller relays
them to a Worker (``request.stream()`` into an ``httpx.AsyncClient`` over the Unix
socket; downloads as ``StreamingResponse(upstream.aiter_raw())``). ``sink`` writes an
upload to disk as it arrives and streams a download from disk in 1 MiB chunks,
like the Worker, but without any cryptography: plaintext through the same stack.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

CHUNK = 1 << 20


def self_signed(cert: Path, key: Path) -> None:
    """An ECDSA P-256 self-signed certificate for 127.0.0.1 (the TLS baseline's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def ping_app() -> Any:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"ok": True}

    return app


def sink_app(directory: Path) -> Any:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/upload/{name}")
    async def upload(name: str, request: Request) -> dict[str, Any]:
        size = 0
        with (directory / name).open("wb") as handle:
            async for chunk in request.stream():
                handle.write(chunk)
                size += len(chunk)
        return {"name": name, "bytes": size}

    @app.post("/download/{name}")
    def download(name: str) -> StreamingResponse:
        def chunks() -> Iterator[bytes]:
            with (directory / name).open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return app


def relay_app(socket: Path) -> Any:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    client = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(socket)),
        base_url="http://sink",
        timeout=httpx.Timeout(60.0),
    )

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/upload/{name}")
    async def upload(name: str, request: Request) -> Response:
        response = await client.post(
            f"/upload/{name}",
            content=request.stream(),
            headers={"content-type": "application/octet-stream"},
            timeout=httpx.Timeout(60.0, read=None),
        )
        return Response(
            response.content,
            status_code=response.status_code,
            media_type=response.headers.get("content-type", "application/json"),
        )

    @app.get("/get/{path:path}")
    async def get(path: str) -> Response:
        """Relay one small GET, as the Controller relays to a Worker (``bench.hops``)."""
        response = await client.get(f"/{path}")
        return Response(
            response.content,
            status_code=response.status_code,
            media_type=response.headers.get("content-type", "application/json"),
        )

    @app.post("/download/{name}")
    async def download(name: str) -> Response:
        upstream = await client.send(client.build_request("POST", f"/download/{name}"), stream=True)
        return StreamingResponse(
            upstream.aiter_raw(),
            media_type="application/octet-stream",
            background=BackgroundTask(upstream.aclose),
        )

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="bench.servers")
    parser.add_argument("kind", choices=["tls", "bare", "sink", "relay"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args()
    if args.kind == "tls":
        uvicorn.run(
            ping_app(),
            host="127.0.0.1",
            port=args.port,
            ssl_certfile=str(args.cert),
            ssl_keyfile=str(args.key),
            log_level="warning",
        )
    elif args.kind == "bare":
        uvicorn.run(ping_app(), host="127.0.0.1", port=args.port, log_level="warning")
    elif args.kind == "sink":
        args.socket.unlink(missing_ok=True)
        uvicorn.run(sink_app(args.dir), uds=str(args.socket), log_level="warning")
    else:
        uvicorn.run(relay_app(args.socket), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
