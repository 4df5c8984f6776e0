"""Errors of the SGX structure parsers."""

from __future__ import annotations

from cleanroom.errors import EXIT_USAGE, Error


class SgxParseError(Error):
    """Bytes that do not have the shape of the named SGX structure."""

    exit_code = EXIT_USAGE  # malformed input

    def __init__(self, structure: str, message: str) -> None:
        super().__init__(f"{structure}: {message}")
        self.structure = structure
        self.message = message


class UnsupportedTeeError(SgxParseError):
    """Evidence from a TEE other than SGX (a TDX quote, say): refused as such."""
