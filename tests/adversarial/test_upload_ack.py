"""The uploader's acknowledgement is the Worker's, under the session key: a hostile
Controller can neither drop it, change it, replay another session's, nor stand in
one of its own (the unauthenticated form it could once forge). Each is refused by the
check that names what is wrong: no acknowledgement (``upload``), a record not sealed in
this session (``record-authentication``), or no record at all (``record-frame``). The
client then asks the Worker what became of the upload (tests/adversarial/
test_upload_fate.py); here the Controller answers that question itself too, and the
upload is ``upload-unconfirmed``, naming the check."""

from __future__ import annotations

from pathlib import Path

from cleanroom.protocol.encoding import b64u, from_b64u
from tests.adversarial.proxy import TamperingProxy
from tests.adversarial.test_hostile_controller import json_change, on_path, room, unconfirmed
from tests.e2e.conftest import User
from tests.e2e.helpers import write

__all__ = ["room"]  # the fixture, shared with the other hostile-Controller tests


def test_an_upload_without_the_workers_ack_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    proxy.on_response = on_path("/upload", json_change(lambda d: d.pop("ack"), response=True))
    unconfirmed(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n")),
        proxy,
        "upload",  # no acknowledgement in the answer
    )


def test_a_changed_ack_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def flip(document: dict[str, object]) -> None:
        sealed = bytearray(from_b64u(str(document["ack"]), "ack"))
        sealed[-20] ^= 1  # inside the ciphertext: "bytes" or "rows" changed in transit
        document["ack"] = b64u(bytes(sealed))

    proxy.on_response = on_path("/upload", json_change(flip, response=True))
    unconfirmed(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n")),
        proxy,
        "record-authentication",
    )


def test_the_ack_of_another_session_is_refused(
    alice: User, bob: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    kept: dict[str, object] = {}
    proxy.on_response = on_path("/upload", json_change(kept.update, response=True))
    alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n"))

    def replay(document: dict[str, object]) -> None:
        document["ack"] = kept["ack"]

    proxy.on_response = on_path("/upload", json_change(replay, response=True))
    unconfirmed(
        lambda: bob.client.upload(room, "input_2", write(tmp_path / "b", "b@x\n")),
        proxy,
        "record-authentication",
    )


def test_an_ack_the_controller_wrote_itself_is_refused(
    alice: User, tmp_path: Path, proxy: TamperingProxy, room: str
) -> None:
    def forge(document: dict[str, object]) -> None:
        document["ack"] = b64u(b'{"type":"cleanroom/upload-ack/v1","input":"input_1"}')

    proxy.on_response = on_path("/upload", json_change(forge, response=True))
    unconfirmed(
        lambda: alice.client.upload(room, "input_1", write(tmp_path / "a", "a@x\n")),
        proxy,
        "record-frame",  # not a record at all
    )
