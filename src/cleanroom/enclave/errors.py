"""Refusals inside the enclave: each names the check, the expected and the actual value."""

from __future__ import annotations

import logging
import os
import traceback

from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u


class AdmissionError(CheckFailed):
    """The Attester refused a Worker, or a Worker refused the Attester's answer."""


class UnknownWorkerError(CheckFailed):
    """Attestation was asked for a Worker the Attester never admitted."""


class StoreError(CheckFailed):
    """Sealed data was refused: unsafe name, tampered at rest, or the store was erased."""


class UploadError(CheckFailed):
    """An upload does not match its manifest, or came at the wrong time."""


class RunError(CheckFailed):
    """The function cannot be run as the spec and the platform require."""


class SealedRefusal(CheckFailed):
    """A refusal whose facts would tell the relay about the analyst's question (a
    query's text and parameters, quoted by the rule it broke). In the clear it says only
    that the query was refused; ``sealed`` holds the refusal itself, sealed to the run
    session's client (:func:`cleanroom.protocol.query_receipt.seal_refusal`)."""

    def __init__(self, sealed: bytes) -> None:
        super().__init__(
            "query-refused", "a query every rule allows", "refused (why is sealed to its runner)",
            "the Worker refused the query; its reasons are sealed to the runner",
        )  # fmt: skip
        self.sealed = sealed

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "sealed": b64u(self.sealed)}


class SchemaRefusal(UploadError):
    """An upload's data does not match its declared schema. Where (file, column, row)
    and how it broke it are facts of the uploader's data: the upload stream seals this
    to the uploader before it leaves the Worker (:class:`SealedSchemaRefusal`)."""


class SealedSchemaRefusal(UploadError):
    """A :class:`SchemaRefusal` as it leaves the Worker: in the clear it says only that
    the schema refused the upload; ``sealed`` holds the refusal, sealed to the upload
    session's client (:func:`cleanroom.protocol.acks.seal_upload_refusal`)."""

    def __init__(self, sealed: bytes) -> None:
        super().__init__(
            "schema-refused", "an upload that matches its schema",
            "refused (where and why is sealed to the uploader)",
            "the Worker refused the upload against its schema; where is sealed to the uploader",
        )  # fmt: skip
        self.sealed = sealed

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), "sealed": b64u(self.sealed)}


def failure_text(error: BaseException) -> str:
    """What may be said in the clear of an unexpected failure: a room's ``failure`` (its
    status and ``GET /state``), the Worker's log on the host.

    A refusal (:class:`CheckFailed`) names no file by design, and is said as it is. Any
    other error may quote what it failed on, and that is sealed data: an ``OSError``
    names its path (``[Errno 28] No space left on device: '…/inputs/<id>/<file>'``, a
    host that filled the disk had the name of an uploader's file), so it is said by its
    type and ``errno`` only; anything else by its type.
    """
    if isinstance(error, CheckFailed):
        return str(error)
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__}: {os.strerror(error.errno)}"
    return type(error).__name__


def log_failure(log: logging.Logger, what: str, error: BaseException) -> None:
    """Log an unexpected failure with where it happened (the traceback's frames, which
    show code, not values) and :func:`failure_text`, never the error's own message."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    log.error("%s: %s\nTraceback (message withheld):\n%s", what, failure_text(error), frames)
