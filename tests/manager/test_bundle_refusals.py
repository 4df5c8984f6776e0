"""Malformed function bundles are refused at upload, with the check that refused them.

The manager unpacks every upload with the same checks the Worker applies
(cleanroom.protocol.bundle, tested member by member in tests/protocol): here each
kind of hostile archive goes through the real HTTP upload, and the answer must be
a 422 problem naming the check, with nothing stored and nothing written outside.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cleanroom.client.errors import ServerError
from tests.protocol.test_bundle import HANDLER, craft, member
from tests.protocol.test_bundle_acceptance import DECOY, SO, UTF7_TRICK

from .conftest import Manager


def _special(name: str, kind: bytes, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _huge_member() -> bytes:
    """A member whose header declares 2 GiB, then the end marker: a small upload.

    It must be refused from the header, before anything reads (or allocates)
    what it declares. (A bundle that really is huge is refused by the upload
    limit, 413: test_functions.py.)
    """
    handler = member("handler.py", HANDLER)
    huge = member("huge.bin")
    huge.size = 2 << 30
    padding = b"\0" * (-len(HANDLER) % tarfile.BLOCKSIZE)
    return (
        handler.tobuf(format=tarfile.PAX_FORMAT)
        + HANDLER
        + padding
        + huge.tobuf(format=tarfile.PAX_FORMAT)
        + b"\0" * (2 * tarfile.BLOCKSIZE)
    )


HANDLER_MEMBER = ("handler.py", HANDLER)

HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "path-traversal": (lambda: craft(HANDLER_MEMBER, ("../escape.py", b"x")), "bundle-path"),
    "nested-traversal": (lambda: craft(HANDLER_MEMBER, ("a/../../escape.py", b"x")), "bundle-path"),
    "absolute-path": (lambda: craft(HANDLER_MEMBER, ("/tmp/escape.py", b"x")), "bundle-path"),
    "symlink-out": (
        lambda: craft(HANDLER_MEMBER, _special("link", tarfile.SYMTYPE, linkname="/etc/passwd")),
        "bundle-file-type",
    ),
    "symlink-in": (
        lambda: craft(HANDLER_MEMBER, _special("link", tarfile.SYMTYPE, linkname="handler.py")),
        "bundle-file-type",
    ),
    "hardlink": (
        lambda: craft(HANDLER_MEMBER, _special("link", tarfile.LNKTYPE, linkname="handler.py")),
        "bundle-file-type",
    ),
    "device": (
        lambda: craft(HANDLER_MEMBER, _special("null", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "bundle-file-type",
    ),
    "huge-declared-file": (_huge_member, "bundle-format"),
    "not-an-archive": (lambda: os.urandom(4096), "bundle-format"),
    "gzip-archive": (lambda: gzip.compress(craft(HANDLER_MEMBER), mtime=0), "bundle-format"),
    "no-handler": (lambda: craft(("other.py", b"x = 1\n")), "bundle-handler"),
    # Code the review could not show, and names a reviewer cannot tell apart.
    "bytecode-cache": (
        lambda: craft(
            member("__pycache__", kind=tarfile.DIRTYPE),
            ("__pycache__/handler.cpython-311.pyc", b"\xa7\r\r\n\x01"),
            HANDLER_MEMBER,
        ),
        "bundle-bytecode",
    ),
    "extension-at-top": (lambda: craft((SO, b"\x7fELF"), HANDLER_MEMBER), "bundle-extension"),
    "utf-7-source": (lambda: craft(("handler.py", UTF7_TRICK)), "bundle-source-encoding"),
    "decoy-name": (lambda: craft(HANDLER_MEMBER, (DECOY, HANDLER)), "bundle-name-collision"),
}

# The file each of these refusals must name (escaped: printable ASCII).
NAMED = {
    "bytecode-cache": "__pycache__",
    "extension-at-top": SO,
    "utf-7-source": "handler.py: declares encoding utf-7",
    "decoy-name": "handler.py and handler\\u034f.py",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_bundle_is_refused_at_upload(manager: Manager, kind: str, tmp_path: Path) -> None:
    make, check = HOSTILE[kind]
    client, _ = manager.login("acme")
    with pytest.raises(ServerError) as caught:
        client.upload_function(make())
    assert caught.value.status == 422, caught.value
    assert caught.value.check == check, caught.value
    assert str(caught.value).strip()
    if kind in NAMED:
        assert isinstance(caught.value.actual, str)
        assert NAMED[kind] in caught.value.actual, caught.value.problem
        assert caught.value.problem["detail"].startswith("the bundle is refused: ")
    functions = manager.settings.functions_dir
    assert [p for p in functions.rglob("*") if p.is_file()] == []
    assert not (functions.parent / "escape.py").exists()
    assert not Path("/tmp/escape.py").exists()
