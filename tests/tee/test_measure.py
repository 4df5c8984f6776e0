"""Measurements cover the bytes of every file an image runs, reproducibly, and change with
any of them; the record kept per installation notices a changed file by its stat."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cleanroom.runtimes import Runtime, RuntimeUnavailable, resolve_runtime
from cleanroom.sgx import AttributeFlags
from cleanroom.tee.image import (
    BASE_GROUPS,
    ImageStore,
    Layout,
    group_digest,
    hash_layout,
)
from cleanroom.tee.measure import (
    MANIFEST_TYPE,
    WORKER,
    MeasurementError,
    default_signer_pem,
    image_files,
    manifest_of,
    measure,
    mr_enclave_of,
    mr_signer,
    package_root,
    stored_measurement,
)

GROUPS = (*BASE_GROUPS, "runtime:python3.11", "runtime:python3.11-data")


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    root = tmp_path / "cleanroom"
    shutil.copytree(package_root(), root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def paths_of(image: str) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for entry in image_files(image).files:
        grouped.setdefault(entry.group, set()).add(entry.path)
    return grouped


def data_runtime() -> Runtime:
    try:
        return resolve_runtime("python3.11-data")
    except RuntimeUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the runtimes installed: {error}")
        pytest.skip(str(error))


# -- the measurement -------------------------------------------------------------------------


def test_measurement_is_reproducible() -> None:
    assert measure("attester") == measure("attester")
    assert measure("worker").mr_enclave != measure("attester").mr_enclave


def test_the_recorded_image_is_the_image_hashed_now() -> None:
    """Same installation, same list: the record and a full hashing agree, file by file."""
    assert image_files("worker", fresh=True) == image_files("worker")
    assert measure("worker", fresh=True) == measure("worker") == stored_measurement("worker")
    assert measure("attester", fresh=True) == measure("attester")


def test_mrenclave_is_the_hash_of_the_canonical_manifest() -> None:
    worker = measure("worker")
    files = image_files("worker")
    assert worker.manifest["type"] == MANIFEST_TYPE
    assert worker.mr_enclave == hashlib.sha256(rfc8785.dumps(dict(worker.manifest))).digest()
    assert worker.manifest["groups"] == [group.to_json() for group in files.groups()]
    # Each group's digest is recomputable from the list: one "sha256 size path" line a file.
    for group in worker.manifest["groups"]:
        entries = sorted(
            (entry for entry in files.files if entry.group == group["name"]),
            key=lambda entry: entry.path,
        )
        listing = "".join(f"{e.sha256} {e.size} {e.path}\n" for e in entries)
        assert group["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
        assert (group["files"], group["bytes"]) == (len(entries), sum(e.size for e in entries))


def test_the_list_is_in_a_stable_order_and_names_each_file_once() -> None:
    files = image_files("worker").files
    order = [(GROUPS.index(entry.group), entry.path) for entry in files]
    assert order == sorted(order)
    assert len({entry.path for entry in files}) == len(files)
    assert all(os.path.isabs(entry.path) and len(entry.sha256) == 64 for entry in files)


def test_every_group_holds_what_the_image_runs() -> None:
    worker = paths_of("worker")
    assert os.path.realpath(sys.executable) in worker["interpreter"]
    stdlib = os.path.dirname(os.__file__)
    assert os.path.join(stdlib, "os.py") in worker["stdlib"]
    assert any(p.startswith(os.path.join(stdlib, "lib-dynload")) for p in worker["stdlib"])
    packages = worker["packages"]
    served_by = ("starlette", "uvicorn", "h11", "uvloop", "httptools")
    for module in ("cryptography", "pydantic_core", *served_by):
        # h11: uvicorn imports it only when it serves; its requirement brings it in.
        # uvloop and httptools: what the enclaves serve with (named, never picked).
        assert any(f"/site-packages/{module}/" in path for path in packages), module
    unrelated_packages = ("sqlalchemy", "typer", "alembic", "pytest", "mypy", "hypothesis")
    for unrelated in (*unrelated_packages, "fastapi", "aiohttp"):  # the servers' only
        assert not any(f"/site-packages/{unrelated}/" in path for path in packages), unrelated
    cleanroom = worker["cleanroom"]
    structs = str(package_root() / "sgx" / "structs.py")
    assert structs in cleanroom
    assert any("sgx/__pycache__/structs.cpython-" in path for path in cleanroom)
    assert any(os.path.basename(path).startswith("libc.") for path in worker["libraries"])


def test_the_worker_image_holds_every_installed_runtime_byte_for_byte() -> None:
    runtime = data_runtime()
    worker = paths_of("worker")
    group = worker["runtime:python3.11-data"]
    assert any("/site-packages/polars/" in path for path in group)
    assert any("/site-packages/duckdb/" in path for path in group)
    assert str(runtime.base_executable) in worker["runtime-base"] | worker["interpreter"]
    config = measure("worker").manifest["config"]
    assert Runtime.from_json(config["runtimes"]["python3.11-data"]) == runtime
    assert "runtimes" not in measure("attester").manifest["config"]


# What each image's processes do after importing their service: the Worker's run
# supervisor builds the run's syscall filter (its library is imported only then).
LATER = {"worker": "from cleanroom.enclave.syscalls import filter_fd; filter_fd();", "attester": ""}


@pytest.mark.parametrize("image", ["worker", "attester"])
def test_every_module_the_image_imports_is_measured(image: str) -> None:
    """The image's service module, imported in a fresh process, and what its processes
    do later: every file it loaded, source and bytecode, and every shared library it
    mapped, is in the list (no hand-kept list to drift)."""
    service = {"worker": "worker_service", "attester": "attester_service"}[image]
    probe = (
        "import importlib, json, sys;"
        f"importlib.import_module('cleanroom.enclave.{service}');"
        f"{LATER[image]}"
        "loaded = [f for m in list(sys.modules.values())"
        " for f in (getattr(m, '__file__', None), getattr(m, '__cached__', None)) if f];"
        "maps = [line.split()[-1] for line in open('/proc/self/maps') if '.so' in line];"
        "print(json.dumps(sorted({*loaded, *maps})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = {os.path.realpath(path) for path in json.loads(done.stdout) if os.path.exists(path)}
    measured = {os.path.realpath(entry.path) for entry in image_files(image).files}
    assert loaded - measured == set()
    if image == "worker":  # the filter's library is the image's
        assert any("libseccomp.so" in path for path in measured)


def test_each_image_holds_only_its_own_enclave_code() -> None:
    worker, attester = paths_of("worker")["cleanroom"], paths_of("attester")["cleanroom"]
    root = str(package_root())
    assert f"{root}/enclave/worker.py" in worker - attester
    assert f"{root}/enclave/attester.py" in attester - worker
    assert f"{root}/protocol/handshake.py" in worker & attester
    assert not any(p.startswith((f"{root}/cli/", f"{root}/client/")) for p in worker | attester)


def test_attester_measurement_covers_the_worker_it_admits() -> None:
    config = measure("attester").manifest["config"]
    assert config["worker_mrenclaves"] == [measure("worker").mr_enclave.hex()]


def test_a_changed_trusted_file_changes_both_measurements(source_copy: Path) -> None:
    before_worker = measure("worker", root=source_copy)
    before_attester = measure("attester", root=source_copy)
    target = source_copy / "sgx" / "structs.py"
    target.write_bytes(target.read_bytes() + b"\n# changed\n")
    assert measure("worker", root=source_copy).mr_enclave != before_worker.mr_enclave
    assert measure("attester", root=source_copy).mr_enclave != before_attester.mr_enclave


def test_an_untrusted_file_does_not_change_it(source_copy: Path) -> None:
    before = measure("worker", root=source_copy)
    (source_copy / "cli" / "main.py").write_text("# not inside the enclave\n")
    assert measure("worker", root=source_copy).mr_enclave == before.mr_enclave


def test_attester_code_does_not_change_the_worker(source_copy: Path) -> None:
    before = measure("worker", root=source_copy)
    target = source_copy / "enclave" / "attester.py"
    target.write_bytes(target.read_bytes() + b"\n# changed\n")
    assert measure("worker", root=source_copy).mr_enclave == before.mr_enclave


def synthetic_layout(root: Path) -> Layout:
    """One small file in each group's own directory."""
    layout = Layout(config={"runtimes": {}})
    for index, group in enumerate(GROUPS):
        directory = root / group.replace(":", "_")
        directory.mkdir(parents=True)
        path = directory / "file.bin"
        path.write_bytes(bytes([index]) * 64)
        layout.add(group, [path])
        layout.watched.add(directory)
    return layout


