"""The few Docker Engine API calls a compute server makes, over the daemon's Unix socket.

The Controller starts Gramine enclaves as containers (:mod:`.gramine`): it creates,
starts, inspects, signals and lists them, and reads two files of an image. Each
call is one HTTP request of the Engine API (``/v1.44``, Docker Engine 25 and later),
sent with httpx over the socket; nothing else of the daemon is used.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from cleanroom.errors import Error

API_VERSION = "v1.44"
DEFAULT_SOCKET = Path("/var/run/docker.sock")
TIMEOUT_S = 30.0
MAX_ARCHIVE = 16 << 20  # two small files of an image, as a tar


class DockerError(Error):
    """The container engine cannot be reached, or refused a request."""

    http_status = 500  # this server's own failure, not the request's

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DockerEngine:
    """A client of one Docker daemon (``transport`` replaces the socket in tests)."""

    def __init__(
        self,
        socket: Path = DEFAULT_SOCKET,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.socket = socket
        self._client = httpx.Client(
            transport=transport or httpx.HTTPTransport(uds=str(socket)),
            base_url=f"http://docker/{API_VERSION}",
            timeout=TIMEOUT_S,
        )

    def close(self) -> None:
        self._client.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, params=params, json=body)
        except httpx.TransportError as error:
            raise DockerError(
                f"the container engine at {self.socket} is unreachable: {error}"
            ) from error
        if response.status_code not in ok:
            try:
                detail = str(response.json().get("message", ""))
            except ValueError:
                detail = response.text[:300]
            raise DockerError(
                f"{method} {path}: {response.status_code} {detail}".strip(), response.status_code
            )
        return response

    def ping(self) -> None:
        """The daemon answers (``GET /_ping``)."""
        self._request("GET", "/_ping")

    def image(self, reference: str) -> dict[str, Any] | None:
        """The image's description, or None if the daemon does not have it."""
        response = self._request("GET", f"/images/{quote(reference, safe='')}/json", ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def create(self, name: str, body: dict[str, Any]) -> str:
        """Create a container (not started); its ID."""
        response = self._request(
            "POST", "/containers/create", params={"name": name}, body=body, ok=(201,)
        )
        return str(response.json()["Id"])

    def start(self, container: str) -> None:
        self._request("POST", f"/containers/{container}/start", ok=(204, 304))

    def inspect(self, container: str) -> dict[str, Any] | None:
        """The container's description, or None once it is gone."""
        response = self._request("GET", f"/containers/{container}/json", ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    def kill(self, container: str, signal: str) -> None:
        """Signal the container (nothing if it is no longer running)."""
        self._request(
            "POST", f"/containers/{container}/kill", params={"signal": signal}, ok=(204, 404, 409)
        )

    def remove(self, container: str) -> None:
        self._request(
            "DELETE", f"/containers/{container}", params={"force": "true"}, ok=(204, 404, 409)
        )

    def containers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Every container (running or not) with all of ``labels``."""
        filters = {"label": [f"{key}={value}" for key, value in sorted(labels.items())]}
        response = self._request(
            "GET", "/containers/json", params={"all": "true", "filters": json.dumps(filters)}
        )
        return list(response.json())

    def read_file(self, container: str, path: str) -> bytes:
        """One regular file of a (created) container, through the archive endpoint."""
        response = self._request("GET", f"/containers/{container}/archive", params={"path": path})
        if len(response.content) > MAX_ARCHIVE:
            raise DockerError(f"{path} in the image is larger than {MAX_ARCHIVE} bytes")
        with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
            member = next((m for m in archive.getmembers() if m.isfile()), None)
            extracted = archive.extractfile(member) if member is not None else None
            if extracted is None:
                raise DockerError(f"{path} in the image is not a regular file")
            return extracted.read()
