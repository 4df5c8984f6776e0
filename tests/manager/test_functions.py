"""Function storage: uploads hashed and checked, size-limited, reads re-verified."""

from __future__ import annotations

import inspect
import io
import json
import os
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager import Settings, audit
from cleanroom.manager.database import (
    AuditEntry,
    ComputeServer,
    FunctionUploader,
    StoredFunction,
)
from cleanroom.manager.storage import (
    CHUNK_BYTES,
    FunctionStore,
    StoredFunctionCorrupt,
    collect_garbage,
)
from cleanroom.protocol.bundle import function_id
from cleanroom.tokens import MANAGER_SUBJECT
from tests.auth import as_client

from .conftest import Manager, StandInController, closed_port_url, make_bundle, make_spec


def stored_files(manager: Manager) -> list[str]:
    """The files under functions/, the incoming area included."""
    root = manager.settings.functions_dir
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def raw_upload(
    manager: Manager, client: ManagerClient | None, content: bytes | Iterator[bytes]
) -> httpx.Response:
    url = f"{manager.url}/v1/functions"
    headers = {"content-type": "application/octet-stream"}
    if client is not None:
        headers.update(as_client(client, "POST", url))
    return httpx.post(url, content=content, headers=headers)


def test_upload_download_and_no_op_reupload(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    first = client.upload_function(bundle)
    assert (first.function_id, first.size, first.created) == (
        function_id(bundle),
        len(bundle),
        True,
    )
    again = client.upload_function(bundle)
    assert (again.function_id, again.created) == (first.function_id, False)
    assert client.download_function(first.function_id) == bundle
    digest = first.function_id.removeprefix("fs://")
    assert stored_files(manager) == [digest]


def test_upload_status_codes_over_raw_http(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    created = raw_upload(manager, client, bundle)
    assert created.status_code == 201
    assert created.json() == {"function_id": function_id(bundle), "size": len(bundle)}
    assert raw_upload(manager, client, bundle).status_code == 200


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_over_the_limit_is_413(
    start_manager: Callable[..., Manager], tmp_path: Path, streamed: bool
) -> None:
    manager = start_manager(max_function_bytes=20_480)
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function", "x = 1\n" + "#" * 20_000 + "\n")
    assert len(bundle) > 20_480
    content: bytes | Iterator[bytes] = (
        iter([bundle[i : i + 4096] for i in range(0, len(bundle), 4096)]) if streamed else bundle
    )
    answer = raw_upload(manager, client, content)
    assert answer.status_code == 413
    problem = answer.json()
    assert "20480 bytes" in problem["detail"]
    assert (problem["check"], problem["expected"]) == ("function-size", "at most 20480 bytes")
    assert problem["actual"] == (
        "more than 20480 bytes (the upload was stopped there)"
        if streamed
        else f"{len(bundle)} bytes (Content-Length)"
    )
    assert stored_files(manager) == []


def test_the_default_limit_is_one_gib() -> None:
    from cleanroom.cli.server import manager as manager_command

    assert Settings(data_dir=Path("unused"), public_url="http://m").max_function_bytes == 1 << 30
    option = inspect.signature(manager_command).parameters["max_function_bytes"]
    assert option.default == 1 << 30


def test_at_the_limit_is_accepted(start_manager: Callable[..., Manager], tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "function")
    manager = start_manager(max_function_bytes=len(bundle))
    client, _ = manager.login("acme")
    assert client.upload_function(bundle).created


def test_not_a_tar_is_422(manager: Manager) -> None:
    client, _ = manager.login("acme")
    with pytest.raises(ServerError) as caught:
        client.upload_function(b"print('hello')\n" * 100)
    assert caught.value.status == 422
    assert caught.value.check == "bundle-format"
    assert stored_files(manager) == []


def traversal_bundle() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("../evil.py", b"x = 1\n"), ("handler.py", b"def main(c): pass\n")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_traversal_bundle_is_422(manager: Manager) -> None:
    client, _ = manager.login("acme")
    with pytest.raises(ServerError) as caught:
        client.upload_function(traversal_bundle())
    assert caught.value.status == 422
    assert caught.value.check == "bundle-path"
    assert "evil" in str(caught.value)
    assert stored_files(manager) == []
    assert not (manager.settings.data_dir.parent / "evil.py").exists()


def test_a_bundle_tampered_on_disk_is_refused_on_read(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    upload = client.upload_function(bundle)
    stored = manager.settings.functions_dir / upload.function_id.removeprefix("fs://")
    tampered = bytearray(stored.read_bytes())
    tampered[520] ^= 0x01  # inside handler.py's contents (after its 512-byte header)
    stored.write_bytes(bytes(tampered))
    with pytest.raises(ServerError) as caught:
        client.download_function(upload.function_id)
    assert caught.value.status == 500
    assert caught.value.check == "function-id"
    assert caught.value.expected == upload.function_id


def test_the_client_refuses_a_bundle_that_does_not_match(tmp_path: Path) -> None:
    # A lying manager: whatever is asked, it sends another bundle.
    other = make_bundle(tmp_path / "other", "def main(c): return 2\n")
    wanted = function_id(make_bundle(tmp_path / "wanted"))
    lying = httpx.MockTransport(lambda request: httpx.Response(200, content=other))
    with (
        ManagerClient("http://manager.test", transport=lying) as client,
        pytest.raises(UntrustedAnswerError) as caught,
    ):
        client.download_function(wanted)
    assert caught.value.check == "function-id"
    assert (caught.value.expected, caught.value.actual) == (wanted, function_id(other))


def test_the_client_refuses_an_upload_answered_with_another_id(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "function")
    wrong = {"function_id": "fs://" + "A" * 43, "size": len(bundle)}
    lying = httpx.MockTransport(lambda request: httpx.Response(201, json=wrong))
    with (
        ManagerClient("http://manager.test", transport=lying) as client,
        pytest.raises(UntrustedAnswerError) as caught,
    ):
        client.upload_function(bundle)
    assert caught.value.check == "function-id"


def test_another_project_cannot_download_a_function_it_did_not_upload(
    manager: Manager, tmp_path: Path
) -> None:
    owner, _ = manager.login("acme")
    stranger, _ = manager.login("globex")
    upload = owner.upload_function(make_bundle(tmp_path / "function"))
    with pytest.raises(ServerError) as caught:
        stranger.download_function(upload.function_id)
    assert caught.value.status == 404


def test_another_project_that_uploads_the_same_bytes_may_download(
    manager: Manager, tmp_path: Path
) -> None:
    owner, _ = manager.login("acme")
    other, _ = manager.login("globex")
    bundle = make_bundle(tmp_path / "function")
    owner.upload_function(bundle)
    assert other.upload_function(bundle).created is True  # new to globex
    assert other.download_function(function_id(bundle)) == bundle


def test_an_upload_does_not_tell_whether_another_project_stored_the_bundle(
    manager: Manager, tmp_path: Path
) -> None:
    """``201`` is new to the caller's project, ``200`` uploaded by it before. It was new
    to the manager: any project holding a bundle's bytes learned from the answer whether
    another project had uploaded them (found by h17's red team). The operator's audit
    still says it was stored already."""
    owner, _ = manager.login("acme")
    stranger, stranger_id = manager.login("globex")
    bundle = make_bundle(tmp_path / "function")
    owner.upload_function(bundle)
    first = raw_upload(manager, stranger, bundle)
    assert first.status_code == 201, "the answer told that another project stored it"
    assert first.json() == {"function_id": function_id(bundle), "size": len(bundle)}
    assert raw_upload(manager, stranger, bundle).status_code == 200
    with manager.sessions() as session:
        entries = [
            (entry.actor, json.loads(entry.details))
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.action == "function.uploaded")
            )
        ]
    assert entries[1:] == [
        (stranger_id, {"size": len(bundle), "new": False}),
        (stranger_id, {"size": len(bundle), "new": False}),
    ]


def test_upload_needs_a_token(manager: Manager, tmp_path: Path) -> None:
    answer = httpx.post(f"{manager.url}/v1/functions", content=make_bundle(tmp_path / "f"))
    assert answer.status_code == 401
    assert stored_files(manager) == []


def test_a_bundle_whose_file_is_gone_is_refused_on_read(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    upload = client.upload_function(make_bundle(tmp_path / "function"))
    (manager.settings.functions_dir / upload.function_id.removeprefix("fs://")).unlink()
    with pytest.raises(ServerError) as caught:
        client.download_function(upload.function_id)
    assert (caught.value.status, caught.value.check, caught.value.actual) == (
        500,
        "function-stored",
        "no such file",
    )


def test_a_reupload_repairs_a_damaged_bundle(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    upload = client.upload_function(bundle)
    (manager.settings.functions_dir / upload.function_id.removeprefix("fs://")).write_bytes(b"x")
    assert client.upload_function(bundle).created is False
    assert client.download_function(upload.function_id) == bundle


def test_a_bundle_changed_while_it_is_sent_is_not_sent_whole(tmp_path: Path) -> None:
    # Checked when opened, then changed on disk: the stream stops before its end.
    store = FunctionStore(tmp_path / "functions", 1 << 30)
    content = os.urandom(3 * CHUNK_BYTES + 5)
    digest = function_id(content).removeprefix("fs://")
    store.path(digest).write_bytes(content)
    bundle = store.open_verified(digest)
    assert bundle.size == len(content)
    with store.path(digest).open("r+b") as file:  # in place: the open file sees it
        file.seek(CHUNK_BYTES + 1)
        # Flipped, not overwritten: a random byte that was 0xff already (1 in 256) left
        # the bundle unchanged, and the test failed so under CI once.
        file.write(bytes([content[CHUNK_BYTES + 1] ^ 0xFF]))
    sent = []
    with pytest.raises(StoredFunctionCorrupt) as caught:
        for chunk in bundle.chunks():
            sent.append(chunk)
    assert caught.value.check == "function-id"
    assert sum(len(chunk) for chunk in sent) < len(content)
    # Unchanged, it streams whole, in chunks no larger than CHUNK_BYTES.
    store.path(digest).write_bytes(content)
    chunks = list(store.open_verified(digest).chunks())
    assert b"".join(chunks) == content
    assert max(len(chunk) for chunk in chunks) <= CHUNK_BYTES


def test_a_download_streams_and_never_holds_the_bundle(manager: Manager, tmp_path: Path) -> None:
    client, _ = manager.login("acme")
    directory = tmp_path / "big"
    directory.mkdir()
    (directory / "handler.py").write_text("def main(ctx):\n    return None\n")
    (directory / "weights.bin").write_bytes(os.urandom(48 << 20))
    bundle = make_bundle(directory)
    upload = client.upload_function(bundle)
    del bundle
    url = f"{manager.url}/v1/functions/{upload.function_id.removeprefix('fs://')}"
    hasher_size = 0
    # The manager runs in this process: tracemalloc sees its allocations too.
    tracemalloc.start()
    try:
        with httpx.stream("GET", url, headers=as_client(client, "GET", url)) as got:
            assert got.status_code == 200
            assert int(got.headers["content-length"]) == upload.size
            for chunk in got.iter_raw():
                hasher_size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert hasher_size == upload.size
    assert peak < 16 << 20, f"a 48 MiB download peaked at {peak} bytes of Python memory"


def test_an_upload_is_checked_and_stored_without_holding_the_bundle(
    manager: Manager, tmp_path: Path
) -> None:
    client, _ = manager.login("acme")
    directory = tmp_path / "big"
    directory.mkdir()
    (directory / "handler.py").write_text("def main(ctx):\n    return None\n")
    (directory / "weights.bin").write_bytes(os.urandom(48 << 20))
    path = tmp_path / "big.tar"
    path.write_bytes(make_bundle(directory))
    size = path.stat().st_size

    def pieces() -> Iterator[bytes]:
        with path.open("rb") as file:
            while piece := file.read(1 << 20):
                yield piece

    # The manager runs in this process: tracemalloc sees its allocations too, the
    # received bundle's unpack check included.
    tracemalloc.start()
    try:
        url = f"{manager.url}/v1/functions"
        answer = httpx.post(
            url,
            content=pieces(),
            headers={
                **as_client(client, "POST", url),
                "content-type": "application/octet-stream",
            },
            timeout=60,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status_code == 201, answer.text
    assert answer.json()["size"] == size
    assert peak < 16 << 20, f"a 48 MiB upload peaked at {peak} bytes of Python memory"


def test_uploads_are_audited(manager: Manager, tmp_path: Path) -> None:
    client, client_id = manager.login("acme")
    bundle = make_bundle(tmp_path / "function")
    client.upload_function(bundle)
    client.upload_function(bundle)
    with manager.sessions() as session:
        entries = [
            (entry.actor, entry.target, json.loads(entry.details))
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.action == "function.uploaded")
            )
        ]
    fid = function_id(bundle)
    assert entries == [
        (client_id, fid, {"size": len(bundle), "new": True}),
        (client_id, fid, {"size": len(bundle), "new": False}),
    ]


def test_concurrent_first_uploads_of_one_bundle_record_every_project(
    manager: Manager, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path / "function")
    clients = [manager.login(project)[0] for project in ("p0", "p1", "p2", "p3")]
    start = threading.Barrier(len(clients))
    answers: list[int] = []

    def upload(client: ManagerClient) -> None:
        start.wait()
        answers.append(raw_upload(manager, client, bundle).status_code)

    threads = [threading.Thread(target=upload, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [201, 201, 201, 201]  # each new to its project
    for client in clients:
        assert client.download_function(function_id(bundle)) == bundle


# -- garbage collection -----------------------------------------------------------------


@dataclass
class Bundles:
    """Functions in each situation garbage collection must tell apart."""

    deployed: str  # a deployed room uses it
    failed: str  # only a failed room used it
    deleted: str  # only a deleted room used it
    unused: str  # uploaded, never deployed


@pytest.fixture
def bundles(
    manager: Manager, controller: StandInController, tmp_path: Path
) -> tuple[ManagerClient, Bundles]:
    client, _ = manager.login("acme")
    ids = [
        client.upload_function(
            make_bundle(tmp_path / f"f{i}", f"def main(c): return {i}\n")
        ).function_id
        for i in range(4)
    ]
    client.deploy(make_spec(ids[0], name="deployed"))
    client.deploy(make_spec(ids[2], name="deleted"))
    client.delete("deleted")
    manager.add_server(closed_port_url())  # now the least loaded, and unreachable
    with pytest.raises(ServerError):
        client.deploy(make_spec(ids[1], name="failed"))
    return client, Bundles(deployed=ids[0], failed=ids[1], deleted=ids[2], unused=ids[3])


def stored_ids(manager: Manager) -> set[str]:
    with manager.sessions() as session:
        return {"fs://" + digest for digest in session.scalars(select(StoredFunction.digest))}


def gc(manager: Manager, *, grace: int, later: int = 0, dry_run: bool = False) -> list[str]:
    store = FunctionStore(manager.settings.functions_dir, manager.settings.max_function_bytes)
    with manager.sessions() as session:
        garbage = collect_garbage(
            session,
            store,
            grace=grace,
            actor=audit.OPERATOR,
            dry_run=dry_run,
            now=int(time.time()) + later,
        )
    return sorted(item.function_id for item in garbage.functions)


def test_gc_deletes_exactly_the_bundles_no_live_room_uses(
    manager: Manager, bundles: tuple[ManagerClient, Bundles]
) -> None:
    client, ids = bundles
    everything = {ids.deployed, ids.failed, ids.deleted, ids.unused}
    assert gc(manager, grace=3600) == []  # all uploaded just now: within the grace period
    garbage = sorted([ids.failed, ids.deleted, ids.unused])
    assert gc(manager, grace=3600, later=7200, dry_run=True) == garbage
    assert stored_ids(manager) == everything  # a dry run changes nothing
    assert gc(manager, grace=3600, later=7200) == garbage
    assert stored_ids(manager) == {ids.deployed}
    assert stored_files(manager) == [ids.deployed.removeprefix("fs://")]
    with manager.sessions() as session:
        uploaders = set(session.scalars(select(FunctionUploader.digest)))
        deleted = [
            (entry.actor, entry.target)
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.action == "function.deleted")
            )
        ]
    assert uploaders == {ids.deployed.removeprefix("fs://")}
    assert sorted(deleted) == [(audit.OPERATOR, function) for function in garbage]
    # The rooms keep their function IDs; the bundles are gone for reading and deploying.
    assert client.room("failed").function == ids.failed
    with pytest.raises(ServerError) as download:
        client.download_function(ids.unused)
    assert download.value.status == 404
    with pytest.raises(ServerError) as deploy:
        client.deploy(make_spec(ids.unused, name="again"))
    assert deploy.value.status == 404
    assert client.download_function(ids.deployed)  # still there
    assert gc(manager, grace=3600, later=7200) == []  # nothing left to do


def test_a_reupload_restarts_the_grace_period_and_restores_a_collected_bundle(
    manager: Manager, bundles: tuple[ManagerClient, Bundles], tmp_path: Path
) -> None:
    client, ids = bundles
    assert ids.unused in gc(manager, grace=3600, later=7200)
    bundle = make_bundle(tmp_path / "f3", "def main(c): return 3\n")
    assert client.upload_function(bundle).created is True  # new again
    assert client.download_function(ids.unused) == bundle
    with manager.sessions() as session:  # as if uploaded long ago ...
        stored = session.get_one(StoredFunction, ids.unused.removeprefix("fs://"))
        stored.uploaded -= 7200
        session.commit()
    assert gc(manager, grace=3600, dry_run=True) == [ids.unused]
    client.upload_function(bundle)  # ... and again now
    assert gc(manager, grace=3600) == []


def _restarted(manager: Manager, start_manager: Callable[..., Manager], **settings: Any) -> Manager:
    """``manager`` stopped and started again on its state, with its lifespan (and so its
    housekeeping) running, and ``settings``."""
    manager.stop()
    return start_manager(
        int(manager.url.rsplit(":", 1)[1]),
        lifespan=True,
        data_dir=manager.settings.data_dir,
        database_url=manager.settings.database_url,
        lost_after=3600,  # the stand-in Controllers have no health endpoint
        **settings,
    )


def _deleted_by_whom(manager: Manager) -> list[tuple[str, str]]:
    with manager.sessions() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "function.deleted"))
        return sorted((entry.actor, entry.target) for entry in entries)


