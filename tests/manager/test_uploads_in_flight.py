"""A project's uploads still being received count too: the stored-bytes quota
(``function-quota``) is checked once an upload has ended, and until then its bytes sit in
the manager's ``.incoming`` directory, as long as the client takes to send them (the
server sets no time on a request body). A project at its quota held 3 uploads of almost
the largest bundle open at once, on the manager's disk and past its quota, for as long
as it liked. Now one project has at most
``2 * max_function_bytes`` of uploads being received at once; the next byte past that is
refused (409 ``function-uploads``) and its file removed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx

from cleanroom.dpop import DPoPAuth

from .conftest import Manager

LARGEST = 100_000
"""The manager's max_function_bytes in this test."""
SENT = 90_000
"""What each held upload sends before it waits."""


def incoming_bytes(manager: Manager) -> int:
    directory = manager.settings.functions_dir / ".incoming"
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def test_uploads_being_received_are_bounded_per_project(
    start_manager: Callable[..., Manager],
) -> None:
    manager = start_manager(max_function_bytes=LARGEST, function_bytes_per_project=LARGEST)
    acme, _ = manager.login("acme")
    release = threading.Event()

    def body(held: bool) -> Iterator[bytes]:
        for _ in range(SENT // 10_000):
            yield b"\0" * 10_000
        if held:  # the upload stays open, its bytes on the manager's disk
            release.wait(60)
            yield b"\0" * 1_000

    def upload(held: bool) -> int | str:
        try:
            answer = httpx.post(
                f"{manager.url}/v1/functions",
                content=body(held),
                headers={"content-length": str(SENT + (1_000 if held else 0))},
                auth=DPoPAuth(acme.dpop_key, acme.token),
                timeout=60,
            )
        except httpx.HTTPError as error:  # refused while it was still sending
            return type(error).__name__
        return answer.json().get("check") or answer.status_code

    most = 0

    def watch_until(done: Callable[[], bool]) -> None:
        """Sample the bytes being received until ``done``; a generous bound for a
        loaded machine (another suite may run beside this one)."""
        nonlocal most
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            most = max(most, incoming_bytes(manager))
            time.sleep(0.02)

    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(upload, True) for _ in range(2)]
        # Both held uploads received whole (their counted bytes on the disk), then a
        # third of the same project: it passes the bound while they are still open.
        watch_until(lambda: incoming_bytes(manager) >= 2 * SENT)
        third = pool.submit(upload, False)
        watch_until(third.done)
        release.set()
        outcomes = [future.result() for future in [*held, third]]
    assert most <= 2 * LARGEST, (
        f"one project's uploads being received: expected at most {2 * LARGEST} bytes on the "
        f"manager's disk, got {most} (3 held uploads of {SENT})"
    )
    # Zeros are no bundle: the two within the bound are refused once they end, as before.
    assert outcomes == ["bundle-handler", "bundle-handler", "function-uploads"], (
        f"expected the third upload refused past the bound (function-uploads), got {outcomes}"
    )
    assert incoming_bytes(manager) == 0, "a refused upload's file is removed"
