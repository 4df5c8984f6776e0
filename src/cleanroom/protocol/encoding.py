"""Encodings of the protocol: base64url without padding, canonical JSON, SHA-256."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from typing import Any

import rfc8785

from cleanroom.protocol.errors import MessageFormatError

_B64U = re.compile(r"[A-Za-z0-9_-]*")


def b64u(data: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as every binary value in JSON."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64u(text: object, what: str, *, size: int | None = None) -> bytes:
    """Strict inverse of :func:`b64u`: no padding, no other alphabet, canonical bits."""
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise MessageFormatError(what, "base64url without padding", repr(text)[:80], "not b64u")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise MessageFormatError(what, "base64url", repr(text)[:80], "not b64u") from error
    if b64u(data) != text:  # non-zero padding bits: two encodings of one value
        raise MessageFormatError(what, "canonical base64url", text[:80], "non-canonical b64u")
    if size is not None and len(data) != size:
        raise MessageFormatError(what, f"{size} bytes", f"{len(data)} bytes", "wrong length")
    return data


def canonical(document: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON: the only form ever hashed or signed.

    Values JCS cannot represent exactly (integers beyond 2^53, NaN, non-string
    keys, text or object keys with a lone surrogate, which has no UTF-8 or UTF-16
    form) are a MessageFormatError: what cannot be canonical cannot be signed.
    """
    try:
        return rfc8785.dumps(document)
    except UnicodeError as error:  # a key JCS must sort by its UTF-16 code units
        raise MessageFormatError(
            "canonical-json", "text of Unicode scalar values", "a lone surrogate", str(error)
        ) from error
    except (rfc8785.CanonicalizationError, TypeError, RecursionError) as error:
        raise MessageFormatError(
            "canonical-json", "a value RFC 8785 can represent", type(error).__name__, str(error)
        ) from error


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate member {key[:80]!r}")
        document[key] = value
    return document


def loads_unique(data: bytes | str) -> Any:
    """JSON as a signed document needs it read (RFC 8785 section 3.1: I-JSON): no member
    twice in one object, where another reader might keep the other value, and no
    ``NaN``, ``Infinity`` or number beyond a double (``1e400``), which are not JSON
    (RFC 8259 section 6) though Python reads them, and have no canonical form.

    Raises :class:`ValueError` for text that is not such JSON, nested too deeply
    included (which :func:`json.loads` reports as a RecursionError).
    """
    try:
        return json.loads(
            data, object_pairs_hook=_unique, parse_constant=_not_json, parse_float=_finite
        )
    except RecursionError as error:
        raise ValueError("JSON nested too deeply") from error


def _not_json(constant: str) -> float:
    raise ValueError(f"{constant} is not JSON (RFC 8259: no NaN or Infinity)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is beyond a double (not I-JSON)")
    return value


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()
