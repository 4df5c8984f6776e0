"""The record stream: every way a relay can mess with records is detected by name."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.protocol.errors import ProtocolError, RecordError, ReplayError
from cleanroom.protocol.records import (
    MAX_PLAINTEXT,
    PATH_BLOCK,
    RecordReceiver,
    RecordSender,
    path_aad,
)

KEY = bytes([0xEE]) * 32
SESSION = "Xl5eXl5eXl5eXl5eXl5eXg"
PATH = "input_1/data.csv"


def stream(*chunks: bytes, path: str = PATH) -> list[bytes]:
    sender = RecordSender(KEY, SESSION)
    return [sender.seal(path, chunk, final=i == len(chunks) - 1) for i, chunk in enumerate(chunks)]


def receive(frames: list[bytes], key: bytes = KEY, session: str = SESSION) -> list[bytes]:
    receiver = RecordReceiver(key, session)
    plaintexts = [receiver.open(frame)[3] for frame in frames]
    receiver.close()
    return plaintexts


def test_first_record_vector() -> None:
    sender = RecordSender(
        bytes.fromhex("ee1c60352c9eb75cc982c15986e67f875a468e90cbfbdecb3c77b670c49cba6d"), SESSION
    )
    frame = sender.seal(PATH, b"hello", final=True)
    assert frame.hex() == (
        "000000000000000000000000010050b8035ffedb013002ae1a9acd3e0c1b95b4"
        "dd313e744c98791d06e2470e65265aa30ef973fe3ae81ae739324d00797b7f1b"
        "23e6f4480aaa680c4591334c6bd9d229e0645d50061ea716d4849f5ca8a758b4"
        "01adc92f05578cc583218651876c8ba0302b416a"
    )


def test_in_order_stream_is_received() -> None:
    assert receive(stream(b"a", b"b", b"c")) == [b"a", b"b", b"c"]


def test_objects_interleave_under_one_counter() -> None:
    sender = RecordSender(KEY, SESSION)
    frames = [
        sender.seal("a", b"1", final=False),
        sender.seal("b", b"2", final=True),
        sender.seal("a", b"3", final=True),
    ]
    receiver = RecordReceiver(KEY, SESSION)
    assert [receiver.open(f)[:3] for f in frames] == [
        ("a", 0, False),
        ("b", 0, True),
        ("a", 1, True),
    ]
    receiver.close()


def test_reordered_records_are_refused() -> None:
    frames = stream(b"a", b"b", b"c")
    with pytest.raises(RecordError) as caught:
        receive([frames[1], frames[0], frames[2]])
    assert caught.value.check == "record-counter"


def test_dropped_record_is_a_gap() -> None:
    frames = stream(b"a", b"b", b"c")
    with pytest.raises(RecordError, match="gap") as caught:
        receive([frames[0], frames[2]])
    assert caught.value.check == "record-counter"


def test_duplicated_record_is_refused() -> None:
    frames = stream(b"a", b"b")
    with pytest.raises(ReplayError) as caught:
        receive([frames[0], frames[0], frames[1]])
    assert caught.value.check == "record-counter"


def test_truncated_stream_is_refused() -> None:
    frames = stream(b"a", b"b", b"c")
    with pytest.raises(RecordError) as caught:
        receive(frames[:2])
    assert caught.value.check == "record-truncated"
    # How many objects were cut, not which: the Worker's refusal goes back through the
    # relay in the clear, and the paths are sealed.
    assert caught.value.actual == "1 not ended"
    assert "input_1" not in str(caught.value)


def test_record_after_final_is_refused() -> None:
    # Only a key holder can seal one (the sender refuses to); the receiver refuses it too.
    honest, second_writer = RecordSender(KEY, SESSION), RecordSender(KEY, SESSION)
    ended = honest.seal(PATH, b"all", final=True)  # counter 0
    second_writer.seal("other", b"x", final=True)  # counter 0
    more = second_writer.seal(PATH, b"more", final=True)  # counter 1, same object
    receiver = RecordReceiver(KEY, SESSION)
    receiver.open(ended)
    with pytest.raises(RecordError) as caught:
        receiver.open(more)
    assert caught.value.check == "record-after-final"
    with pytest.raises(ValueError, match="already ended"):
        honest.seal(PATH, b"more", final=True)


@pytest.mark.parametrize("offset", [0, 8, 12, 13, 16, 31, -1])
def test_any_changed_byte_is_refused(offset: int) -> None:
    frame = bytearray(stream(b"payload")[0])
    frame[offset] ^= 0x01
    with pytest.raises(ProtocolError):
        receive([bytes(frame)])


def _split(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """(clear header, sealed path, sealed body) of a frame."""
    length = int.from_bytes(frame[13:15], "big")
    return frame[:15], frame[15 : 15 + length], frame[15 + length :]


def test_record_moved_to_another_object_is_refused() -> None:
    """The body of a record of ``input_1/b`` under the sealed path of ``input_1/a`` (the
    same counter and place: only the object differs)."""
    header, path_a, _body_a = _split(stream(b"payload", path="input_1/a")[0])
    _header, _path_b, body_b = _split(stream(b"payload", path="input_1/b")[0])
    with pytest.raises(RecordError) as caught:
        receive([header + path_a + body_b])
    assert caught.value.check == "record-authentication"


def test_a_relay_sees_no_path_and_only_its_length_in_blocks() -> None:
    """The names of the files (an uploader's, a function's ``region=Tokyo/…``) are sealed:
    not in the frame, and paths of lengths within one block give frames of one length."""
    frames = {
        path: stream(b"x", path=path)[0] for path in ("o/region=Tokyo.csv", "o/b", "o/" + "c" * 40)
    }
    for path, frame in frames.items():
        assert path.encode() not in frame
        assert b"Tokyo" not in frame and b"region" not in frame
    assert len({len(frame) for frame in frames.values()}) == 1
    longer = stream(b"x", path="o/" + "d" * 80)[0]
    assert len(longer) == len(frames["o/b"]) + PATH_BLOCK


def test_a_changed_sealed_path_is_refused() -> None:
    frame = bytearray(stream(b"payload")[0])
    frame[20] ^= 0x01  # inside the sealed path
    with pytest.raises(RecordError) as caught:
        receive([bytes(frame)])
    assert caught.value.check == "record-authentication"


def test_a_sealed_path_from_another_record_is_refused() -> None:
    """Its nonce is the record's counter: a path sealed for record 0 does not open in
    record 1, though both are of the same object."""
    first, second = stream(b"1", b"2")
    header_0, path_0, body_0 = _split(first)
    header_1, _path_1, body_1 = _split(second)
    receiver = RecordReceiver(KEY, SESSION)
    receiver.open(header_0 + path_0 + body_0)
    with pytest.raises(RecordError) as caught:
        receiver.open(header_1 + path_0 + body_1)
    assert caught.value.check == "record-authentication"


def _padded(path: str | bytes) -> bytes:
    encoded = path.encode() if isinstance(path, str) else path
    block = len(encoded).to_bytes(2, "big") + encoded
    return block + bytes(-len(block) % PATH_BLOCK)


@pytest.mark.parametrize(
    "block",
    [
        _padded(PATH)[:-1] + b"\x01",  # a padding byte that is not zero
        _padded(PATH) + bytes(PATH_BLOCK),  # a block of zeros too many
        bytes(PATH_BLOCK),  # the one padding of an empty path
        _padded("a" * 1025),  # one byte over the longest path
        _padded(b"input_1/\xff.csv"),  # not UTF-8
    ],
    ids=["not-zeros", "a-block-too-many", "empty", "too-long", "not-utf8"],
)
def test_a_path_padded_any_other_way_is_refused(block: bytes) -> None:
    """Authentic (sealed under the key), yet not the one padding of a path."""
    sealed = AESGCM(KEY).encrypt(bytes(3) + b"\x01" + bytes(8), block, path_aad(SESSION, 0, True))
    header, _path, body = _split(stream(b"payload")[0])
    header = header[:13] + len(sealed).to_bytes(2, "big")
    with pytest.raises(RecordError) as caught:
        receive([header + sealed + body])
    assert caught.value.check == "record-frame"


def test_record_from_another_session_is_refused() -> None:
    with pytest.raises(RecordError) as caught:
        receive(stream(b"payload"), session="AAAAAAAAAAAAAAAAAAAAAA")
    assert caught.value.check == "record-authentication"


def test_record_under_another_key_is_refused() -> None:
    with pytest.raises(RecordError):
        receive(stream(b"payload"), key=bytes(32))


def test_plaintext_limit() -> None:
    receive(stream(bytes(MAX_PLAINTEXT)))
    with pytest.raises(ValueError, match="at most"):
        stream(bytes(MAX_PLAINTEXT + 1))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_frames_give_only_record_errors(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        RecordReceiver(KEY, SESSION).open(frame)


def test_over_long_path_in_a_frame_is_refused() -> None:
    frame = bytearray(stream(b"x")[0])
    frame[13:15] = (2000).to_bytes(2, "big")
    with pytest.raises(RecordError, match="bad path"):
        RecordReceiver(KEY, SESSION).open(bytes(frame) + bytes(2000))
