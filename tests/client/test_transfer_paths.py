"""Paths the client reads and writes: it uploads only regular files it was pointed at
(never through a link), and writes a download only inside the new directory, whatever
names the records carry (they come from the Worker, through the Controller)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cleanroom.client.rooms import (
    CleanRoomClient,
    InputTooLargeError,
    TransferError,
    _input_files,
)
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.records import RecordSender
from tests.reliability.report import record_path

KEYS = SessionKeys("Xl5eXl5eXl5eXl5eXl5eXg", bytes([1]) * 32, bytes([2]) * 32, bytes(32))


def test_a_single_file_is_an_input_of_one_file(tmp_path: Path) -> None:
    single = tmp_path / "emails.csv"
    single.write_text("a@x\n")
    assert _input_files(single) == [("emails.csv", single)]


@pytest.mark.parametrize(
    "layout",
    ["file-link", "dir-link", "source-link"],
)
def test_links_are_never_uploaded(tmp_path: Path, layout: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the clean room")
    source = tmp_path / "data"
    source.mkdir()
    (source / "emails.csv").write_text("a@x\n")
    attempt = {
        "file-link": "a symlink to a file outside the directory",
        "dir-link": "a symlink to a directory outside it",
        "source-link": "the file given is a symlink",
    }[layout]
    if layout == "file-link":
        (source / "link.csv").symlink_to(secret)
    elif layout == "dir-link":
        (source / "sub").symlink_to(tmp_path)
    else:
        source = tmp_path / "link.csv"
        source.symlink_to(secret)
    with pytest.raises(MessageFormatError) as caught:
        _input_files(source)
    assert caught.value.check == "input-file"
    record_path("upload (client)", attempt, f"refused: {caught.value.check}; nothing sent")


def frames(names: list[str]) -> list[bytes]:
    sender = RecordSender(KEYS.worker_to_client, KEYS.session_id)
    return [sender.seal(name, b"evil", final=True) for name in names]


@pytest.mark.parametrize(
    "name",
    [
        "output_1/../escape.txt",
        "output_1/a/../../escape.txt",
        "/etc/escape.txt",
        "output_2/x.txt",
        "output_1//x.txt",
        "output_1/./x.txt",
        "output_1/a\\..\\x.txt",
        "output_1/x\x00.txt",
        "output_1/",
    ],
)
def test_a_download_writes_only_inside_its_directory(tmp_path: Path, name: str) -> None:
    """Records are authentic (sealed in the session), their names still untrusted."""
    target = tmp_path / "out" / "new"
    target.parent.mkdir()
    client: Any = CleanRoomClient.__new__(CleanRoomClient)
    with pytest.raises(TransferError) as caught:
        client._receive(iter(frames([name])), KEYS, "output_1", target, None)
    assert caught.value.check == "output-path"
    assert not target.exists() and sorted(os.listdir(tmp_path)) == ["out"]
    assert os.listdir(tmp_path / "out") == []
    record_path(
        "output (client download)",
        f"record {name!r}",
        f"refused: {caught.value.check}; nothing written",
    )


def _output_manifest(**changes: object) -> bytes:
    manifest: dict[str, object] = {
        "type": "cleanroom/output-manifest/v2",
        "output": "output_1",
        "salt": b64u(bytes(range(32))),
        "files": {"overlap.json": {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}},
    }
    manifest.update(changes)
    return canonical({k: v for k, v in manifest.items() if v is not None})


@pytest.mark.parametrize(
    "changes",
    [
        {"salt": None},  # as v1 wrote it: its digest would confirm a guess of the output
        {"salt": b64u(bytes(16))},
        {"salt": "not base64url!"},
        {"type": "cleanroom/output-manifest/v1"},
        {"output": "output_2"},
        {"extra": 1},
    ],
    ids=["no-salt", "short-salt", "bad-salt", "v1", "other-output", "extra-field"],
)
def test_an_output_manifest_the_receipt_signed_must_still_be_a_salted_v2_one(
    changes: dict[str, object],
) -> None:
    """The receipt's digest matches (a Worker signed exactly this manifest), yet a
    manifest whose digest does not hide the data is refused before anything is kept."""

    def signed(manifest: bytes) -> str:  # what a receipt naming exactly this manifest holds
        return hashlib.sha256(manifest).hexdigest()

    files = {"overlap.json": {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()}}
    client: Any = CleanRoomClient.__new__(CleanRoomClient)
    good = _output_manifest()
    assert client._check_output(signed(good), "output_1", good, files)  # as the Worker sends it
    changed = _output_manifest(**changes)
    with pytest.raises(TransferError) as caught:
        client._check_output(signed(changed), "output_1", changed, files)
    assert caught.value.check == "output-manifest"


@pytest.mark.parametrize(
    ("names", "check"),
    [
        (["output_1/a\x1b]52;c;ZXZpbA==\x07.csv"], "output-name"),  # OSC 52: the clipboard
        (["output_1/fake.csv\rreal.csv"], "output-name"),
        (["output_1/report\u202ecsv.exe"], "output-name"),
        (["output_1/zero\u200bwidth.csv"], "output-name"),
        (["output_1/dir\u2028/x.csv"], "output-name"),
        (["output_1/" + "n" * 256], "output-name"),
        (["output_1/--checkpoint-action=exec=sh x.sh"], "output-name"),
        (["output_1/.Git/config"], "output-name"),
        (["output_1/con.csv"], "output-name"),  # the console: bytes to the terminal, raw
        (["output_1/a.csv:hidden"], "output-name"),  # a hidden stream of a.csv
        (["output_1/a.csv."], "output-name"),  # a.csv
        (["output_1/Data.csv", "output_1/data.csv"], "output-name-clash"),
        (["output_1/caf\u00e9", "output_1/cafe\u0301"], "output-name-clash"),
        (["output_1/a", "output_1/A/b"], "output-name-clash"),
        (["output_1/A/b", "output_1/a"], "output-name-clash"),
        (["output_1/a", "output_1/a/b"], "output-name-clash"),  # a file, then its directory
        (["output_1/a/b", "output_1/a"], "output-name-clash"),
    ],
    ids=[
        "osc-52",
        "carriage-return",
        "bidi-override",
        "zero-width",
        "line-separator",
        "too-long-a-part",
        "option",
        "git",
        "windows-device",
        "windows-stream",
        "windows-dropped-end",
        "case-twins",
        "nfc-nfd-twins",
        "file-then-directory-twin",
        "directory-then-file-twin",
        "file-then-its-directory",
        "directory-then-its-file",
    ],
)
def test_a_download_writes_no_name_a_terminal_acts_on_or_a_disk_holds_as_one(
    tmp_path: Path, names: list[str], check: str
) -> None:
    """The Worker leaves such names out of an output; the client, which writes and shows
    them, does not take the Worker's listing for that: a record of one is refused before
    its file is made, and nothing of the download is left (h19's red team)."""
    target = tmp_path / "new"
    compute = SimpleNamespace(download=lambda _room, _session: iter(frames(names)))
    client: Any = CleanRoomClient.__new__(CleanRoomClient)
    with pytest.raises(TransferError) as caught:
        client._download_checked(compute, "room", KEYS, "output_1", "0" * 64, target, None)
    assert caught.value.check == check
    assert os.listdir(tmp_path) == []
    assert str(caught.value).isascii() and str(caught.value).isprintable()


def test_an_input_whose_manifest_no_worker_takes_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    """A Worker takes an upload manifest of at most 16 MiB (a name and about 90 bytes a
    file): 17,000 files named in 1,000 bytes are past it. The client knows the manifest's
    size from the names and sizes alone, and refuses before it asks any server."""
    deep = tmp_path / "input" / ("d" * 250) / ("e" * 250) / ("f" * 250)
    deep.mkdir(parents=True)
    for number in range(17_000):
        (deep / f"{number:06d}{'g' * 240}").write_bytes(b"")
    spec = SimpleNamespace(inputs={"input_1": "alice"}, sql=None, work_id="w")
    client: Any = CleanRoomClient.__new__(CleanRoomClient)
    client.approved = lambda _name: (SimpleNamespace(name="room"), spec)

    def asked(_room: object) -> None:
        raise AssertionError("a server was asked")

    client._compute = asked
    with pytest.raises(InputTooLargeError) as caught:
        client.upload("room", "input_1", tmp_path / "input")
    assert caught.value.check == "input-manifest-size"
    assert caught.value.exit_code == 2
    assert "17000 files" in str(caught.value) and "tar or zip" in str(caught.value.hint)


@pytest.mark.parametrize("layout", ["link-to-empty-directory", "dangling-link", "file", "full"])
def test_a_download_into_a_link_or_a_used_path_is_refused_before_anything_is_asked(
    tmp_path: Path, layout: str
) -> None:
    """The output is moved into place by renaming, which cannot replace a symbolic link:
    a link to an empty directory was taken, then failed once everything was downloaded.
    The SDK refuses it up front, as `cleanroom data cp` does, before any server is asked."""
    empty = tmp_path / "empty"
    empty.mkdir()
    target = tmp_path / "result"
    if layout == "link-to-empty-directory":
        target.symlink_to(empty)
    elif layout == "dangling-link":
        target.symlink_to(tmp_path / "nowhere")
    elif layout == "file":
        target.write_text("kept")
    else:
        target.mkdir()
        (target / "kept.csv").write_text("kept")
    client: Any = CleanRoomClient.__new__(CleanRoomClient)

    def asked(_name: str) -> None:
        raise AssertionError("a server was asked")

    client.approved = asked
    with pytest.raises(MessageFormatError) as caught:
        client.download("room", "output_1", target)
    assert caught.value.check == "output-directory"
    assert ("symbolic link" in str(caught.value)) == ("link" in layout)
    assert sorted(os.listdir(tmp_path)) == ["empty", "result"] and os.listdir(empty) == []
    if "link" in layout:
        record_path(
            "output (client download)",
            f"the target directory is a {layout.replace('-', ' ')}",
            f"refused: {caught.value.check}, before any server is asked; nothing written",
        )
