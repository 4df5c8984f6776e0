"""The function bundle: one tree gives one bundle, and unpack refuses by name."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.protocol.bundle import (
    DEFAULT_MAX_BYTES,
    BundleError,
    function_id,
    pack,
    unpack,
)
from cleanroom.protocol.errors import ProtocolError
from tests.reliability.report import record_path

HANDLER = b"def run():\n    pass\n"

Tree: TypeAlias = "dict[str, bytes | Tree]"


def write_tree(root: Path, tree: Tree) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            write_tree(root / name, value)
        else:
            (root / name).write_bytes(value)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file()
    }


def snapshot(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


@pytest.fixture
def function(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "function",
        {
            "handler.py": HANDLER,
            "util.py": b"K = 10\n",
            "pkg": {"__init__.py": b"", "sub": {"data.txt": b"x\n"}},
        },
    )


def member(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def craft(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    """A tar archive of exactly these members, in this order (no checks)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                name, data = entry
                tar.addfile(member(name, data), io.BytesIO(data))
            else:
                tar.addfile(entry)
    return buffer.getvalue()


@contextmanager
def refused(check: str, work: Path) -> Iterator[None]:
    """Expect a BundleError naming ``check`` and nothing written under ``work``."""
    before = snapshot(work)
    with pytest.raises(BundleError) as caught:
        yield
    assert caught.value.check == check, str(caught.value)
    assert isinstance(caught.value, ProtocolError)
    assert snapshot(work) == before


# --- pack: determinism ----------------------------------------------------------


def test_pack_twice_gives_identical_bytes(function: Path) -> None:
    assert pack(function) == pack(function)


def test_vector(tmp_path: Path) -> None:
    """The exact bytes are part of the protocol: docs/protocol.md quotes this ID."""
    root = write_tree(tmp_path / "f", {"handler.py": HANDLER, "pkg": {"__init__.py": b""}})
    bundle = pack(root)
    assert len(bundle) == 10240
    assert function_id(bundle) == "fs://uNoSrCY37PfaNTzPc55bwyyipXya-dapKtmC9goRuPc"


def test_vector_of_names_a_pax_header_holds(tmp_path: Path) -> None:
    """The bytes of a path past 100 bytes and of one outside ASCII (a pax header holds
    each) are part of the protocol too: unpack takes only what pack makes of a tree
    (bundle-canonical), so an interpreter whose tarfile wrote them otherwise would refuse
    every other party's bundles. docs/protocol.md quotes this ID."""
    root = write_tree(
        tmp_path / "f",
        {"handler.py": HANDLER, "caf\u00e9.py": b"x = 1\n", "d": {"y" * 150 + ".py": b""}},
    )
    bundle = pack(root)
    assert len(bundle) == 10240
    assert function_id(bundle) == "fs://299FNPGeq-QM9lScfD8eqOy2o59ZgOd9NnHcLMr17Qk"


def test_vector_of_names_at_the_edges_of_the_tar_formats(tmp_path: Path) -> None:
    """Names at ustar's edges (99, 100 and 101 bytes; 255; a path ustar's prefix field
    would split), names holding a line break, a tab, spaces and a pax record's look, and
    contents one byte either side of a block: one ID, and read back alike, on Python
    3.10.13, 3.11.7, 3.12.1 and 3.13.0 (tried by h10's red team of bundle-canonical:
    pack's bytes are the only spelling unpack takes, so a release writing or reading
    any of them otherwise would refuse, or misread, every other party's bundles)."""
    files = {
        "handler.py": HANDLER,
        "a" * 96 + ".txt": b"99", "b" * 96 + ".txt2": b"100", "c" * 96 + ".txt23": b"101",
        "h" * 251 + ".txt": b"255", "line\nbreak.txt": b"", "tab\tand space.txt": b"",
        "27 path=x.txt": b"a pax record's look", "e511.bin": b"\1" * 511,
        "e512.bin": b"\0" * 512, "p" * 99 + "/" + "n" * 99: b"ustar's prefix would split it",
    }  # fmt: skip
    root = tmp_path / "f"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    bundle = pack(root)
    assert len(bundle) == 20480
    assert function_id(bundle) == "fs://LlcnsRGmRw34K395g2lWU6BexVHk7SJLKkuGhmzMUsw"
    paths = unpack(bundle, tmp_path / "out")
    assert {path: (tmp_path / "out" / path).read_bytes() for path in paths} == files


