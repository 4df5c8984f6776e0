"""``receipt ROOM --save DIR`` creates its two files, never through a planted link.

The directory must be new or empty when the command starts; in a directory others
can write (a shared ``/tmp/audit``), another local user could, between that check
and the write, put ``receipt.json.tmp`` there as a link to a file of the saver's:
the receipt was written through it (``Path.write_text`` follows links), over that
file. Each file is now created with ``O_EXCL | O_NOFOLLOW``, and one that appeared
meanwhile is a refusal (``save-directory``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cleanroom.attestation import EvidenceError
from cleanroom.client.audit import QUOTE_FILE, RECEIPT_FILE, _write


def _shared(tmp_path: Path, planted: str) -> tuple[Path, Path]:
    victim = tmp_path / "bashrc"
    victim.write_text("the saver's own file\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / planted).symlink_to(victim)
    return shared, victim


def test_a_link_planted_as_the_temporary_file_is_not_written_through(tmp_path: Path) -> None:
    shared, victim = _shared(tmp_path, f"{RECEIPT_FILE}.tmp")
    _write(shared / RECEIPT_FILE, '{"receipt": 1}\n')
    assert victim.read_text() == "the saver's own file\n"
    written = shared / RECEIPT_FILE
    assert not written.is_symlink() and written.read_text() == '{"receipt": 1}\n'


def test_a_file_planted_under_the_name_is_a_refusal(tmp_path: Path) -> None:
    shared, victim = _shared(tmp_path, RECEIPT_FILE)
    with pytest.raises(EvidenceError) as caught:
        _write(shared / RECEIPT_FILE, '{"receipt": 1}\n')
    assert caught.value.check == "save-directory"
    assert victim.read_text() == "the saver's own file\n"


def test_a_new_file_is_written(tmp_path: Path) -> None:
    _write(tmp_path / QUOTE_FILE, "{}\n")
    assert (tmp_path / QUOTE_FILE).read_text() == "{}\n"
    assert (tmp_path / QUOTE_FILE).stat().st_mode & 0o777 == 0o644
