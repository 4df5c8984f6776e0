"""What a bundle may hold: only code a reviewer can read, under names a reviewer can tell apart.

Each trick of a hostile deployer is tried against ``unpack`` (the manager at upload,
the Worker at every run, the reviewer) and against ``pack`` (the deployer's own
tool): both must refuse it with the same check, naming the file.
"""

from __future__ import annotations

import tarfile
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.protocol.bundle import SOURCE_HEAD_BYTES, BundleError, pack, unpack
from cleanroom.protocol.text import shown
from tests.protocol.test_bundle import (
    HANDLER,
    HANDLER_MEMBER,
    Tree,
    assert_refused,
    craft,
    member,
    read_tree,
    scratch,
    snapshot,
    write_tree,
)

SO = "handler.cpython-311-x86_64-linux-gnu.so"


def directories_of(paths: list[str]) -> set[str]:
    every = set()
    for path in paths:
        parts = path.split("/")[:-1]
        every.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return every


def canonical(files: dict[str, bytes], directories: Iterable[str] = ()) -> bytes:
    """The bundle of exactly ``files``, ``directories`` and theirs, in canonical order."""
    entries: list[tarfile.TarInfo | tuple[str, bytes]] = []
    every = directories_of([*files, *(d + "/x" for d in directories)])
    items: list[tuple[str, tarfile.TarInfo | tuple[str, bytes]]] = [
        (d, member(d, kind=tarfile.DIRTYPE)) for d in every
    ]
    items += [(path, (path, data)) for path, data in files.items()]
    for _, entry in sorted(items, key=lambda item: item[0].encode()):
        entries.append(entry)
    return craft(*entries)


def tree_of(files: dict[str, bytes]) -> Tree:
    tree: Tree = {}
    for path, data in files.items():
        *parents, name = path.split("/")
        node = tree
        for parent in parents:
            child = node.setdefault(parent, {})
            assert isinstance(child, dict)
            node = child
        node[name] = data
    return tree


def unpack_refuses(files: dict[str, bytes], check: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(parents=True)
    assert_refused(canonical(files), check, work)


def both_refuse(files: dict[str, bytes], check: str, tmp_path: Path) -> BundleError:
    """``unpack`` of the bundle and ``pack`` of the tree refuse it with ``check``."""
    unpack_refuses(files, check, tmp_path)
    source = write_tree(tmp_path / "source", tree_of(files))
    before = snapshot(tmp_path)
    with pytest.raises(BundleError) as caught:
        pack(source)
    assert caught.value.check == check, str(caught.value)
    assert snapshot(tmp_path) == before
    return caught.value


def both_accept(files: dict[str, bytes], tmp_path: Path) -> None:
    bundle = canonical(files)
    assert unpack(bundle, tmp_path / "unpacked") == sorted(files)
    assert pack(tmp_path / "unpacked") == bundle


# --- bytecode ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "stray.pyc",  # a sourceless module: imported when no stray.py exists
        "pkg/LEGACY.PYC",
        "old.pyo",
        "packages/lib/legacy.pyc",
        "__PYCACHE__/notes.txt",
    ],
)
def test_bytecode_is_refused_by_unpack_and_pack(path: str, tmp_path: Path) -> None:
    error = both_refuse({"handler.py": HANDLER, path: b"\x00bytecode"}, "bundle-bytecode", tmp_path)
    named = path.removesuffix("/notes.txt")  # the cache directory is refused first
    assert f"got {named})" in str(error)


@pytest.mark.parametrize(
    "path", ["__pycache__/handler.cpython-311.pyc", "packages/lib/__pycache__/x.cpython-311.pyc"]
)
def test_a_bytecode_cache_is_refused_by_unpack_and_left_out_by_pack(
    path: str, tmp_path: Path
) -> None:
    files = {"handler.py": HANDLER, path: b"\x00bytecode"}
    unpack_refuses(files, "bundle-bytecode", tmp_path)
    source = write_tree(tmp_path / "source", tree_of(files))
    kept = directories_of([path]) - {d for d in directories_of([path]) if "__pycache__" in d}
    assert pack(source) == canonical({"handler.py": HANDLER}, kept)


