"""Function storage: uploads hashed and checked, size-limited, reads re-verified."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.manager import ManagerClient
from cleanroom.protocol.bundle import function_id

from .conftest import Manager, make_bundle


def stored_files(manager: Manager) -> list[str]:
    """The files under functions/, the incoming area included."""
    root = manager.settings.functions_dir
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def raw_upload(
    manager: Manager, token: str | None, content: bytes | Iterator[bytes]
) -> httpx.Response:
    return httpx.post(
        f"{manager.url}/v1/functions",
        content=content,
        headers={
            "authorization": f"Bearer {token}",
            "content-type": "application/octet-stream",
        },
    )


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
    created = raw_upload(manager, client.token, bundle)
    assert created.status_code == 201
    assert created.json() == {"function_id": function_id(bundle), "size": len(bundle)}
    assert raw_upload(manager, client.token, bundle).status_code == 200


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
    answer = raw_upload(manager, client.token, content)
    assert answer.status_code == 413
    assert "20480 bytes" in answer.json()["detail"]
    assert stored_files(manager) == []


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
    assert other.upload_function(bundle).created is False
    assert other.download_function(function_id(bundle)) == bundle


def test_upload_needs_a_token(manager: Manager, tmp_path: Path) -> None:
    answer = httpx.post(f"{manager.url}/v1/functions", content=make_bundle(tmp_path / "f"))
    assert answer.status_code == 401
    assert stored_files(manager) == []
