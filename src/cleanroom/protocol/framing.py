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
from cleanroom.protocol.records import MAX_PLAINTEXT, MAX_SEALED_PATH

MEDIA_TYPE = "application/vnd.cleanroom.frames"
# counter u64 ‖ index u32 ‖ final u8 ‖ sealed path length u16 ‖ sealed path ‖ ciphertext ‖ tag
MAX_FRAME = 8 + 4 + 1 + 2 + MAX_SEALED_PATH + MAX_PLAINTEXT + 16
_LENGTH = struct.Struct(">I")


def encode_frame(frame: bytes) -> bytes:
    if len(frame) > MAX_FRAME:
        raise ValueError(f"a frame holds at most {MAX_FRAME} bytes, got {len(frame)}")
    return _LENGTH.pack(len(frame)) + frame


def encode_frames(frames: Iterable[bytes]) -> Iterator[bytes]:
    for frame in frames:
        yield encode_frame(frame)


class FrameDecoder:
    """Splits arbitrary body chunks back into frames, in bounded memory.

    A frame's bytes are kept as views of the chunks they arrived in and joined once
    when the frame is complete: one copy per byte, whatever the chunk sizes.
    """

    def __init__(self) -> None:
        self._length = bytearray()  # the next frame's length prefix, as it arrives
        self._needed: int | None = None
        self._parts: list[memoryview] = []
        self._have = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames completed by ``chunk`` (possibly none)."""
        frames: list[bytes] = []
        view = memoryview(chunk)
        while view:
            if self._needed is None:
                take = _LENGTH.size - len(self._length)
                self._length += view[:take]
                view = view[take:]
                if len(self._length) < _LENGTH.size:
                    break
                (length,) = _LENGTH.unpack(self._length)
                if length > MAX_FRAME:
                    raise RecordError(
                        "frame-length", f"<= {MAX_FRAME}", length, "frame length out of range"
                    )
                self._length.clear()
                self._needed = length
            take = min(self._needed - self._have, len(view))
            self._parts.append(view[:take])
            self._have += take
            view = view[take:]
            if self._have == self._needed:
                frames.append(b"".join(self._parts))
                self._parts.clear()
                self._needed, self._have = None, 0
        if self._needed == 0:  # an empty frame needs no body byte to be complete
            frames.append(b"")
            self._needed = None
        return frames

    def close(self) -> None:
        """The body ended: it must not end inside a frame."""
        if self._needed is not None or self._length:
            raise RecordError(
                "frame-truncated",
                "a body that ends between frames",
                f"{self._have + len(self._length)} bytes of an unfinished frame",
                "the frame stream was cut",
            )


def decode_frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decoder = FrameDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.close()
