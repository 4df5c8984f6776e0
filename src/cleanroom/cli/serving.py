"""Running a server process in the foreground: uvicorn with access logs, and one line
saying where it listens once it does (after its start-up, so it is ready then)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

# How long an idle kept-alive connection stays open. It must outlast how long clients
# keep one in their pools (httpx: 5 s), or a client can send its next request on a
# connection the server is closing that instant and get a reset instead of an answer.
# uvicorn's own default is 5 s, the same as httpx's: under load that race was lost
# (the concurrency benchmark, "connection reset by peer" from the manager).
KEEP_ALIVE_S = 65


def serve(app: Any, *, host: str, port: int, what: str, notes: Sequence[str] = ()) -> None:
    """Serve ``app`` until interrupted; when ready print ``cleanroom WHAT listening on
    URL`` (the port it bound, also for port 0) and each of ``notes`` on stderr."""
    server(app, host=host, port=port, what=what, notes=notes).run()


def server(
    app: Any, *, host: str, port: int, what: str, notes: Sequence[str] = ()
) -> uvicorn.Server:
    """The uvicorn server :func:`serve` runs, not started."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.started:
                return
            bound = self.servers[0].sockets[0].getsockname()[1] if self.servers else port
            shown_host = f"[{host}]" if ":" in host else host
            lines = [f"cleanroom {what} listening on http://{shown_host}:{bound}", *notes]
            print("\n".join(lines), file=sys.stderr, flush=True)

    # "info": uvicorn's access log, one line per request, as operators expect.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_S
    )
    return _Server(config)
