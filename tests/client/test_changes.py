"""The review diff, side against side: packages, binary files, a long diff, a tampered record."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from cleanroom.client.changes import MAX_DIFF_FILE_BYTES, MAX_DIFF_LINES, Side, compare
from cleanroom.client.review import BundleFile, ReviewError, parameter_value, resources
from cleanroom.client.vendored import Vendored, VendoredDistribution
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.spec import Resources, WorkSpec
from tests.protocol.fixtures import SPEC_DOCUMENT


def side(
    root: Path, files: dict[str, bytes], vendored: Vendored | None = None, label: str = "x"
) -> Side:
    listed = {}
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        listed[path] = BundleFile(path, len(data), hashlib.sha256(data).hexdigest())
    function = "fs://" + "A" * 43 if label == "before" else "fs://" + "B" * 43
    return Side(label, None, function, listed, vendored or Vendored((), ()), root)


def distribution(
    name: str, version: str, digest: str, *, differ: bool = False
) -> VendoredDistribution:
    return VendoredDistribution(
        name, version, f"packages/{name}-{version}.dist-info", (), True,
        ("packages/x.py",) if differ else (), (), digest,
    )  # fmt: skip


def test_packages(tmp_path: Path) -> None:
    before = Vendored(
        (
            distribution("gone", "1.0", "a"),
            distribution("numpy", "1.26.3", "b"),
            distribution("same", "2.0", "c"),
        ),
        ("packages/loose.py",),
    )
    after = Vendored(
        (
            distribution("new", "0.1", "d"),
            distribution("numpy", "1.26.4", "e"),
            distribution("same", "2.0", "f", differ=True),
        ),
        (),
    )
    changes = compare(
        side(tmp_path / "a", {}, before, "before"), side(tmp_path / "b", {}, after, "after")
    )
    assert changes.packages == [
        "- gone 1.0",
        "+ new 0.1",
        "~ numpy 1.26.3 -> 1.26.4",
        "~ same 2.0: same version, other files",
        "! same: its files no longer match its RECORD",
        "- packages/loose.py (in no RECORD)",
    ]


def test_binary_and_vendored_files_are_compared_by_digest(tmp_path: Path) -> None:
    changes = compare(
        side(
            tmp_path / "a", {"blob.bin": b"\xff\x00", "packages/p.py": b"A = 1\n"}, label="before"
        ),
        side(tmp_path / "b", {"blob.bin": b"\xff\x01", "packages/p.py": b"A = 2\n"}),
    )
    assert changes.files == [
        "~ blob.bin (2 -> 2 bytes)",
        "~ packages/p.py (6 -> 6 bytes)",
    ]
    assert changes.code == ["blob.bin: binary or larger than 1 MiB, digest changed"]
    # Its change is not shown: not compared, as a diff cut or a 404 (found by h22).
    assert changes.not_compared == [
        {"path": "blob.bin", "why": "binary or larger than 1 MiB: not shown line by line"}
    ]
    assert not changes.complete


def test_a_text_file_over_a_mebibyte_is_not_compared_and_a_removed_binary_is(
    tmp_path: Path,
) -> None:
    """A handler.py of 1.1 MiB, changed, was said to have a changed digest, and the
    review exited 0, read as compared (h22); a binary file removed is shown in full by
    the list of files."""
    large = b"x = 1\n" * (MAX_DIFF_FILE_BYTES // 6 + 1)
    changes = compare(
        side(tmp_path / "a", {"handler.py": large, "old.bin": b"\xff"}, label="before"),
        side(tmp_path / "b", {"handler.py": large + b"import os\n"}),
    )
    assert changes.not_compared == [
        {"path": "handler.py", "why": "binary or larger than 1 MiB: not shown line by line"}
    ]
    assert "- old.bin (1 bytes)" in changes.files


def test_a_long_diff_is_cut(tmp_path: Path) -> None:
    many = "".join(f"x{i} = {i}\n" for i in range(MAX_DIFF_LINES)).encode()
    changes = compare(
        side(tmp_path / "a", {"a.py": b""}, label="before"), side(tmp_path / "b", {"a.py": many})
    )
    assert len(changes.code) == MAX_DIFF_LINES
    assert any("cut after" in note for note in changes.notes)


def test_a_cut_diff_lists_every_file_it_did_not_show(tmp_path: Path) -> None:
    """The files after the cut were in no section and in no note: the text and the
    JSON read as if their code had not changed."""
    many = "".join(f"x{i} = {i}\n" for i in range(MAX_DIFF_LINES)).encode()
    changes = compare(
        side(tmp_path / "a", {"a.py": b"", "b.py": b"1\n"}, label="before"),
        side(tmp_path / "b", {"a.py": many, "b.py": b"2\n"}),
    )
    assert not changes.complete
    cut = f"the code diff is cut after {MAX_DIFF_LINES} lines"
    assert changes.not_compared == [
        {"path": "a.py", "why": cut},
        {"path": "b.py", "why": f"{cut}, before this file"},
    ]
    assert changes.to_json()["complete"] is False
    assert f"    b.py: {cut}, before this file" in changes.lines()


def test_bytes_not_at_hand_are_not_compared_and_said_so(tmp_path: Path) -> None:
    """The earlier function's bytes not at hand (its files known by digest): every file
    it had that changed is NOT compared, with why; an added file is shown in full."""
    before = side(tmp_path / "a", {"a.py": b"1\n", "gone.py": b"g\n"}, label="before")
    before = dataclasses.replace(before, directory=None, missing="the manager answered 404")
    changes = compare(before, side(tmp_path / "b", {"a.py": b"2\n", "new.py": b"n\n"}))
    why = "before: the function's bytes are not at hand (the manager answered 404)"
    assert changes.not_compared == [
        {"path": "a.py", "why": why},
        {"path": "gone.py", "why": why},
    ]
    assert changes.code[-1] == "+n"
    lines = changes.lines()
    assert "  NOT compared (what changed there is not shown above):" in lines
    assert "  none" not in lines


def test_files_not_known_are_not_compared_unless_the_function_is_the_same(
    tmp_path: Path,
) -> None:
    """A record made at deploy holds no files: another function's are NOT compared;
    the same function ID is the same bytes, nothing left out."""
    after = side(tmp_path / "b", {"a.py": b"2\n"})
    unknown = Side("before", None, "fs://" + "A" * 43, None, None, None)
    changes = compare(unknown, after)
    assert changes.not_compared == [
        {
            "path": None,
            "why": "before: its files are not known, only the function IDs compared",
        }
    ]
    assert "    every file: before: its files are not known, only the function IDs compared" in (
        changes.lines()
    )
    same = dataclasses.replace(unknown, function_id=after.function_id)
    assert compare(same, after).complete


def test_lines_end_where_python_ends_them(tmp_path: Path) -> None:
    """A lone CR ends a line for Python: the diff shows it as two; U+2028 does not."""
    changes = compare(
        side(tmp_path / "a", {"a.py": b"x = 1\n"}, label="before"),
        side(tmp_path / "b", {"a.py": "x = 1\rimport os\u2028# y\n".encode()}),
    )
    assert changes.code == [
        "--- a.py (before)",
        "+++ a.py (now)",
        "@@ -1 +1,2 @@",
        " x = 1",
        "+import os\\u2028# y",
    ]


def test_a_record_that_does_not_hash_to_its_work_id_is_refused() -> None:
    """A profile file changed behind the user's back is not compared with."""
    spec = WorkSpec.parse(SPEC_DOCUMENT)
    record = {
        "spec": spec.document(),
        "function_id": spec.function,
        "files": [],
        "packages": {"distributions": [], "unrecorded": []},
    }
    assert Side.of_record("x", spec.work_id, record).spec == spec
    tampered = {**record, "spec": {**spec.document(), "parameters": {"k": 1}}}
    with pytest.raises(ReviewError) as caught:
        Side.of_record("x", spec.work_id, tampered)
    assert caught.value.check == "review-record"
    with pytest.raises(ReviewError):
        Side.of_record("x", spec.work_id, {**record, "files": [{"path": "x"}]})