def test_the_running_manager_collects_garbage_by_itself(
    manager: Manager,
    bundles: tuple[ManagerClient, Bundles],
    start_manager: Callable[..., Manager],
) -> None:
    _, ids = bundles
    running = _restarted(manager, start_manager, gc_interval=0.05, function_grace=0)
    deadline = time.monotonic() + 60
    while stored_ids(running) != {ids.deployed} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_ids(running) == {ids.deployed}  # the live room's bundle stays
    garbage = sorted([ids.failed, ids.deleted, ids.unused])
    assert _deleted_by_whom(running) == [(MANAGER_SUBJECT, function) for function in garbage]


def test_the_running_manager_collects_no_garbage_when_told_not_to(
    manager: Manager,
    bundles: tuple[ManagerClient, Bundles],
    start_manager: Callable[..., Manager],
) -> None:
    _, ids = bundles
    running = _restarted(manager, start_manager, gc_interval=0, function_grace=0)
    # Its housekeeping runs: the health checks find the unreachable server ...
    deadline = time.monotonic() + 60
    failures = 0
    while failures < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        with running.sessions() as session:
            failures = max(session.scalars(select(ComputeServer.failures)))
    assert failures >= 1
    # ... but collects nothing, however old the bundles are.
    assert stored_ids(running) == {ids.deployed, ids.failed, ids.deleted, ids.unused}
    assert _deleted_by_whom(running) == []