def test_metadata_is_not_carried(function: Path, tmp_path: Path) -> None:
    reference = pack(function)
    other = write_tree(tmp_path / "other", read_tree_nested(function))
    os.chmod(other / "handler.py", 0o755)  # noqa: S103  (metadata that must not matter)
    os.chmod(other / "util.py", 0o600)
    os.chmod(other / "pkg", 0o700)
    os.utime(other / "handler.py", (1, 1_700_000_000))
    os.utime(other / "pkg" / "sub", (5, 5))
    assert pack(other) == reference


def test_creation_order_and_owner_are_not_carried(function: Path, tmp_path: Path) -> None:
    tree = read_tree_nested(function)
    other = write_tree(tmp_path / "other", dict(reversed(tree.items())))
    if os.geteuid() == 0:
        os.chown(other / "util.py", 1234, 5678)
        os.chown(other / "pkg", 4321, 8765)
    assert pack(other) == pack(function)


def read_tree_nested(root: Path) -> Tree:
    tree: Tree = {}
    for child in sorted(root.iterdir()):
        tree[child.name] = read_tree_nested(child) if child.is_dir() else child.read_bytes()
    return tree


def test_fixed_metadata_and_canonical_order(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "f", {"handler.py": HANDLER, "a": {"x": b"1"}, "a-b": b"2", "a.txt": b"3"}
    )
    with tarfile.open(fileobj=io.BytesIO(pack(root))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a", "a-b", "a.txt", "a/x", "handler.py"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_pax_header_only_when_a_path_needs_one(tmp_path: Path) -> None:
    plain = pack(write_tree(tmp_path / "plain", {"handler.py": HANDLER}))
    assert b"PaxHeader" not in plain
    long = "d" * 120
    root = write_tree(tmp_path / "long", {"handler.py": HANDLER, long: {"é.py": b"z"}})
    bundle = pack(root)
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        headers = {m.name: m.pax_headers for m in tar.getmembers()}
    assert headers == {
        long: {"path": long + "/"},
        long + "/é.py": {"path": long + "/é.py"},
        "handler.py": {},
    }
    assert pack(root) == bundle


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "util.py").write_bytes(b"K = 11\n"),
        lambda root: (root / "util.py").rename(root / "util2.py"),
        lambda root: (root / "pkg" / "sub").rename(root / "pkg" / "sub2"),
        lambda root: (root / "pkg" / "empty").mkdir(),
        lambda root: (root / "new.py").write_bytes(b""),
    ],
    ids=["content", "file-name", "directory-name", "empty-directory", "new-file"],
)
def test_any_change_changes_the_id(function: Path, change: Callable[[Path], object]) -> None:
    before = function_id(pack(function))
    change(function)
    assert function_id(pack(function)) != before


def test_pycache_directories_are_skipped(function: Path) -> None:
    reference = pack(function)
    for cache in (function / "__pycache__", function / "pkg" / "__pycache__"):
        cache.mkdir()
        (cache / "util.cpython-311.pyc").write_bytes(b"\x00bytecode")
        (cache / "link").symlink_to("/etc/passwd")  # not even looked at
    assert pack(function) == reference


def test_pack_refuses_bytecode_outside_a_cache(function: Path) -> None:
    # A .pyc beside the sources is no cache: Python imports it when no source
    # of that name exists, so it is code the review could not show.
    (function / "stray.pyc").write_bytes(b"\x00")
    with refused("bundle-bytecode", function):
        pack(function)


