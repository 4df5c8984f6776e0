"""The client's TLS context: the process's one (:mod:`cleanroom.tls`)."""

from __future__ import annotations

from cleanroom.tls import tls_context

__all__ = ["tls_context"]