@pytest.mark.parametrize(
    ("limit", "value", "line"),
    [
        ("memory_mib", 4096, "~ memory: 2048 MiB -> 4096 MiB"),
        ("timeout_s", 60, "~ timeout: 3600 s -> 60 s"),
        ("cpu_s", 64 * 7 * 86400, "~ cpu: 14400 s -> 38707200 s"),
        ("processes", 65536, "~ processes: 256 -> 65536"),
        ("disk_mib", 1 << 20, "~ disk: 1024 MiB -> 1048576 MiB"),
    ],
)
def test_every_limit_of_a_run_is_compared(limit: str, value: int, line: str) -> None:
    """Every field of the spec's resources is in the Work-ID, so each is in the diff: a
    redeploy that changed only the CPU time, the processes or the disk was said to have
    changed nothing ("none"), the Work-ID another (found by h9)."""
    before = WorkSpec.parse(SPEC_DOCUMENT)
    document = {**SPEC_DOCUMENT, "resources": {**SPEC_DOCUMENT["resources"], limit: value}}
    after = WorkSpec.parse({**document, "nonce": "B" * 21 + "A"})
    changes = compare(
        Side("before", before, before.function, None, None, None),
        Side("after", after, after.function, None, None, None),
    )
    assert changes.spec == [line]
    assert changes.changed
    assert changes.notes[0] == "the nonce differs too, as in every deployment"