def test_an_empty_pycache_directory_is_refused_by_unpack(tmp_path: Path) -> None:
    bundle = craft(member("__pycache__", kind=tarfile.DIRTYPE), HANDLER_MEMBER)
    work = tmp_path / "work"
    work.mkdir()
    assert_refused(bundle, "bundle-bytecode", work)


def test_the_issue_bytecode_trick_runs_other_code_than_its_source(tmp_path: Path) -> None:
    """Why bytecode is refused: an unchecked-hash .pyc runs whatever it was compiled from."""
    import importlib.util
    import py_compile
    import subprocess
    import sys

    source = write_tree(tmp_path / "f", {"handler.py": b"def run():\n    return 'reviewed'\n"})
    decoy = tmp_path / "decoy.py"
    decoy.write_text("def run():\n    return 'hidden'\n")
    cache = Path(importlib.util.cache_from_source(str(source / "handler.py")))
    py_compile.compile(
        str(decoy),
        cfile=str(cache),
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    ran = subprocess.run(
        [sys.executable, "-c", "import handler; print(handler.run())"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ran.stdout.strip() == "hidden"  # the source says 'reviewed'
    relative = cache.relative_to(source).as_posix()
    files = {"handler.py": (source / "handler.py").read_bytes(), relative: cache.read_bytes()}
    work = tmp_path / "work"
    work.mkdir()
    assert_refused(canonical(files), "bundle-bytecode", work)
    assert pack(source) == pack(write_tree(tmp_path / "clean", {"handler.py": files["handler.py"]}))


# --- compiled extensions ----------------------------------------------------------------


@pytest.mark.parametrize("path", [SO, "lib/fast.abi3.so", "helper.pyd", "mod.SO"])
def test_extensions_outside_packages_are_refused(path: str, tmp_path: Path) -> None:
    error = both_refuse({"handler.py": HANDLER, path: b"\x7fELF"}, "bundle-extension", tmp_path)
    assert path in str(error)


def test_extensions_under_packages_are_accepted(tmp_path: Path) -> None:
    both_accept(
        {
            "handler.py": HANDLER,
            "packages/fast.cpython-311-x86_64-linux-gnu.so": b"\x7fELF",
            "packages/numpy/core/_umath.abi3.so": b"\x7fELF",
        },
        tmp_path,
    )


# --- source encodings -------------------------------------------------------------------

UTF7_TRICK = (
    b"# -*- coding: utf-7 -*-\n"
    b"def run():\n"
    b"    # a harmless comment +AAo-    return 'hidden'\n"
    b"    return 'reviewed'\n"
)


def test_the_utf7_trick_runs_a_line_that_reads_as_a_comment() -> None:
    """Why declared encodings are refused: Python decodes this as UTF-7."""
    namespace: dict[str, object] = {}
    exec(compile(UTF7_TRICK, "handler.py", "exec"), namespace)  # noqa: S102 - the trick itself
    run = namespace["run"]
    assert callable(run)
    assert run() == "hidden"
    assert "return 'reviewed'" in UTF7_TRICK.decode("utf-8")  # what a reviewer reads


@pytest.mark.parametrize(
    ("source", "declared"),
    [
        (UTF7_TRICK, "utf-7"),
        (b"#!/usr/bin/env python3\n# vim: set fileencoding=latin-1 :\nX = 1\n", "latin-1"),
        (b"X = 1  # -*- coding: cp1252 -*-\n", "cp1252"),
        (b"\n# coding=shift_jis\n", "shift_jis"),
        (b"# coding: no-such-codec\n", "no-such-codec"),
        (b"\xef\xbb\xbf# coding: latin-1\n", "latin-1"),
        (b"# coding: utf-8\r# coding: utf-16\rX = 1\r", "utf-16"),
    ],
    ids=["utf-7", "latin-1-line-2", "trailing-comment", "blank-first-line", "unknown", "bom",
         "cr-lines"],
)  # fmt: skip
def test_a_source_declaring_another_encoding_is_refused(
    source: bytes, declared: str, tmp_path: Path
) -> None:
    for name in ("handler.py", "packages/lib/util.py", "gui.pyw"):
        files = {"handler.py": HANDLER, name: source}
        error = both_refuse(files, "bundle-source-encoding", tmp_path / name.replace("/", "-"))
        assert f"{name}: declares encoding {declared}" in str(error)


@pytest.mark.parametrize(
    "source",
    [
        b"# -*- coding: utf-8 -*-\nX = 1\n",
        b"# coding=UTF_8\n",
        b"# coding: utf8\n",
        b"# coding: utf-8-sig\n",
        b"\xef\xbb\xbfX = '\xc3\xa9'\n",
        b"X = 1\nY = 2\n# coding: latin-1\n",  # a third line is never read for a declaration
        b"",
        b"open(path, encoding=ENCODING)\n",  # code, not a declaration
    ],
)
def test_utf8_sources_are_accepted(source: bytes, tmp_path: Path) -> None:
    both_accept({"handler.py": HANDLER, "util.py": source}, tmp_path)


def test_a_source_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    files = {"handler.py": b"X = 1\nY = '\xe9'\n"}
    error = both_refuse(files, "bundle-source-encoding", tmp_path)
    assert "handler.py: not UTF-8 at byte 11" in str(error)


def test_a_first_line_too_long_to_look_at_is_refused(tmp_path: Path) -> None:
    long_line = b"#" + b"x" * SOURCE_HEAD_BYTES + b"\n"
    both_refuse({"handler.py": long_line}, "bundle-source-encoding", tmp_path / "long")
    both_accept({"handler.py": b"X = 1\n" + b"#" * SOURCE_HEAD_BYTES + b"\n"}, tmp_path)


def test_data_files_may_hold_any_bytes(tmp_path: Path) -> None:
    both_accept({"handler.py": HANDLER, "data.bin": b"\xff\xfe# coding: utf-7\n"}, tmp_path)


# --- names that read alike --------------------------------------------------------------

DECOY = "handler\u034f.py"  # U+034F COMBINING GRAPHEME JOINER: invisible


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("handler.py", DECOY),
        (unicodedata.normalize("NFC", "café.py"), unicodedata.normalize("NFD", "café.py")),
        ("Data.csv", "data.csv"),
        ("\ufb01le.txt", "file.txt"),  # LATIN SMALL LIGATURE FI
        ("lib/x.py", "LIB/x.py"),
        ("a\u200bb.txt", "ab.txt"),  # zero-width space
    ],
)
def test_names_that_read_alike_are_refused(first: str, second: str, tmp_path: Path) -> None:
    files = {"handler.py": HANDLER, first: b"1\n", second: b"2\n"}
    error = both_refuse(files, "bundle-name-collision", tmp_path)
    # Both names are named, escaped so that they can be told apart.
    message = str(error)
    assert message.isascii()
    if "/" in first:  # their directories collide first
        first, second = first.split("/")[0], second.split("/")[0]
    assert f"got {' and '.join(shown(name) for name in sorted([first, second]))})" in message


# --- pack and unpack accept the same set --------------------------------------------------

_NAME_PARTS = st.sampled_from(
    ["a", "A", "b", "x.py", "X.PY", "y.pyc", "z.so", "packages", "__pycache__", "é", "e\u0301",
     "k\u034f", "data.txt"]
)  # fmt: skip
_CONTENTS = st.sampled_from(
    [b"X = 1\n", b"# coding: latin-1\n", b"\xff", b"", b"# -*- coding: utf-8 -*-\n", b"\x00\x01"]
)
_PATHS = st.lists(_NAME_PARTS, min_size=1, max_size=3).map("/".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_PATHS, _CONTENTS, max_size=5))
def test_pack_accepts_exactly_what_unpack_accepts(files: dict[str, bytes]) -> None:
    files = {"handler.py": HANDLER, **files}
    # A path cannot be both a file and a directory of the tree.
    if any(other.startswith(path + "/") for path in files for other in files):
        return

    # pack leaves out directories named exactly __pycache__ (caches); unpack sees the rest.
    def cached(path: str) -> bool:
        return "__pycache__" in path.split("/")[:-1]

    packed_files = {p: d for p, d in files.items() if not cached(p)}
    kept = {d for d in directories_of(list(files)) if not cached(d + "/x")}
    with scratch() as root:
        source = write_tree(root / "source", tree_of(files))
        try:
            packed: bytes | None = pack(source)
        except BundleError:
            packed = None
        try:
            unpack(canonical(packed_files, kept), root / "unpacked")
            unpacked = True
        except BundleError:
            unpacked = False
        assert (packed is not None) == unpacked, files
        if packed is not None:
            assert packed == canonical(packed_files, kept)
            assert read_tree(root / "unpacked") == packed_files


