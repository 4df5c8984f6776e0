"""The record stream: AES-256-GCM records that a relay cannot read, reorder, drop or cut.

Frame (all integers big-endian)::

    counter u64 ‖ index u32 ‖ final u8 ‖ sealed path length u16 ‖ sealed path ‖ ciphertext+tag

- nonce = 0x00000000 ‖ counter: one counter per direction over the whole session,
  so a nonce never repeats under a key;
- the object's path is sealed too, under the same key with nonce
  0x00000001 ‖ counter (a nonce space of its own), as ``len u16 ‖ path UTF-8`` padded
  with zeros to a multiple of :data:`PATH_BLOCK` bytes, with AAD
  JCS({"session_id", "index", "final"}): a relay sees neither the names of the
  files (an uploader's, or a function's ``region=Tokyo/…``) nor their exact lengths;
- AAD = JCS({"session_id", "path", "index", "final"}): the clear header is
  authenticated, and a record cannot move to another session, object or place;
- the receiver expects the next counter (a lower one is a duplicate or replay, a
  higher one a gap), the next index of the object, nothing after ``final``, and at
  ``close()`` every object it saw to have ended with ``final`` (else: truncated).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import BindingError, RecordError, ReplayError

MAX_PLAINTEXT = 1 << 20  # 1 MiB
MAX_PATH = 1024
PATH_BLOCK = 64  # a sealed path shows its length only to this granularity
_HEADER = struct.Struct(">QIBH")
_PATH_LENGTH = struct.Struct(">H")
_LENGTH = struct.Struct(">I")  # a frame's length in a frame stream (framing.py)
_TAG = 16
MAX_SEALED_PATH = -(-(_PATH_LENGTH.size + MAX_PATH) // PATH_BLOCK) * PATH_BLOCK + _TAG
_MAX_COUNTER = (1 << 64) - 1


def _nonce(counter: int) -> bytes:
    return bytes(4) + counter.to_bytes(8, "big")


def _path_nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x01" + counter.to_bytes(8, "big")


def _not_authentic(frame: bytes | bytearray) -> RecordError:
    return RecordError(
        "record-authentication",
        "a record sealed under this session's key",
        bytes(frame[:16]).hex(),
        "record was altered, or belongs to another session or object",
    )


def record_aad(session_id: str, path: str, index: int, final: bool) -> bytes:
    return canonical({"session_id": session_id, "path": path, "index": index, "final": final})


def path_aad(session_id: str, index: int, final: bool) -> bytes:
    return canonical({"session_id": session_id, "index": index, "final": final})


def padded_path(encoded_path: bytes) -> bytes:
    """``len u16 ‖ path`` and zeros up to the next multiple of :data:`PATH_BLOCK`."""
    block = _PATH_LENGTH.pack(len(encoded_path)) + encoded_path
    return block + bytes(-len(block) % PATH_BLOCK)


class RecordSender:
    """Seals records in order for one direction of one session."""

    def __init__(self, key: bytes, session_id: str) -> None:
        self._aead = AESGCM(key)
        self._session_id = session_id
        self._counter = 0
        self._next_index: dict[str, int] = {}
        self._finished: set[str] = set()

    def seal(self, path: str, plaintext: bytes, *, final: bool) -> bytes:
        """The next record's frame."""
        return bytes(self._seal(path, plaintext, final, prefix=0))

    def seal_framed(self, path: str, plaintext: bytes, *, final: bool) -> bytearray:
        """The next record's frame with its u32 length in front, as a frame stream carries
        it (:mod:`cleanroom.protocol.framing`), built in one buffer without a copy."""
        return self._seal(path, plaintext, final, prefix=_LENGTH.size)

    def _seal(self, path: str, plaintext: bytes, final: bool, prefix: int) -> bytearray:
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"a record holds at most {MAX_PLAINTEXT} bytes, got {len(plaintext)}")
        encoded_path = path.encode("utf-8")
        if not 0 < len(encoded_path) <= MAX_PATH:
            raise ValueError(f"object path must be 1 to {MAX_PATH} bytes")
        if path in self._finished:
            raise ValueError(f"object {path!r} already ended")
        if self._counter > _MAX_COUNTER:
            raise ValueError("record counter exhausted: start a new session")
        index = self._next_index.get(path, 0)
        sealed_path = self._aead.encrypt(
            _path_nonce(self._counter),
            padded_path(encoded_path),
            path_aad(self._session_id, index, final),
        )
        start = prefix + _HEADER.size + len(sealed_path)
        frame = bytearray(start + len(plaintext) + _TAG)
        if prefix:
            _LENGTH.pack_into(frame, 0, len(frame) - prefix)
        _HEADER.pack_into(frame, prefix, self._counter, index, int(final), len(sealed_path))
        frame[prefix + _HEADER.size : start] = sealed_path
        self._aead.encrypt_into(
            _nonce(self._counter),
            plaintext,
            record_aad(self._session_id, path, index, final),
            memoryview(frame)[start:],
        )
        self._counter += 1
        self._next_index[path] = index + 1
        if final:
            self._finished.add(path)
        return frame


