"""A token the server refused at authentication: dropped, renewed once, the request sent again.

A kept access token can be refused before it expires: the operator disabled and
enabled the client or rotated its secret (every token of the client is revoked),
the manager's signing key changed. The server then answers 401 with a check
named ``token-…`` (docs/api.md, "Errors"), before the request did anything. A
client whose token source is :class:`Renewable` (:meth:`cleanroom.client.profile.
Profile.renewed_token`) drops the token (revoked at the manager; every token the profile
kept when the manager refused its own, the room token alone when a Controller, which may
say it of any token, refused it), lets the source fetch one again with the client
credentials, and sends the same request once more; the second answer is
the answer, refusal included, and a refused login is the error.

A download (a function's bundle, a room's output) is sent again the same way: its
refusal is its head, before any byte of it came, so nothing was handed to the caller.

Nothing else is sent again: not another refusal (a ``dpop-proof`` replay, a 403,
an ``invalid_client`` login), not a request whose body was a stream read once.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from cleanroom.client.errors import ServerError

TOKEN_CHECKS = "token-"  # noqa: S105 - a check name prefix, not a secret
"""The prefix of the checks of an access token itself (tokens.py, the Controller)."""


@runtime_checkable
class Renewable(Protocol):
    """A token source that can drop the token a server refused (renewed when next asked)."""

    def __call__(self) -> str: ...

    def refused(self) -> bool | None:
        """Forget the token given last, so that the next call logs in again; False when
        the source gives no new token any more (the refusal is then the error)."""


def token_refused(error: ServerError) -> bool:
    """Whether ``error`` is a refusal of the access token at authentication: a 401 whose
    check is one of the token's (``token-revoked``, ``token-expired``, ``token-client`` …)."""
    return error.status == 401 and (error.check or "").startswith(TOKEN_CHECKS)


def renew_for_retry(error: ServerError, source: object, request: dict[str, Any]) -> bool:
    """After ``error``, whether to send the request (``request``: its keyword arguments)
    once more: only when the token was refused at authentication, ``source`` can renew
    it (it is then dropped here, and says whether it gives a new one), and the body can
    be sent again (not a stream)."""
    if not token_refused(error) or not isinstance(source, Renewable):
        return False
    content = request.get("content")
    if content is not None and not isinstance(content, bytes | str):
        return False  # a stream, read once: the caller uploads it again if it can
    return source.refused() is not False


__all__ = ["TOKEN_CHECKS", "Renewable", "renew_for_retry", "token_refused"]
