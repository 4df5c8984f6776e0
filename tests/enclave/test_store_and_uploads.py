"""The sealed store and uploads: nothing plaintext at rest, nothing accepted unless exact."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from cleanroom.enclave.errors import StoreError, UploadError
from cleanroom.enclave.store import MAX_CHUNK, SealedStore, wipe
from cleanroom.enclave.uploads import MANIFEST_TYPE, Upload
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.manifest import MAX_UPLOAD_MANIFEST, SALT_BYTES
from tests.reliability.report import record_path

SECRET = b"alice@example.com,1984-01-01\n" * 1000


@pytest.fixture
def store(tmp_path: Path) -> SealedStore:
    return SealedStore(tmp_path / "sealed")


def write(store: SealedStore, name: str, data: bytes) -> None:
    writer = store.create(name)
    writer.write(data)
    store.record(writer.close())


def test_round_trip_and_no_plaintext_on_disk(store: SealedStore, tmp_path: Path) -> None:
    big = SECRET * 100  # several chunks
    write(store, "input_1/emails.csv", big)
    assert b"".join(store.read("input_1/emails.csv")) == big
    for path in (tmp_path / "sealed").iterdir():
        raw = path.read_bytes()
        assert b"alice@example.com" not in raw
        assert len(raw) > len(big) > 2 * MAX_CHUNK


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "drop-chunk"])
def test_tampering_at_rest_is_detected(store: SealedStore, tmp_path: Path, damage: str) -> None:
    write(store, "input_1/a", SECRET * 100)
    (path,) = (tmp_path / "sealed").iterdir()
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[100] ^= 1
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "append":
        raw += b"\x00"
    else:  # remove the first chunk whole: the next one is out of place
        first = int.from_bytes(raw[:4], "big") + 5
        raw = raw[first:]
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError):
        b"".join(store.read("input_1/a"))


def test_objects_cannot_be_swapped_at_rest(store: SealedStore, tmp_path: Path) -> None:
    write(store, "input_1/a", b"AAAA")
    write(store, "input_1/b", b"BBBB")
    first, second = sorted((tmp_path / "sealed").iterdir())
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(StoreError, match="sealed-chunk"):
        b"".join(store.read("input_1/a"))


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "input_1/../x", "input_1//x", "solo", "a\\b/c", "a/./b"]
)
def test_unsafe_names_are_refused(store: SealedStore, name: str) -> None:
    with pytest.raises(StoreError) as caught:
        store.create(name)
    assert caught.value.check == "object-name"


def test_no_refusal_of_the_store_quotes_an_object_name(store: SealedStore) -> None:
    """An object's path is its owner's data (sealed on the wire); a store refusal leaves
    the enclave in the clear (a function's output file named with a backslash put its
    plaintext in the room's status through one). Each names the input or output only."""
    write(store, "input_1/tokyo.csv", b"x")
    refusals = {
        "object-name": lambda: store.create("output_1/\\alice@tokyo.example"),
        "object-exists": lambda: store.create("input_1/tokyo.csv"),
        "object-known": lambda: b"".join(store.read("output_1/tokyo-result.csv")),
    }
    for check, refused in refusals.items():
        with pytest.raises(StoreError) as caught:
            refused()
        shown = json.dumps(caught.value.to_json()) + str(caught.value)
        assert caught.value.check == check
        assert "tokyo" not in shown, shown
        assert "an object of " in shown, shown


def test_no_overwrite_and_erase(store: SealedStore, tmp_path: Path) -> None:
    write(store, "input_1/a", b"x")
    with pytest.raises(StoreError, match="object-exists"):
        store.create("input_1/a")
    store.erase()
    assert not (tmp_path / "sealed").exists()
    with pytest.raises(StoreError):
        b"".join(store.read("input_1/a"))


def test_wipe_removes_scratch_plaintext(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "inputs").mkdir(parents=True)
    (scratch / "inputs" / "f").write_bytes(SECRET)
    wipe(scratch)
    assert not scratch.exists()


# --------------------------------------------------------------------- uploads

FILES = {"emails.csv": SECRET, "sub/more.csv": b"x,y\n"}


def manifest(files: dict[str, bytes], input_id: str = "input_1") -> bytes:
    return json.dumps(
        {
            "type": MANIFEST_TYPE,
            "input": input_id,
            "salt": b64u(bytes(SALT_BYTES)),
            "files": {
                name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for name, data in files.items()
            },
        }
    ).encode()


def send(upload: Upload, files: dict[str, bytes], manifest_bytes: bytes) -> object:
    for name, data in files.items():
        upload.feed(f"input_1/{name}", False, data[:10])
        upload.feed(f"input_1/{name}", True, data[10:])
    return upload.feed("input_1/.manifest", True, manifest_bytes)


def test_upload_matching_its_manifest_completes(store: SealedStore) -> None:
    done = send(Upload(store, "input_1", "alice"), FILES, manifest(FILES))
    assert done is not None
    assert [o.name for o in store.objects("input_1")] == [
        "input_1/emails.csv",
        "input_1/sub/more.csv",
    ]
    expected = hashlib.sha256(canonical(json.loads(manifest(FILES)))).hexdigest()
    assert done.sha256 == expected  # type: ignore[attr-defined]
    assert b"".join(store.read("input_1/emails.csv")) == SECRET


@pytest.mark.parametrize(
    ("listed", "check"),
    [
        ({"emails.csv": SECRET}, "manifest-files"),  # a file the manifest omits
        ({**FILES, "extra": b""}, "manifest-files"),  # a file that never came
        ({"emails.csv": SECRET + b"!", "sub/more.csv": b"x,y\n"}, "manifest-size"),
        ({"emails.csv": SECRET[:-1] + b"?", "sub/more.csv": b"x,y\n"}, "manifest-sha256"),
    ],
)
def test_upload_not_matching_its_manifest_is_refused_and_erased(
    store: SealedStore, tmp_path: Path, listed: dict[str, bytes], check: str
) -> None:
    with pytest.raises(UploadError) as caught:
        send(Upload(store, "input_1", "alice"), FILES, manifest(listed))
    assert caught.value.check == check
    assert store.objects("input_1") == []
    assert list((tmp_path / "sealed").iterdir()) == []


def test_manifest_for_another_input_is_refused(store: SealedStore) -> None:
    with pytest.raises(UploadError, match="manifest-format"):
        send(Upload(store, "input_1", "alice"), FILES, manifest(FILES, input_id="input_2"))


def test_records_outside_the_sessions_input_are_refused(store: SealedStore) -> None:
    with pytest.raises(UploadError) as caught:
        Upload(store, "input_1", "alice").feed("input_2/x", True, b"")
    assert caught.value.check == "upload-path"


@pytest.mark.parametrize(
    "path",
    [
        "input_1/../input_2/x",
        "input_1/../../etc/passwd",
        "/input_1/x",
        "input_1//x",
        "input_1/./x",
        "input_1/a\\..\\x",
        "input_2/x",
        "input_1/x\x00y",
        "input_1/" + "a" * 256,
    ],
)
def test_upload_record_paths_that_leave_the_input_are_refused(
    store: SealedStore, tmp_path: Path, path: str
) -> None:
    """Whatever path a record names, the Worker stores nothing outside ``<input>/``."""
    upload = Upload(store, "input_1", "alice")
    with pytest.raises((UploadError, StoreError)) as caught:
        upload.feed(path, True, b"evil")
    assert caught.value.check in {"upload-path", "object-name"}
    assert list((tmp_path / "sealed").iterdir()) == []
    record_path(
        "upload (Worker)",
        f"record {path[:40]!r}",
        f"refused: {caught.value.check}; nothing stored",
    )


def test_file_without_its_final_record_is_truncation(store: SealedStore, tmp_path: Path) -> None:
    upload = Upload(store, "input_1", "alice")
    upload.feed("input_1/emails.csv", False, SECRET)
    with pytest.raises(UploadError) as caught:
        upload.feed("input_1/.manifest", True, manifest({"emails.csv": SECRET}))
    assert caught.value.check == "upload-truncated"
    assert list((tmp_path / "sealed").iterdir()) == []


def test_nothing_after_the_manifest(store: SealedStore) -> None:
    upload = Upload(store, "input_1", "alice")
    send(upload, FILES, manifest(FILES))
    with pytest.raises(UploadError, match="upload-complete"):
        upload.feed("input_1/late", True, b"")


def test_file_sent_twice_is_refused(store: SealedStore) -> None:
    upload = Upload(store, "input_1", "alice")
    upload.feed("input_1/a", True, b"1")
    with pytest.raises(UploadError, match="upload-duplicate"):
        upload.feed("input_1/a", True, b"2")


def test_malformed_manifest_is_refused(store: SealedStore) -> None:
    upload = Upload(store, "input_1", "alice")
    with pytest.raises(UploadError, match="manifest-format"):
        upload.feed("input_1/.manifest", True, b"\xff not json")


def test_huge_chunk_header_at_rest_is_refused_before_reading(
    store: SealedStore, tmp_path: Path
) -> None:
    write(store, "input_1/a", b"data")
    (path,) = (tmp_path / "sealed").iterdir()
    raw = bytearray(path.read_bytes())
    raw[0:4] = (0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="chunk header"):
        b"".join(store.read("input_1/a"))


def test_manifest_entry_with_extra_fields_is_refused_and_erased(
    store: SealedStore, tmp_path: Path
) -> None:
    listed = json.loads(manifest(FILES))
    listed["files"]["emails.csv"]["note"] = float("inf")
    with pytest.raises(UploadError) as caught:
        send(Upload(store, "input_1", "alice"), FILES, json.dumps(listed).encode())
    assert caught.value.check == "manifest-format"
    assert list((tmp_path / "sealed").iterdir()) == []


@pytest.mark.parametrize(
    "salt",
    [
        None,  # the v1 manifest: no salt, so its digest confirms a guess of the data
        "",
        b64u(bytes(SALT_BYTES - 1)),  # too short to hide a guess
        b64u(bytes(SALT_BYTES + 1)),
        b64u(bytes(SALT_BYTES)) + "=",  # padded: two texts of one manifest
        "A" * 42 + "B",  # non-canonical bits: two encodings of one salt
        1234,
    ],
    ids=["missing", "empty", "short", "long", "padded", "non-canonical", "number"],
)
def test_a_manifest_without_a_salt_of_32_bytes_is_refused_and_erased(
    store: SealedStore, tmp_path: Path, salt: object
) -> None:
    listed = json.loads(manifest(FILES))
    if salt is None:
        del listed["salt"]
    else:
        listed["salt"] = salt
    with pytest.raises(UploadError) as caught:
        send(Upload(store, "input_1", "alice"), FILES, json.dumps(listed).encode())
    assert caught.value.check == "manifest-format"
    assert store.objects("input_1") == []
    assert list((tmp_path / "sealed").iterdir()) == []


def test_the_v1_manifest_is_refused(store: SealedStore) -> None:
    listed = json.loads(manifest(FILES))
    listed["type"] = "cleanroom/upload-manifest/v1"
    with pytest.raises(UploadError, match="manifest-format"):
        send(Upload(store, "input_1", "alice"), FILES, json.dumps(listed).encode())


NAMED = {"customers_tokyo.csv": SECRET, "sub/region=osaka.csv": b"x,y\n"}
SALT = bytes(range(SALT_BYTES))


def named_manifest(files: dict[str, dict[str, object]], **changes: object) -> bytes:
    document = {"type": MANIFEST_TYPE, "input": "input_1", "salt": b64u(SALT), "files": files}
    document.update(changes)
    return json.dumps(document).encode()


def entries(files: dict[str, bytes]) -> dict[str, dict[str, object]]:
    return {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in files.items()
    }


def _refusals() -> list[tuple[str, list[tuple[str, bool, bytes]]]]:
    """Each way an upload of NAMED is refused: the records fed, in order."""
    records = [(f"input_1/{n}", True, d) for n, d in NAMED.items()]
    one = records[:1]
    first = dict(list(NAMED.items())[:1])
    listed = entries(NAMED)
    wrong_size = {**listed, "customers_tokyo.csv": {**listed["customers_tokyo.csv"], "size": 1}}
    wrong_digest = {
        **listed, "customers_tokyo.csv": {**listed["customers_tokyo.csv"], "sha256": "0" * 64}
    }  # fmt: skip
    manifest_of = lambda document: [("input_1/.manifest", True, document)]  # noqa: E731
    return [
        ("manifest-files", one + manifest_of(named_manifest(listed))),
        ("manifest-files", records + manifest_of(named_manifest(entries(first)))),
        ("manifest-size", records + manifest_of(named_manifest(wrong_size))),
        ("manifest-sha256", records + manifest_of(named_manifest(wrong_digest))),
        ("manifest-format", records + manifest_of(named_manifest(listed, input="input_2"))),
        ("manifest-format", records + manifest_of(named_manifest(listed, salt=b64u(SALT) + "x"))),
        ("manifest-format", records + manifest_of(named_manifest(
            {**listed, "customers_tokyo.csv": {"size": 1}}))),
        ("upload-truncated", [("input_1/customers_tokyo.csv", False, SECRET),
                              *manifest_of(named_manifest(listed))]),
        ("upload-complete", records + manifest_of(named_manifest(listed))
                            + [("input_1/customers_tokyo_late.csv", True, b"")]),
        ("upload-duplicate", one + one),
        ("upload-order", [("input_1/.manifest", False, b"{"), *one]),
        ("upload-path", [("input_2/customers_tokyo.csv", True, b"")]),
        ("upload-path", [("input_1/customers_tokyo" + "o" * 250 + ".csv", True, b"")]),
        ("upload-path", [("input_1/customers_tokyo", True, b""),
                         ("input_1/customers_tokyo/x.csv", True, b"")]),
        ("object-name", [("input_1/customers_tokyo/../x.csv", True, b"")]),
    ]  # fmt: skip


@pytest.mark.parametrize(("check", "records"), _refusals(), ids=[c for c, _ in _refusals()])
def test_no_refusal_of_an_upload_names_a_file_its_digest_or_the_salt(
    store: SealedStore, check: str, records: list[tuple[str, bool, bytes]]
) -> None:
    """A refusal leaves the enclave in the clear (the Controller relays it, the host
    logs it), and the record stream seals the paths: so no refusal gives back a file's
    name, a file's SHA-256 (which confirms a guess of it) or the manifest's salt."""
    upload = Upload(store, "input_1", "alice")
    with pytest.raises(UploadError) as caught:
        for path, final, data in records:
            upload.feed(path, final, data)
    error = caught.value
    assert error.check == check
    shown = (json.dumps(error.to_json()) + str(error)).encode()
    secrets_ = [b"tokyo", b"osaka", b"region=", b"sub/", b64u(SALT).encode()[:12],
                *(hashlib.sha256(d).hexdigest().encode() for d in NAMED.values())]  # fmt: skip
    assert [s for s in secrets_ if s in shown] == [], shown


@pytest.mark.parametrize(
    "entry",
    ["link", "other-output", "too-big", "bidi", "option", "git", "twin"],
)
def test_an_unexpected_entry_in_the_outputs_stream_is_refused_without_its_name(entry: str) -> None:
    """The supervisor's outputs stream (tar) is checked in the Worker: only regular
    files of the spec's outputs, within the disk limit, named as a recipient may write
    and list them, no two alike on a disk that ignores case (the supervisor leaves the
    others out: one here is its fault, h19). The refusal becomes the run's failure,
    which the status shows in the clear: it names the output, not the path."""
    import io
    import tarfile

    from cleanroom.enclave.errors import RunError
    from cleanroom.enclave.runner import _receive_outputs
    from cleanroom.enclave.supervisor import Limits

    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        name = {"other-output": "output_9"}.get(entry, "output_1") + "/region=Tokyo/part-0.csv"
        if entry == "twin":
            tar.addfile(
                _regular(name.upper().replace("OUTPUT_1", "output_1"), b"x"), io.BytesIO(b"x")
            )
        name = {
            "bidi": "output_1/region=Tokyo/part\u202ecsv.exe",
            "option": "output_1/region=Tokyo/--checkpoint=1",
            "git": "output_1/region=Tokyo/.git/config",
        }.get(entry, name)
        member = tarfile.TarInfo(name)
        if entry == "link":
            member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(member)
        else:
            data = b"x" * (2 << 20 if entry == "too-big" else 10)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    stream.seek(0)
    limits = Limits(memory_mib=64, processes=8, cpu_s=10, timeout_s=10, disk_mib=1)
    with pytest.raises(RunError) as caught:
        _receive_outputs(stream, ["output_1"], limits, lambda *_args: None)
    assert caught.value.check == "run-outputs"
    assert "Tokyo" not in str(caught.value) and "Tokyo" not in json.dumps(caught.value.to_json())


def _regular(name: str, data: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member


def test_a_manifest_in_many_records_is_joined_up_to_its_bound(store: SealedStore) -> None:
    """An upload's manifest comes in records of at most 1 MiB (the client's of 12,000
    files is 1.3 MiB): joined, up to MAX_UPLOAD_MANIFEST (16 MiB), and refused past it
    at the record that crosses it, what the upload stored erased."""
    upload = Upload(store, "input_1", "alice")
    upload.feed("input_1/emails.csv", True, SECRET)
    chunk = b" " * MAX_CHUNK
    for _ in range(MAX_UPLOAD_MANIFEST // MAX_CHUNK):
        assert upload.feed("input_1/.manifest", False, chunk) is None
    with pytest.raises(UploadError) as caught:
        upload.feed("input_1/.manifest", True, b" ")
    assert caught.value.check == "manifest-size"
    assert store.objects("input_1") == []
