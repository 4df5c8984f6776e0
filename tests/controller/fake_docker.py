"""A fake Docker Engine on a Unix socket: it answers the few Engine API calls a compute
server makes, as the daemon does (status codes, shapes), and records every request.

It runs no container: a "started" container is a record that stays running until it
is killed. Images are dictionaries of file paths to bytes, served by the archive
endpoint as a tar, as the daemon serves a container's files.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from cleanroom.enclave.http import serve

API = "/v1.44"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeDocker:
    images: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    down: bool = False  # answer every request with 500, as a broken daemon

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
        async def anything(path: str, request: Request) -> Response:
            raw = await request.body()
            body = json.loads(raw) if raw else None
            self.requests.append(
                Recorded(request.method, "/" + path, dict(request.query_params), body)
            )
            if self.down:
                return JSONResponse({"message": "daemon is broken"}, status_code=500)
            return self._answer(request.method, "/" + path, dict(request.query_params), body)

        return app

    def _answer(self, method: str, path: str, query: dict[str, str], body: Any) -> Response:
        if not path.startswith(API + "/"):
            return JSONResponse({"message": "page not found"}, status_code=404)
        parts = path.removeprefix(API + "/").split("/")
        if parts == ["_ping"]:
            return Response("OK", media_type="text/plain")
        if parts[0] == "images" and parts[-1] == "json":
            reference = unquote("/".join(parts[1:-1]))
            if reference not in self.images:
                return JSONResponse({"message": f"No such image: {reference}"}, 404)
            return JSONResponse({"Id": "sha256:" + "0" * 64, "RepoTags": [reference]})
        if parts[0] != "containers":
            return JSONResponse({"message": "page not found"}, status_code=404)
        if parts[1:] == ["create"] and method == "POST":
            if body["Image"] not in self.images:
                return JSONResponse({"message": f"No such image: {body['Image']}"}, 404)
            container = secrets.token_hex(32)
            self.containers[container] = {
                "body": body,
                "name": query.get("name"),
                "state": "created",
            }
            return JSONResponse({"Id": container, "Warnings": []}, status_code=201)
        if parts[1:] == ["json"]:
            wanted = json.loads(query.get("filters", "{}")).get("label", [])
            found = [
                {"Id": cid, "Labels": c["body"].get("Labels", {}), "State": c["state"]}
                for cid, c in self.containers.items()
                if all(
                    c["body"].get("Labels", {}).get(label.split("=", 1)[0])
                    == label.split("=", 1)[1]
                    for label in wanted
                )
            ]
            return JSONResponse(found)
        container = self.containers.get(parts[1])
        if container is None:
            return JSONResponse({"message": f"No such container: {parts[1]}"}, 404)
        action = parts[2] if len(parts) > 2 else ""
        if method == "DELETE" and action == "":
            del self.containers[parts[1]]
            return Response(status_code=204)
        if action == "start":
            container["state"] = "running"
            return Response(status_code=204)
        if action == "json":
            running = container["state"] == "running"
            return JSONResponse(
                {
                    "Id": parts[1],
                    "State": {"Running": running, "ExitCode": 0 if running else 137, "Pid": 0},
                }
            )
        if action == "kill":
            if container["state"] != "running":
                return JSONResponse({"message": "container is not running"}, 409)
            container["state"] = "exited"
            if container["body"].get("HostConfig", {}).get("AutoRemove"):
                del self.containers[parts[1]]
            return Response(status_code=204)
        if action == "archive":
            files = self.images[container["body"]["Image"]]
            wanted_path = query.get("path", "")
            if wanted_path not in files:
                return JSONResponse({"message": f"Could not find the file {wanted_path}"}, 404)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                data = files[wanted_path]
                info = tarfile.TarInfo(Path(wanted_path).name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            return Response(buffer.getvalue(), media_type="application/x-tar")
        return JSONResponse({"message": "page not found"}, status_code=404)

    def creates(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == f"{API}/containers/create"]


@contextlib.contextmanager
def fake_docker(socket: Path, docker: FakeDocker) -> Iterator[FakeDocker]:
    """``docker`` serving on ``socket`` (uvicorn, in a thread) until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(docker.app(), socket, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not socket.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the fake Docker Engine did not start")
        time.sleep(0.02)
    try:
        yield docker
    finally:
        stop.set()
        thread.join(timeout=10)