def mr_enclave_of_layout(layout: Layout) -> bytes:
    files = hash_layout("worker", layout).files
    return mr_enclave_of(manifest_of(WORKER, files.groups(), files.config))


@pytest.mark.parametrize("group", GROUPS)
def test_a_changed_byte_in_any_group_changes_mrenclave(tmp_path: Path, group: str) -> None:
    layout = synthetic_layout(tmp_path)
    before = mr_enclave_of_layout(layout)
    assert mr_enclave_of_layout(layout) == before
    target = tmp_path / group.replace(":", "_") / "file.bin"
    data = bytearray(target.read_bytes())
    data[17] ^= 0x01  # one bit, same size
    target.write_bytes(bytes(data))
    assert mr_enclave_of_layout(layout) != before


def test_a_file_moved_to_another_group_changes_mrenclave(tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_text("x = 1\n")
    first, second = Layout(), Layout()
    first.add("packages", [path])
    second.add("cleanroom", [path])
    assert mr_enclave_of_layout(first) != mr_enclave_of_layout(second)


def test_group_digest_commits_to_path_digest_and_size() -> None:
    from cleanroom.tee.image import TrustedFile

    base = TrustedFile("stdlib", "/a", "00" * 32, 1)
    variants = [
        TrustedFile("stdlib", "/b", "00" * 32, 1),
        TrustedFile("stdlib", "/a", "01" * 32, 1),
        TrustedFile("stdlib", "/a", "00" * 32, 2),
    ]
    digest = group_digest("stdlib", [base]).sha256
    assert all(group_digest("stdlib", [variant]).sha256 != digest for variant in variants)


# -- the record of an installation -----------------------------------------------------------

INPUTS = {"executable": "/x/python", "prefix": "/x", "cleanroom": "/x/cleanroom", "runtimes": ""}


def recorded(tmp_path: Path) -> tuple[ImageStore, Layout]:
    layout = synthetic_layout(tmp_path / "files")
    past = time.time() - 60  # not "racily clean": files older than the record
    for _, path in layout.entries:
        os.utime(path, (past, past))
    for directory in layout.watched:
        os.utime(directory, (past, past))
    store = ImageStore(tmp_path / "store")
    assert store.write(hash_layout("worker", layout), INPUTS)
    return store, layout


def test_an_unchanged_installation_is_read_from_its_record(tmp_path: Path) -> None:
    store, layout = recorded(tmp_path)
    loaded = store.load("worker", INPUTS)
    assert loaded is not None
    hashed, unchanged = loaded
    assert unchanged
    assert hashed.files == hash_layout("worker", layout).files
    summary = store.load_summary("worker", INPUTS)
    assert summary is not None
    assert summary["groups"] == [group.to_json() for group in hashed.files.groups()]


@pytest.mark.parametrize("change", ["write", "replace", "add", "remove", "touch"])
def test_a_changed_file_makes_the_record_stale(tmp_path: Path, change: str) -> None:
    store, layout = recorded(tmp_path)
    _, path = layout.entries[3]
    target = Path(path)
    if change == "write":
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF  # same size, same second
        with target.open("r+b") as handle:
            handle.write(bytes(data))
        os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns))
    elif change == "replace":
        replacement = target.with_suffix(".new")
        replacement.write_bytes(target.read_bytes())
        replacement.replace(target)
    elif change == "add":
        (target.parent / "new.pyc").write_bytes(b"bytecode")
    elif change == "remove":
        target.unlink()
    else:
        os.utime(target)
    loaded = store.load("worker", INPUTS)
    assert loaded is not None and loaded[1] is False


