"""Protocol failures: each names the check, the expected and the actual value."""

from __future__ import annotations

from cleanroom.errors import CheckFailed


class ProtocolError(CheckFailed):
    """A protocol message or record was refused."""


class MessageFormatError(ProtocolError):
    """A message does not have the shape its type requires (bad JSON, field, encoding)."""


class SignatureError(ProtocolError):
    """A signature does not verify under the key that must have made it."""


class BindingError(ProtocolError):
    """A message is authentic but bound to something else (another work, worker, nonce)."""


class ReplayError(ProtocolError):
    """A nonce or record was seen before."""


class AccessDenied(ProtocolError):
    """The user is not allowed to do what the session is for."""


class RecordError(ProtocolError):
    """The record stream was tampered with: gap, reorder, duplicate, truncation, forgery."""