def test_function_id_format() -> None:
    identifier = function_id(b"")
    assert identifier == "fs://47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    assert len(identifier) == 5 + 43


# --- round trip -------------------------------------------------------------------


def test_round_trip(function: Path, tmp_path: Path) -> None:
    bundle = pack(function)
    destination = tmp_path / "out" / "fn"
    destination.parent.mkdir()
    files = unpack(bundle, destination)
    assert files == ["handler.py", "pkg/__init__.py", "pkg/sub/data.txt", "util.py"]
    assert read_tree(destination) == read_tree(function)
    assert pack(destination) == bundle
    assert sorted(os.listdir(destination.parent)) == ["fn"]  # no staging directory left


def test_unpacked_files_are_not_executable(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "f", {"handler.py": HANDLER})
    os.chmod(root / "handler.py", 0o4777)  # noqa: S103  (a mode that must not survive)
    destination = tmp_path / "out"
    unpack(pack(root), destination)
    assert (destination / "handler.py").stat().st_mode & 0o7777 == 0o644


# --- pack: refusals ---------------------------------------------------------------


def test_pack_refuses_symlink(function: Path) -> None:
    (function / "pkg" / "sub" / "link.py").symlink_to("../__init__.py")
    with refused("bundle-symlink", function):
        pack(function)
    record_path("bundle (pack)", "a symlink in the function", "refused: bundle-symlink")


def test_pack_refuses_symlinked_directory(function: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(function)
    with refused("bundle-symlink", tmp_path):
        pack(tmp_path / "alias")
    record_path("bundle (pack)", "the function directory is a symlink", "refused: bundle-symlink")


def test_pack_refuses_fifo(function: Path) -> None:
    os.mkfifo(function / "pkg" / "pipe")
    with refused("bundle-file-type", function):
        pack(function)


def test_pack_refuses_missing_handler(function: Path) -> None:
    (function / "handler.py").rename(function / "pkg" / "handler.py")
    with refused("bundle-handler", function):
        pack(function)


def test_pack_refuses_handler_directory(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "f", {"handler.py": {"x.py": b""}})
    with refused("bundle-handler", root):
        pack(root)


@pytest.mark.parametrize("name", [b"bad\xff.py", b"back\\slash.py"], ids=["utf8", "backslash"])
def test_pack_refuses_bad_path(function: Path, name: bytes) -> None:
    with open(os.path.join(os.fsencode(function), b"pkg", name), "wb"):
        pass
    with refused("bundle-path", function):
        pack(function)


def test_pack_size_limit(function: Path) -> None:
    total = len(HANDLER) + len(b"K = 10\n") + len(b"x\n")
    assert pack(function, max_bytes=total)
    with refused("bundle-size", function):
        pack(function, max_bytes=total - 1)


def test_pack_file_limit(function: Path) -> None:
    assert pack(function, max_files=6)  # 4 files, 2 directories
    with refused("bundle-size", function):
        pack(function, max_files=5)


# --- unpack: refusals ---------------------------------------------------------------

HANDLER_MEMBER = ("handler.py", HANDLER)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty directory that holds ``dest`` (not created) and nothing else."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def assert_refused(bundle: bytes, check: str, work: Path, **limits: int) -> None:
    """Refused with ``check``, whether ``unpack`` is given the bytes or a file of them."""
    with refused(check, work.parent):
        unpack(bundle, work / "dest", **limits)
    assert os.listdir(work) == []
    with tempfile.TemporaryFile() as file:
        file.write(bundle)
        with refused(check, work.parent):
            unpack(file, work / "dest", **limits)
    assert os.listdir(work) == []


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("../escape", "bundle-path"),
        ("/abs/path", "bundle-path"),
        ("a/../../escape", "bundle-path"),
        ("./handler.py", "bundle-path"),
        ("a//b", "bundle-path"),
        ("back\\slash", "bundle-path"),
        ("x" * 256, "bundle-path"),
        ("bad\udcff", "bundle-path"),
    ],
)
def test_unpack_refuses_bad_paths(work: Path, name: str, check: str) -> None:
    bundle = craft(HANDLER_MEMBER, (name, b"evil"))
    assert_refused(bundle, check, work)
    assert not (work.parent / "escape").exists()
    assert not Path("/abs").exists()
    record_path("bundle (unpack)", f"member {name[:40]!r}", f"refused: {check}; nothing written")


