"""A Controller's own credentials towards its manager, and the token they get it.

The operator registers a compute server at the manager (`cleanroom admin server
add URL --credentials-out FILE`), which gives it a client id and a secret; the
Controller reads them from that file (:func:`load_credentials`, which must be
private to its owner, as ssh insists for keys). With them it asks the manager for
a ``compute`` token (client credentials, RFC 6749 §4.4), with which it may fetch
the bundles of the rooms scheduled on this server and the revocation list, and
nothing else. :class:`ManagerLink` keeps one such token and fetches a new one
shortly before it expires, or when the manager refused it.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cleanroom.answers import MAX_TOKEN_LIFETIME_S
from cleanroom.cleartext import check_secret_transport
from cleanroom.errors import EXIT_USAGE, CheckFailed, Error
from cleanroom.tls import tls_context

CREDENTIALS_TYPE = "cleanroom/compute-credentials/v1"
TOKEN_MARGIN_S = 60
"""A token this close to its expiry is replaced before it is used; of a token that lives
less than four minutes, the last quarter of its life (at least a second): with the
minute's margin, a manager issuing tokens of under a minute was asked for one for every
request, as the client's profile was (``cleanroom.client.profile.token_margin``)."""


class CredentialsError(Error):
    """The credentials file cannot be used; the message is one line to act on."""

    exit_code = EXIT_USAGE  # the credentials file given cannot be used


class ManagerRefused(CheckFailed):
    """The manager did not give this Controller a token."""


@dataclass(frozen=True)
class ComputeCredentials:
    """This compute server's identity at the manager: the URL it was registered at (the
    audience of every token for it), its client id and secret."""

    url: str
    client_id: str
    client_secret: str = ""

    def __repr__(self) -> str:  # never show the secret in a log or a traceback
        return f"ComputeCredentials(url={self.url!r}, client_id={self.client_id!r})"


def load_credentials(path: Path) -> ComputeCredentials:
    """The credentials in ``path`` (written by `cleanroom admin server add
    --credentials-out`); refused when others may read it or it is malformed."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CredentialsError(
                    f"{path} is accessible by others (mode {stat.S_IMODE(mode):04o}): "
                    f"chmod 600 {path}"
                )
            data = handle.read()
    except OSError as error:
        raise CredentialsError(f"cannot read {path}: {error.strerror}") from error
    try:
        document: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise CredentialsError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("type") != CREDENTIALS_TYPE:
        raise CredentialsError(f"{path} is not a {CREDENTIALS_TYPE} document")
    fields = {name: document.get(name) for name in ("url", "client_id", "client_secret")}
    for name, value in fields.items():
        if not isinstance(value, str) or not value:
            raise CredentialsError(f"{path}: {name!r} is missing")
    return ComputeCredentials(
        url=str(fields["url"]).rstrip("/"),
        client_id=str(fields["client_id"]),
        client_secret=str(fields["client_secret"]),
    )


class ManagerLink:
    """Keeps a ``compute`` token from the manager at ``manager_url`` (see the module)."""

    def __init__(
        self,
        manager_url: str,
        credentials: ComputeCredentials,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager_url = manager_url.rstrip("/")
        self.credentials = credentials
        self._transport = transport
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    def headers(self) -> dict[str, str]:
        """``Authorization`` with a valid token (fetched now if needed; blocking)."""
        with self._lock:
            if self._token is None or self._renew_at <= self._clock():
                asked = self._clock()  # no later than the token's iat: its exp is not earlier
                self._token, lifetime = self._fetch()
                margin = min(TOKEN_MARGIN_S, max(lifetime / 4, 1.0))
                self._renew_at = asked + lifetime - margin
            return {"Authorization": f"Bearer {self._token}"}

    def forget(self) -> None:
        """Drop the token (the manager refused it): the next request fetches a new one."""
        with self._lock:
            self._token = None

    def _fetch(self) -> tuple[str, int]:
        check_secret_transport(self.manager_url)
        url = f"{self.manager_url}/oauth/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret,
        }
        try:
            with httpx.Client(
                transport=self._transport, timeout=self._timeout, verify=tls_context()
            ) as client:
                response = client.post(url, data=form)
        except httpx.HTTPError as error:
            raise ManagerRefused(
                "manager-token",
                f"a token from {url}",
                type(error).__name__,
                f"cannot reach the manager: {error}",
            ) from error
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200 or not isinstance(document, dict):
            error_code = document.get("error") if isinstance(document, dict) else None
            raise ManagerRefused(
                "manager-token",
                f"a token from {url}",
                f"{response.status_code} {error_code or ''}".strip(),
                "the manager refused this compute server's credentials",
                hint="check --credentials (cleanroom admin server credentials NAME)",
            )
        token, lifetime = document.get("access_token"), document.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, int):
            raise ManagerRefused(
                "manager-token", "{access_token, expires_in}", sorted(document), "bad answer"
            )
        if lifetime < 1:  # expired when issued: it would be sent, and refused
            raise ManagerRefused(
                "manager-token", "expires_in of at least 1 s", lifetime, "bad token lifetime"
            )
        if lifetime > MAX_TOKEN_LIFETIME_S:  # past any clock: every request logged in, then failed
            raise ManagerRefused(
                "manager-token", f"expires_in of at most {MAX_TOKEN_LIFETIME_S} s",
                f"more than {MAX_TOKEN_LIFETIME_S} s", "bad token lifetime",
            )  # fmt: skip
        return token, lifetime