def test_the_review_names_every_limit_of_a_run() -> None:
    """No field of the spec's resources is left out of what the review shows."""
    shown = dict(resources(WorkSpec.parse(SPEC_DOCUMENT).resources))
    assert shown == {
        "memory": "2048 MiB",
        "timeout": "3600 s",
        "cpu": "14400 s",
        "processes": "256",
        "disk": "1024 MiB",
    }
    assert len(shown) == len(Resources.model_fields)


@pytest.mark.parametrize(
    ("served", "reads"),
    [(10.0, "10"), (-0.0, "0"), (1e-7, "1e-7"), (0.1 + 0.2, "0.30000000000000004"), (True, "true")],
)
def test_a_number_is_shown_as_the_function_reads_it(served: float, reads: str) -> None:
    """JCS writes 10.0 as 10 and -0.0 as 0: a manager may serve either document under one
    Work-ID, and the function reads parameters.json, the canonical JSON, whichever it was.
    The review showed the served document's 10.0, -0.0 and 1e-07 (found by h9)."""
    spec = WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": served}})
    assert parameter_value(spec.parameters["k"]) == reads
    assert canonical(spec.parameters) == b'{"k":' + reads.encode() + b"}"  # parameters.json
    if isinstance(served, float) and served.is_integer():
        integer = WorkSpec.parse({**SPEC_DOCUMENT, "parameters": {"k": int(served)}})
        assert integer.work_id == spec.work_id
        changes = compare(
            Side("before", integer, integer.function, None, None, None),
            Side("after", spec, spec.function, None, None, None),
        )
        assert changes.parameters == []  # one Work-ID, one value


def test_a_sql_rooms_changed_numbers_are_shown_as_the_room_reads_them() -> None:
    """inspect --against showed a SQL room's changed rule as json.dumps wrote it (an ε
    of 1e-07, a budget of 2.0), where the review shows the canonical JSON the room reads
    (1e-7, 2): one number read two ways (left open by h12)."""
    from tests.sql.fixtures import sql_document

    def spec_with(epsilon: float, budget: float) -> WorkSpec:
        document = sql_document(dp=True)
        document["sql"]["rules"]["input_1"]["differential_privacy"].update(
            epsilon=epsilon, budget=budget
        )
        return WorkSpec.parse(document)

    before, after = spec_with(1e-7, 2.0), spec_with(2e-7, 2.0)
    changes = compare(
        Side("before", before, before.function, None, None, None),
        Side("after", after, after.function, None, None, None),
    )
    [line] = [line for line in changes.spec if line.startswith("~ sql.rules.input_1:")]
    assert '"epsilon":1e-7' in line and '"epsilon":2e-7' in line, line
    assert '"budget":2,' in line and "1e-07" not in line and "2.0" not in line, line
