"""The length-prefixed frame stream that carries records in HTTP bodies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.protocol.errors import RecordError
from cleanroom.protocol.framing import MAX_FRAME, FrameDecoder, decode_frames, encode_frames


@given(
    frames=st.lists(st.binary(max_size=300), max_size=8),
    cut=st.lists(st.integers(min_value=1, max_value=50), max_size=40),
)
def test_frames_survive_any_chunking(frames: list[bytes], cut: list[int]) -> None:
    body = b"".join(encode_frames(frames))
    chunks, position = [], 0
    for size in cut:
        chunks.append(body[position : position + size])
        position += size
    chunks.append(body[position:])
    assert list(decode_frames(chunks)) == frames


def test_a_body_cut_inside_a_frame_is_truncation() -> None:
    body = b"".join(encode_frames([b"first", b"second"]))
    with pytest.raises(RecordError) as caught:
        list(decode_frames([body[:-1]]))
    assert caught.value.check == "frame-truncated"
    with pytest.raises(RecordError):
        list(decode_frames([body[:2]]))  # inside a length prefix


def test_an_oversized_length_is_refused_before_buffering() -> None:
    decoder = FrameDecoder()
    with pytest.raises(RecordError) as caught:
        decoder.feed((MAX_FRAME + 1).to_bytes(4, "big"))
    assert caught.value.check == "frame-length"


def test_the_encoder_refuses_an_oversized_frame() -> None:
    with pytest.raises(ValueError, match="at most"):
        list(encode_frames([bytes(MAX_FRAME + 1)]))