# --- one spelling of a tree -------------------------------------------------------------


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _ustar(name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, size: int = -1) -> bytes:
    info = member(name, data, kind=kind)
    info.size = len(data) if size < 0 else size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _ended(data: bytes) -> bytes:
    data += b"\0" * (2 * tarfile.BLOCKSIZE)
    return data + b"\0" * (-len(data) % tarfile.RECORDSIZE)


def _not_as_pack_writes() -> dict[str, bytes]:
    """Bundles of handler.py and y.py, or of handler.py alone, spelled otherwise than
    ``pack`` spells them; every check of their members passes."""
    source = b"y = 1\n"
    handler = _ustar("handler.py", HANDLER) + _padded(HANDLER)
    plain = handler + _ustar("y.py", source) + _padded(source)
    # 3.11 reads this pax record (its length field says 14, it is 13 bytes: the padding's
    # NUL is taken for its newline) as the path "y.py\n"; 3.13.0 refuses the archive.
    record = b"14 path=y.py\n"
    mislength = (
        handler
        + _ustar("././@PaxHeader", record, kind=tarfile.XHDTYPE)
        + _padded(record)
        + _ustar("x.py", source)
        + _padded(source)
    )
    comment = b"15 comment=xyz\n"
    commented = (
        handler
        + _ustar("././@PaxHeader", comment, kind=tarfile.XHDTYPE)
        + _padded(comment)
        + _ustar("y.py", source)
        + _padded(source)
    )
    hidden = _ustar("b.py", source) + _padded(source)
    smuggled = (
        _ustar("a", kind=tarfile.DIRTYPE, size=len(hidden)) + hidden + handler
    )  # a directory whose "data" is the header of b.py
    dated = member("handler.py", HANDLER)
    dated.mtime = 1
    return {
        "zero blocks past the record": _ended(plain) + b"\0" * tarfile.RECORDSIZE,
        "a member's mtime": _ended(dated.tobuf(tarfile.PAX_FORMAT) + _padded(HANDLER)),
        "a pax record on a short name": _ended(commented),
        "a pax record of a wrong length": _ended(mislength),
        "a directory with a size": _ended(smuggled),
        "a GNU long name": _ended(
            handler
            + _ustar("././@LongLink", b"z" * 120 + b".py\0", kind=tarfile.GNUTYPE_LONGNAME)
            + _padded(b"z" * 120 + b".py\0")
            + _ustar("zz.py", source)
            + _padded(source)
        ),
    }


