"""How a client authenticates at ``/oauth/token`` and ``/oauth/revoke`` (RFC 6749 §2.3.1).

Two ways, and never both in one request:

- ``client_secret_basic``: ``Authorization: Basic base64(id ":" secret)``, each of id
  and secret first form-urlencoded (§2.3.1, Appendix B). An authorization server
  MUST support it, and client libraries use it by default;
- ``client_secret_post``: the form fields ``client_id`` and ``client_secret``.

A request that fails Basic authentication is answered ``401`` with
:data:`BASIC_CHALLENGE` (§5.2). What comes out is only who the client claims to be:
the secret is checked by the caller, against the stored hash.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

from cleanroom.errors import Error

BASIC_CHALLENGE = 'Basic realm="cleanroom", charset="UTF-8"'
MAX_CREDENTIAL = 4096  # bytes of the Basic value: ids and secrets are far shorter

Method = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True)
class ClientCredentials:
    """A client id and secret as the request gave them (not yet checked)."""

    client_id: str
    secret: str
    method: Method


class ClientAuthError(Error):
    """Client authentication that cannot be used: an RFC 6749 error code and a reason.

    ``challenge`` is set when the client tried HTTP authentication: the answer is
    then 401 with ``WWW-Authenticate`` (§5.2).
    """

    def __init__(self, error: str, description: str, *, challenge: bool) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.challenge = challenge
        self.http_status = 401 if error == "invalid_client" else 400


def _basic(header: str) -> ClientCredentials | None:
    """Basic client credentials; None for another scheme (e.g. a bearer token presented
    to /oauth/revoke, which authenticates by the token itself, not as a client)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    value = value.strip()
    try:
        if len(value) > MAX_CREDENTIAL:
            raise ValueError("too long")
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ClientAuthError(
            "invalid_client", "Basic credentials must be base64 of id:secret", challenge=True
        ) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise ClientAuthError(
            "invalid_client", "Basic credentials must be base64 of id:secret", challenge=True
        )
    return ClientCredentials(unquote_plus(client_id), unquote_plus(secret), "client_secret_basic")


def single_authorization(values: Sequence[str]) -> str | None:
    """The one ``Authorization`` header of a request (``values``: every one it carries),
    or None. Several are ``invalid_request``: the field is not a list (RFC 9110 §11.6.2),
    and taking the first, as ``headers.get`` does, authenticated the first of two clients."""
    if len(values) > 1:
        raise ClientAuthError(
            "invalid_request",
            f"{len(values)} Authorization headers: send one",
            challenge=False,
        )
    return values[0] if values else None


REPEATABLE = frozenset({"resource"})
"""Form parameters a token request may give more than once (RFC 8707 §2: one per resource)."""


def single_parameters(items: Sequence[tuple[str, object]]) -> None:
    """Refuse (``invalid_request``) a form that gives a parameter more than once
    (``items``: every name and value, in order), but ``resource``: RFC 6749 §3.2 says
    they MUST NOT be, and which of two counts is a guess (the form's ``get`` took the
    last, so another client's id followed by this one's authenticated this one while a
    proxy or log reading the first judged another, h10). The names are not echoed."""
    names = [name for name, _value in items if name not in REPEATABLE]
    repeated = len(names) - len(set(names))
    if repeated:
        raise ClientAuthError(
            "invalid_request",
            f"{repeated} parameters given more than once: give each once",
            challenge=False,
        )


def client_credentials(
    authorization: str | None, form: Mapping[str, object]
) -> ClientCredentials | None:
    """The client's credentials from either Basic or the form; None if it gave none.

    Raises :class:`ClientAuthError` for malformed Basic credentials, half of the
    form's pair, or both methods at once (§2.3: a client MUST NOT use more than
    one). A ``client_id`` in the form beside Basic is allowed only if it is the same.
    """
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    credentials = _basic(authorization) if authorization is not None else None
    if credentials is not None:
        if form_secret is not None:
            raise ClientAuthError(
                "invalid_request",
                "client credentials both in Authorization and in the form: use one",
                challenge=False,
            )
        if form_id is not None and form_id != credentials.client_id:
            raise ClientAuthError(
                "invalid_request",
                "the form's client_id is not the one in Authorization",
                challenge=False,
            )
        return credentials
    if form_id is None and form_secret is None:
        return None
    if not isinstance(form_id, str) or not isinstance(form_secret, str):
        raise ClientAuthError(
            "invalid_client", "give both client_id and client_secret, or neither", challenge=False
        )
    return ClientCredentials(form_id, form_secret, "client_secret_post")


__all__ = [
    "BASIC_CHALLENGE",
    "ClientAuthError",
    "ClientCredentials",
    "client_credentials",
    "single_authorization",
    "single_parameters",
]
