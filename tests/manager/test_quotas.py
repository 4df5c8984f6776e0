"""What one project may hold at the manager, so that it cannot take every compute slot
(``room-quota``) or fill the disk with bundles (``function-quota``) for every project."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cleanroom.client.errors import ServerError
from cleanroom.client.manager import ManagerClient
from cleanroom.manager.functions import Functions

from .conftest import Manager, StandInController, make_bundle, make_spec, new_user


def refusal(call: Callable[[], object]) -> ServerError:
    with pytest.raises(ServerError) as caught:
        call()
    return caught.value


def test_a_project_has_at_most_its_quota_of_live_rooms(
    start_manager: Callable[..., Manager],
    start_controller: Callable[[Manager], StandInController],
    tmp_path: Path,
) -> None:
    manager = start_manager(rooms_per_project=2)
    start_controller(manager)  # 20 slots: the quota, not the server, is what refuses
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
    first = acme.deploy(make_spec(function, name="one"))
    acme.deploy(make_spec(function, name="two"))
    error = refusal(lambda: acme.deploy(make_spec(function, name="three")))
    assert (error.status, error.check) == (409, "room-quota")
    assert "project 'acme' has 2 live clean rooms" in error.detail
    assert [room.name for room in acme.rooms()] == ["one", "two"]
    # Another project still deploys; a deleted room frees the project's slot.
    globex, _ = manager.login("globex")
    other = globex.upload_function(make_bundle(tmp_path / "g")).function_id
    assert globex.deploy(make_spec(other, name="three")).state == "deployed"
    acme.delete(first.name)
    assert acme.deploy(make_spec(function, name="three")).state == "deployed"


def upload(client: ManagerClient, directory: Path, size: int) -> str:
    """A distinct bundle of about ``size`` bytes (random, so it does not compress)."""
    directory.mkdir(parents=True)
    (directory / "padding.bin").write_bytes(os.urandom(size))
    return client.upload_function(make_bundle(directory)).function_id


def test_a_project_stores_at_most_its_quota_of_function_bytes(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    manager = start_manager(function_bytes_per_project=100_000)
    acme, _ = manager.login("acme")
    kept = upload(acme, tmp_path / "a", 60_000)
    error = refusal(lambda: upload(acme, tmp_path / "b", 60_000))
    assert (error.status, error.check) == (409, "function-quota")
    assert "project 'acme' has" in error.detail
    directory = manager.settings.functions_dir
    stored = sorted(path.name for path in directory.iterdir() if path.is_file())
    assert stored == [kept.removeprefix("fs://")], "the refused upload is not kept"
    assert list((directory / ".incoming").iterdir()) == [], "nor is its temporary file"
    bundle = acme.download_function(kept)
    assert acme.upload_function(bundle).function_id == kept  # counted once already
    # Another project's bytes are its own: it uploads the same bundle, and one more.
    globex, _ = manager.login("globex")
    assert globex.upload_function(bundle).function_id == kept
    error = refusal(lambda: upload(globex, tmp_path / "c", 60_000))
    assert error.check == "function-quota"
    initech, _ = manager.login("initech")
    upload(initech, tmp_path / "d", 60_000)


def test_concurrent_deploys_and_uploads_do_not_pass_the_quotas_together(
    start_manager: Callable[..., Manager],
    start_controller: Callable[[Manager], StandInController],
    tmp_path: Path,
) -> None:
    # Bundles are tar files of 10 KiB blocks: the first 10,240 bytes, the others 51,200.
    manager = start_manager(rooms_per_project=2, function_bytes_per_project=120_000)
    start_controller(manager)
    acme, _ = manager.login("acme")
    function = acme.upload_function(make_bundle(tmp_path / "f")).function_id

    def deploy(n: int) -> str:
        try:
            return acme.deploy(make_spec(function, name=f"r{n}")).state
        except ServerError as error:
            return error.check or str(error.status)

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(deploy, range(6)))
    assert outcomes == ["deployed"] * 2 + ["room-quota"] * 4

    def store(n: int) -> str:
        try:
            return upload(acme, tmp_path / f"u{n}", 40_000)
        except ServerError as error:
            return error.check or str(error.status)

    with ThreadPoolExecutor(4) as pool:
        stored = list(pool.map(store, range(4)))
    assert sorted(s == "function-quota" for s in stored) == [False, False, True, True], stored


def test_another_projects_room_on_a_bundle_counts_in_its_quota_not_in_the_uploaders(
    start_manager: Callable[..., Manager],
    start_controller: Callable[[Manager], StandInController],
    tmp_path: Path,
) -> None:
    """A participant's project deploys its own room on a bundle it sees through the
    uploader's room (which it may). Its live room kept the bundle stored, and counted in
    the uploader's quota, for as long as it liked: the uploader could not free those
    bytes (manager red team 2, finding 4). Now the bundle counts for the project whose
    room keeps it; for the uploader only within the grace period after its own last
    upload (0 here), or while a room of its own uses it, or while nobody's does."""
    manager = start_manager(function_bytes_per_project=100_000, function_grace=0)
    start_controller(manager)
    acme, _ = manager.login("acme")
    globex, globex_client = manager.login("globex")
    key, participant = new_user()
    globex.register_user_key(key, globex_client)
    function = upload(acme, tmp_path / "a", 60_000)
    acme.deploy(make_spec(function, name="shared", recipient=participant))
    assert globex.deploy(make_spec(function, name="pinned")).state == "deployed"
    acme.delete("shared")
    functions = Functions(manager.settings, manager.sessions)
    assert functions.collect_garbage().functions == []  # globex's room keeps it
    try:
        upload(acme, tmp_path / "b", 60_000)
    except ServerError as error:
        raise AssertionError(
            f"acme's quota: expected its bundle kept only by globex's room not counted, "
            f"got {error.status} {error.check}: {error.detail}"
        ) from error
    # globex's room keeps it: it counts for globex, which has no room for another.
    error = refusal(lambda: upload(globex, tmp_path / "c", 60_000))
    assert (error.status, error.check) == (409, "function-quota"), error
    # Once globex's room is gone, globex's bytes are free, and the bundle is garbage.
    globex.delete("pinned")
    assert function in [item.function_id for item in functions.collect_garbage().functions]
    upload(globex, tmp_path / "d", 60_000)
    # A deploy on another project's bundle is counted, and refused past the quota.
    again = upload(acme, tmp_path / "e", 50_000)
    acme.deploy(make_spec(again, name="shared-again", recipient=participant))
    error = refusal(lambda: globex.deploy(make_spec(again, name="pinned-again")))
    assert (error.status, error.check) == (409, "function-quota"), error
    assert "pinned-again" not in [room.name for room in globex.rooms()]
