"""Errors of the SGX structure parsers."""

from __future__ import annotations


class SgxParseError(ValueError):
    """Bytes that do not have the shape of the named SGX structure."""

    def __init__(self, structure: str, message: str) -> None:
        super().__init__(f"{structure}: {message}")
        self.structure = structure
        self.message = message


class UnsupportedTeeError(SgxParseError):
    """Evidence from a TEE other than SGX (a TDX quote, say): refused as such."""
