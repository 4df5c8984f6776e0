"""The record stream: every way a relay can mess with records is detected by name."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.protocol.errors import ProtocolError, RecordError, ReplayError
from cleanroom.protocol.records import MAX_PLAINTEXT, RecordReceiver, RecordSender

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
        "000000000000000000000000010010696e7075745f312f646174612e637376"
        "b401adc92f05578cc583218651876c8ba0302b416a"
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


def test_record_moved_to_another_object_is_refused() -> None:
    frame = stream(b"payload", path="input_1/a")[0]
    moved = frame.replace(b"input_1/a", b"input_1/b")
    with pytest.raises(RecordError) as caught:
        receive([moved])
    assert caught.value.check == "record-authentication"


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
    with pytest.raises(RecordError, match="path of <= 1024"):
        RecordReceiver(KEY, SESSION).open(bytes(frame) + bytes(2000))
