"""A Controller that is slow to answer cannot take the manager's threads from everyone.

Deploys and deletes wait for the room's Controller (up to ``controller_timeout``). They
ran on the worker threads every sync route shares (anyio's 40): a member whose room was
on a Controller that answered its deletes slowly (a hostile compute server, or one whose
address drops packets) sent 48 deletes of that room at once, every thread waited, and
every other project's requests waited behind them for the whole timeout, again and
again (found by the manager's red team). Deploys and deletes now run in threads of their
own, at most ``controller_calls`` at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cleanroom.client.errors import ServerError

from .conftest import Manager, bind, make_bundle, make_spec, serve, url_of

TIMEOUT = 6.0
"""The manager's controller_timeout in these tests: how long a delete waits. Without
the fix another project's request waits most of it; with it, at once (a margin wide
enough for a machine another suite keeps busy)."""


@contextmanager
def slow_deleting_controller() -> Iterator[str]:
    """A Controller that takes deploys at once and answers a delete only well past the
    manager's timeout."""
    app = FastAPI()

    @app.put("/v1/rooms/{name}")
    async def put(name: str) -> JSONResponse:
        return JSONResponse({"name": name, "state": "collecting"}, status_code=201)

    @app.delete("/v1/rooms/{name}")
    async def delete(name: str) -> JSONResponse:
        await asyncio.sleep(3 * TIMEOUT)
        return JSONResponse({"name": name, "state": "deleted"})

    sock = bind()
    with serve(app, sock):
        yield url_of(sock)


def test_deletes_waiting_on_a_slow_controller_leave_the_threads_to_everyone(
    start_manager: Callable[..., Manager], tmp_path: Path
) -> None:
    # More deploy and delete slots than the 40 shared threads, so that all 48 deletes
    # wait at once: the test is that they wait apart from every other request.
    manager = start_manager(controller_timeout=TIMEOUT, controller_calls=64)
    with slow_deleting_controller() as url:
        manager.add_server(url)
        acme, _ = manager.login("acme")
        function = acme.upload_function(make_bundle(tmp_path / "f")).function_id
        assert acme.deploy(make_spec(function, name="stuck")).state == "deployed"
        bystander, _ = manager.login("globex")

        def delete(_: int) -> object:
            try:
                return acme.delete("stuck")
            except ServerError as error:
                return error

        with ThreadPoolExecutor(48) as pool:
            deletes = [pool.submit(delete, n) for n in range(48)]
            time.sleep(0.5)  # every delete is at the manager now
            started = time.monotonic()
            whoami = bystander.whoami()
            rooms = bystander.rooms()
            waited = time.monotonic() - started
            outcomes = [future.result() for future in deletes]
    assert whoami["project"] == "globex" and rooms == []
    assert waited < TIMEOUT / 2, (
        f"another project's requests: expected answers at once, got them after {waited:.1f} s"
        f" (the manager's threads all waited on the Controller, {TIMEOUT} s)"
    )
    statuses = {error.status for error in outcomes if isinstance(error, ServerError)}
    assert statuses == {502}, f"expected every delete to wait its turn and time out: {outcomes}"
    assert acme.room("stuck").state == "deployed", "a delete the Controller did not confirm"