def test_gc_deletes_stray_files_past_the_grace_period(manager: Manager, tmp_path: Path) -> None:
    directory = manager.settings.functions_dir
    stray = directory / ("A" * 43)  # a bundle file no row knows (a crash mid-collection)
    abandoned = directory / ".incoming" / "upload-abandoned"
    recent = directory / ".incoming" / "upload-in-progress"
    for path in (stray, abandoned, recent):
        path.write_bytes(b"bytes")
    long_ago = time.time() - 7200
    os.utime(stray, (long_ago, long_ago))
    os.utime(abandoned, (long_ago, long_ago))
    store = FunctionStore(directory, manager.settings.max_function_bytes)
    with manager.sessions() as session:
        garbage = collect_garbage(session, store, grace=3600, actor=audit.OPERATOR)
    assert garbage.functions == []
    assert garbage.stray_files == sorted([stray, abandoned])
    assert not stray.exists() and not abandoned.exists() and recent.exists()


def test_admin_gc_command(
    manager: Manager, bundles: tuple[ManagerClient, Bundles], capsys: pytest.CaptureFixture[str]
) -> None:
    from cleanroom.cli.main import main

    _, ids = bundles
    database = manager.settings.database_url
    base = [
        "admin",
        "--data-dir",
        str(manager.settings.data_dir),
        *(["--database-url", database] if database else []),
        "gc",
    ]
    assert main([*base, "--dry-run", "--grace", "0"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("would delete 3 function bundle(s)")
    assert ids.unused in out and ids.deployed not in out
    assert len(stored_ids(manager)) == 4
    assert main(base) == 0  # the default grace (a day) keeps them all
    assert capsys.readouterr().err.startswith("deleted 0 function bundle(s)")
    assert main([*base, "--grace", "0"]) == 0
    assert capsys.readouterr().err.startswith("deleted 3 function bundle(s)")
    assert stored_ids(manager) == {ids.deployed}
