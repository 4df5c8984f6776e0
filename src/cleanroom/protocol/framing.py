"""Record frames in an HTTP body: each prefixed by its length (u32, big-endian).

The framing is not protected and needs no protection: every frame is
authenticated and ordered by the record layer (:mod:`cleanroom.protocol.records`).
It only has to be parsed safely: a length beyond the largest possible frame is
refused before anything is buffered, and a body that ends inside a frame is
truncation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from cleanroom.protocol.errors import RecordError
from cleanroom.protocol.records import MAX_PATH, MAX_PLAINTEXT

MEDIA_TYPE = "application/vnd.cleanroom.frames"
# counter u64 ‖ index u32 ‖ final u8 ‖ path length u16 ‖ path ‖ ciphertext ‖ tag
MAX_FRAME = 8 + 4 + 1 + 2 + MAX_PATH + MAX_PLAINTEXT + 16
_LENGTH = struct.Struct(">I")


def encode_frame(frame: bytes) -> bytes:
    if len(frame) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes, got {len(frame)}")
    return _LENGTH.pack(len(frame)) + frame


def encode_frames(frames: Iterable[bytes]) -> Iterator[bytes]:
    for frame in frames:
        yield encode_frame(frame)


class FrameDecoder:
    """Splits arbitrary body chunks back into frames, in bounded memory."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._needed: int | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames completed by ``chunk`` (possibly none)."""
        self._buffer += chunk
        frames: list[bytes] = []
        while True:
            if self._needed is None:
                if len(self._buffer) < _LENGTH.size:
                    return frames
                (length,) = _LENGTH.unpack_from(self._buffer)
                if length > MAX_FRAME:
                    raise RecordError(
                        "frame-length", f"<= {MAX_FRAME}", length, "frame length out of range"
                    )
                del self._buffer[: _LENGTH.size]
                self._needed = length
            if len(self._buffer) < self._needed:
                return frames
            frames.append(bytes(self._buffer[: self._needed]))
            del self._buffer[: self._needed]
            self._needed = None

    def close(self) -> None:
        """The body ended: it must not end inside a frame."""
        if self._needed is not None or self._buffer:
            raise RecordError(
                "frame-truncated",
                "a body that ends between frames",
                f"{len(self._buffer)} bytes of an unfinished frame",
                "the frame stream was cut",
            )


def decode_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decoder = FrameDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.close()