def test_a_record_of_other_inputs_or_tampered_is_not_used(tmp_path: Path) -> None:
    store, _ = recorded(tmp_path)
    assert store.load("worker", {**INPUTS, "runtimes": "/elsewhere"}) is None
    assert store.load("attester", INPUTS) is None
    files = store.directory / "worker.files.json"
    document = json.loads(files.read_text())
    document["files"][0]["sha256"] = "ff" * 32
    files.write_text(json.dumps(document))
    assert store.load("worker", INPUTS) is None


def test_a_file_changed_just_before_it_was_hashed_is_hashed_again(tmp_path: Path) -> None:
    """Its stat may not show a change made within the same timestamp tick."""
    layout = synthetic_layout(tmp_path / "files")  # written just now
    store = ImageStore(tmp_path / "store")
    store.write(hash_layout("worker", layout), INPUTS)
    loaded = store.load("worker", INPUTS)
    assert loaded is not None and loaded[1] is False


def test_an_unwritable_store_is_no_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert not ImageStore(blocked / "store").write(
        hash_layout("worker", synthetic_layout(tmp_path / "files")), INPUTS
    )


def test_what_is_no_regular_file_is_a_measurement_error(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    layout = Layout()
    layout.add("stdlib", [fifo])
    with pytest.raises(MeasurementError, match="not a regular file"):
        hash_layout("worker", layout)


def test_a_file_gone_since_it_was_listed_is_not_in_the_image(tmp_path: Path) -> None:
    kept = tmp_path / "kept.py"
    kept.write_text("x = 1\n")
    layout = Layout()
    layout.add("stdlib", [tmp_path / "gone.py", kept])
    assert [entry.path for entry in hash_layout("worker", layout).files.files] == [str(kept)]


# -- signer and identity ---------------------------------------------------------------------


def test_mrsigner_is_sha256_of_the_little_endian_modulus() -> None:
    key = serialization.load_pem_public_key(default_signer_pem())
    assert isinstance(key, rsa.RSAPublicKey)
    modulus = key.public_numbers().n
    expected = hashlib.sha256(modulus.to_bytes(384, "little")).digest()
    assert measure("worker").mr_signer == expected == mr_signer(default_signer_pem())


@pytest.mark.parametrize(("size", "exponent"), [(2048, 3), (3072, 65537)])
def test_signer_key_must_be_an_sgx_signer(size: int, exponent: int) -> None:
    key = rsa.generate_private_key(public_exponent=exponent, key_size=size).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(MeasurementError):
        mr_signer(pem)


def test_identity_is_production_unless_asked() -> None:
    worker = measure("worker")
    assert not worker.identity().attributes.debug
    assert worker.identity().attributes.flags & AttributeFlags.MODE64BIT
    assert worker.identity(debug=True).attributes.debug


def test_unknown_image_is_refused() -> None:
    with pytest.raises(MeasurementError, match="unknown enclave image"):
        measure("controller")


def test_a_distribution_without_a_record_of_its_files_is_refused(tmp_path: Path) -> None:
    """Its files could not be listed, so they could not be measured: never left out."""
    from importlib.metadata import PathDistribution

    from cleanroom.tee.image import _distribution_files

    info = tmp_path / "unrecorded-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unrecorded\nVersion: 1.0\n")
    with pytest.raises(MeasurementError, match="unrecorded"):
        list(_distribution_files(PathDistribution(info)))


def test_the_libraries_are_shared_objects_whatever_the_locale(tmp_path: Path) -> None:
    libraries = paths_of("attester")["libraries"]
    assert libraries and all(".so" in os.path.basename(path) for path in libraries)
