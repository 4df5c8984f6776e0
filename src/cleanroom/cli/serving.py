"""Running a server process in the foreground: uvicorn with access logs, and one line
saying where it listens once it does (after its start-up, so it is ready then)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import Any


def serve(app: Any, *, host: str, port: int, what: str, notes: Sequence[str] = ()) -> None:
    """Serve ``app`` until interrupted; when ready print ``cleanroom WHAT listening on
    URL`` (the port it bound, also for port 0) and each of ``notes`` on stderr."""
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
    _Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()