class RecordReceiver:
    """Opens records for one direction of one session, refusing any tampering."""

    def __init__(self, key: bytes, session_id: str) -> None:
        self._aead = AESGCM(key)
        self._session_id = session_id
        self._counter = 0
        self._next_index: dict[str, int] = {}
        self._finished: set[str] = set()

    def open(self, frame: bytes | bytearray) -> tuple[str, int, bool, bytes]:
        """Check and decrypt the next frame: (path, index, final, plaintext)."""
        if len(frame) < _HEADER.size:
            raise RecordError(
                "record-frame", f">= {_HEADER.size} bytes", len(frame), "frame too short"
            )
        counter, index, final_flag, sealed_length = _HEADER.unpack_from(frame)
        body = memoryview(frame)[_HEADER.size + sealed_length :]  # no copy of the ciphertext
        if not _TAG < sealed_length <= MAX_SEALED_PATH or (sealed_length - _TAG) % PATH_BLOCK:
            raise RecordError(
                "record-frame",
                f"a sealed path of whole {PATH_BLOCK}-byte blocks, <= {MAX_SEALED_PATH} bytes",
                sealed_length,
                "bad path",
            )
        if final_flag not in (0, 1) or len(frame) < _HEADER.size + sealed_length + _TAG:
            raise RecordError(
                "record-frame", "a well-formed frame", bytes(frame[:16]).hex(), "bad frame"
            )
        if len(body) > MAX_PLAINTEXT + _TAG:
            raise RecordError(
                "record-size", f"<= {MAX_PLAINTEXT} bytes", len(body) - _TAG, "too big"
            )
        final = final_flag == 1
        if counter < self._counter:
            raise ReplayError(
                "record-counter", self._counter, counter, "duplicate or replayed record"
            )
        if counter > self._counter:
            raise RecordError(
                "record-counter", self._counter, counter, "records are missing (gap) or reordered"
            )
        path = self._open_path(frame, counter, index, final, sealed_length)
        if path in self._finished:
            raise RecordError("record-after-final", "no record after final", path, "object ended")
        expected_index = self._next_index.get(path, 0)
        if index != expected_index:
            raise RecordError(
                "record-index", expected_index, index, "record out of place in its object"
            )
        try:
            plaintext = self._aead.decrypt(
                _nonce(counter), body, record_aad(self._session_id, path, index, final)
            )
        except InvalidTag as error:
            raise _not_authentic(frame) from error
        self._counter += 1
        self._next_index[path] = index + 1
        if final:
            self._finished.add(path)
        return path, index, final, plaintext

    def _open_path(
        self, frame: bytes | bytearray, counter: int, index: int, final: bool, length: int
    ) -> str:
        sealed = memoryview(frame)[_HEADER.size : _HEADER.size + length]
        try:
            block = self._aead.decrypt(
                _path_nonce(counter), sealed, path_aad(self._session_id, index, final)
            )
        except InvalidTag as error:
            raise _not_authentic(frame) from error
        (size,) = _PATH_LENGTH.unpack_from(block)
        encoded = block[_PATH_LENGTH.size : _PATH_LENGTH.size + size]
        # Authentic, so written by the other end: still only one form of each path.
        if not 0 < size <= MAX_PATH or block != padded_path(encoded):
            raise RecordError("record-frame", "a padded path", size, "bad path")
        try:
            return encoded.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RecordError("record-frame", "a UTF-8 path", "bytes", "bad path") from error

    def finished(self, path: str) -> bool:
        return path in self._finished

    def close(self) -> None:
        """The stream ended: every object begun must have ended (else it was truncated)."""
        unfinished = set(self._next_index) - self._finished
        if unfinished:
            # How many, not which: the paths are sealed, and a receiver's refusal (the
            # Worker's) goes back through the relay in the clear.
            raise RecordError(
                "record-truncated",
                "every object ends with a final record",
                f"{len(unfinished)} not ended",
                "the stream was cut before an object ended",
            )


def open_single(key: bytes, session_id: str, frame: bytes, path: str, check: str) -> bytes:
    """The data of a stream of one record only: ``path``, final, sealed in this session
    (the Worker's one answer in a session: an upload's acknowledgement, a query's
    detail or refusal).

    Raises :class:`RecordError` for a frame not sealed under ``key`` in this session (or
    not final: ``record-truncated``), and ``BindingError`` named ``check`` for another
    object's record.
    """
    receiver = RecordReceiver(key, session_id)
    sealed_path, _index, _final, data = receiver.open(frame)
    receiver.close()  # not final: record-truncated
    if sealed_path != path:
        raise BindingError(check, path, sealed_path, "a record of another object")
    return data