@pytest.mark.parametrize("case", sorted(_not_as_pack_writes()))
def test_a_bundle_is_refused_unless_it_is_what_pack_makes_of_its_files(
    case: str, tmp_path: Path
) -> None:
    """Every reader parses a bundle with its own interpreter's tarfile, and tarfile reads
    pax records, GNU long names and sized directories otherwise from release to release
    (3.13.0 refuses the wrong-length record that 3.11 reads as the path ``y.py\\n``). Each
    of these was accepted, and would have been reviewed on one reader and run on another
    (found by h9): only ``pack``'s own spelling of a tree is one every release reads alike."""
    work = tmp_path / "work"
    work.mkdir()
    assert_refused(_not_as_pack_writes()[case], "bundle-canonical", work)


def test_pack_is_the_one_spelling_unpack_takes(tmp_path: Path) -> None:
    """What ``pack`` writes is accepted, from bytes and from a file, and names past 100
    bytes and outside ASCII too (a pax header holding the path alone)."""
    source = write_tree(
        tmp_path / "source",
        {"handler.py": HANDLER, "caf\u00e9.py": b"x = 1\n", "d": {"y" * 150 + ".py": b""}},
    )
    bundle = pack(source)
    assert unpack(bundle, tmp_path / "from-bytes") == sorted(
        ["handler.py", "caf\u00e9.py", "d/" + "y" * 150 + ".py"]
    )
    with (tmp_path / "bundle.tar").open("w+b") as file:
        file.write(bundle)
        assert unpack(file, tmp_path / "from-file")