@pytest.mark.parametrize(
    "info",
    [
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"},
        {"name": "link", "type": tarfile.SYMTYPE, "linkname": "handler.py"},
        {"name": "link", "type": tarfile.LNKTYPE, "linkname": "handler.py"},
        {"name": "null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3},
        {"name": "disk", "type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0},
        {"name": "pipe", "type": tarfile.FIFOTYPE},
        {"name": "cont", "type": tarfile.CONTTYPE},
    ],
    ids=["symlink-out", "symlink-in", "hardlink", "char-device", "block-device", "fifo", "cont"],
)
def test_unpack_refuses_special_members(work: Path, info: dict[str, object]) -> None:
    special = tarfile.TarInfo(str(info.pop("name")))
    for key, value in info.items():
        setattr(special, key, value)
    assert_refused(craft(HANDLER_MEMBER, special), "bundle-file-type", work)
    if special.issym() or special.islnk():
        kind = "symlink" if special.issym() else "hard link"
        record_path(
            "bundle (unpack)",
            f"{kind} member to {special.linkname}",
            "refused: bundle-file-type; nothing written",
        )


def test_unpack_refuses_duplicates(work: Path) -> None:
    assert_refused(craft(HANDLER_MEMBER, HANDLER_MEMBER), "bundle-duplicate", work)
    other = work / "other"
    other.mkdir()
    bundle = craft(member("a", kind=tarfile.DIRTYPE), ("a", b"file"), HANDLER_MEMBER)
    assert_refused(bundle, "bundle-duplicate", other)


def test_unpack_refuses_reversed_order(work: Path, function: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(pack(function))) as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers()]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as out:
            for info, data in reversed(members):
                out.addfile(info, data)
    assert_refused(buffer.getvalue(), "bundle-canonical", work)


def test_unpack_refuses_unsorted_files(work: Path) -> None:
    assert_refused(craft(HANDLER_MEMBER, ("a.py", b"")), "bundle-canonical", work)


def test_unpack_refuses_file_before_its_directory(work: Path) -> None:
    assert_refused(craft(("a/x.py", b""), HANDLER_MEMBER), "bundle-canonical", work)
    other = work / "other"
    other.mkdir()
    assert_refused(craft(("a", b""), ("a/x.py", b""), HANDLER_MEMBER), "bundle-canonical", other)


def test_unpack_size_limit(work: Path, function: Path) -> None:
    bundle = pack(function)
    total = len(HANDLER) + len(b"K = 10\n") + len(b"x\n")
    assert_refused(bundle, "bundle-size", work, max_bytes=total - 1)
    assert unpack(bundle, work / "dest", max_bytes=total)


def test_unpack_refuses_too_many_members(work: Path, function: Path) -> None:
    bundle = pack(function)
    assert_refused(bundle, "bundle-size", work, max_files=5)
    assert unpack(bundle, work / "dest", max_files=6)


def test_unpack_refuses_missing_handler(work: Path) -> None:
    assert_refused(craft(("main.py", HANDLER)), "bundle-handler", work)
    other = work / "other"
    other.mkdir()
    bundle = craft(member("handler.py", kind=tarfile.DIRTYPE), ("handler.py/x", b""))
    assert_refused(bundle, "bundle-handler", other)


def end_of_members(bundle: bytes) -> int:
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        tar.getmembers()
        return tar.offset


@pytest.mark.parametrize(
    "make",
    [
        lambda bundle: os.urandom(4096),
        lambda bundle: b"",
        lambda bundle: gzip.compress(bundle, mtime=0),
        lambda bundle: bundle[:700],  # handler.py's contents cut short
        lambda bundle: bundle[:520],  # handler.py's header only
        lambda bundle: bundle[:1024],  # cut at a member boundary, no end marker
        lambda bundle: bundle[: end_of_members(bundle) + 1023],  # end marker cut short
        lambda bundle: bundle + b"x",  # data after the end marker
        lambda bundle: bundle + craft(("hidden.py", b"")),  # a member after the end marker
        lambda bundle: bundle[:1024] + b"\xff" * 512 + b"\x00" * 1024,  # a bad header
        lambda bundle: b"\x00" * 1024,  # an empty archive, which has no handler
    ],
    ids=[
        "random",
        "empty",
        "gzip",
        "truncated-data",
        "truncated-header",
        "truncated-at-member",
        "truncated-end",
        "trailing-byte",
        "hidden-member",
        "bad-header",
        "zeros",
    ],
)
def test_unpack_refuses_non_tar(work: Path, function: Path, make: Callable[[bytes], bytes]) -> None:
    bundle = make(pack(function))
    check = "bundle-handler" if bundle == b"\x00" * 1024 else "bundle-format"
    assert_refused(bundle, check, work)


def test_unpack_refuses_existing_destination(work: Path, function: Path) -> None:
    (work / "dest").mkdir()
    with refused("bundle-destination", work):
        unpack(pack(function), work / "dest")
    (work / "dest").rmdir()
    (work / "dest").symlink_to("/nonexistent")
    with refused("bundle-destination", work):
        unpack(pack(function), work / "dest")


def test_error_names_the_check(work: Path) -> None:
    with pytest.raises(BundleError) as caught:
        unpack(craft(HANDLER_MEMBER, ("../escape", b"")), work / "dest")
    assert caught.value.to_json()["check"] == "bundle-path"
    assert str(caught.value).startswith("bundle-path: ")
    assert "../escape" in str(caught.value)


# --- hypothesis -------------------------------------------------------------------

_NAMES = st.text("abcdefgh_-.0", min_size=1, max_size=8).filter(
    lambda name: name not in (".", "..") and not name.endswith(".pyc")
)
_TREES = st.recursive(
    st.binary(max_size=300),
    lambda children: st.dictionaries(_NAMES, children, max_size=4),
    max_leaves=12,
)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_raise_only_bundle_error(data: bytes) -> None:
    with scratch() as root:
        try:
            unpack(data, root / "dest")
        except BundleError:
            assert os.listdir(root) == []
        else:
            assert os.listdir(root) == ["dest"]


_VALID = craft(member("d", kind=tarfile.DIRTYPE), ("d/e", b"e" * 600), HANDLER_MEMBER, ("z", b"zz"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_bundles_raise_only_bundle_error(data: st.DataObject) -> None:
    bundle = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, 3 * 512 + 600))
        bundle[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(bundle)))
    mutated = bytes(bundle[:cut])
    with scratch() as root:
        try:
            files = unpack(mutated, root / "dest")
        except BundleError:
            assert os.listdir(root) == []
        else:
            assert "handler.py" in files
            assert os.listdir(root) == ["dest"]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_NAMES, _TREES, max_size=5), st.text(max_size=100))
def test_random_trees_round_trip(tree: Tree, handler: str) -> None:
    # handler.py is a Python source: UTF-8 (test_bundle_acceptance.py tries other bytes).
    tree["handler.py"] = handler.replace("coding", "").encode("utf-8")
    with scratch() as root:
        source = write_tree(root / "source", tree)
        bundle = pack(source)
        files = unpack(bundle, root / "dest")
        assert files == sorted(read_tree(source))
        assert read_tree(root / "dest") == read_tree(source)
        assert pack(root / "dest") == bundle
        assert bundle == pack(source)


def test_default_limit() -> None:
    assert DEFAULT_MAX_BYTES == 1 << 30
