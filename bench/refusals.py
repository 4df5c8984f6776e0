"""``python -m bench.refusals``: whether ``/oauth/token``'s answer time tells who was refused.

A manager on loopback (SQLite in a temporary directory, its token endpoint's rate limits
raised so that none answers 429) is asked for tokens five ways, interleaved in a new
random order each round: a right secret (remembered after its first use, so no argon2)
and four refusals that must look alike: a wrong secret, an unknown client id, a disabled
client with its right secret and an unknown compute server's id. Each refusal's median
and tenth percentile are printed with their ratio to the wrong secret's, measured in the
same run; docs/management.md quotes the result. It reports; it never fails on a time.
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from bench.common import median
from cleanroom.dpop import ProofKey
from cleanroom.limits import RateLimit
from cleanroom.manager import Settings, create_app
from cleanroom.manager import admin as operations

UNLIMITED = RateLimit(burst=1_000_000, per_second=1_000_000.0)
BASELINE = "wrong secret"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refusals", description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="requests of each kind")
    count = parser.parse_args().count
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    settings = Settings(
        public_url=url,
        data_dir=Path(tempfile.mkdtemp(prefix="cleanroom-bench-refusals-")),
        token_rate_per_client=UNLIMITED,
        token_rate_per_address=UNLIMITED,
    )
    app = create_app(settings)
    with app.state.manager.sessions() as session:
        operations.create_project(session, "bench")
        active = operations.create_client(session, "bench")
        disabled = operations.create_client(session, "bench")
    with app.state.manager.sessions() as session:
        operations.set_client_disabled(session, disabled.client_id, True)
    kinds = {
        "right secret": (active.client_id, active.secret, 200),
        BASELINE: (active.client_id, "x" * 43, 401),
        "unknown client id": ("0" * 32, "x" * 43, 401),
        "disabled client, right secret": (disabled.client_id, disabled.secret, 401),
        "unknown compute server id": ("cs-" + "0" * 32, "x" * 43, 401),
    }
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the manager did not start")
        time.sleep(0.01)
    key = ProofKey.generate()
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for round_ in range(count + 1):  # the first round warms up and is not counted
                order = list(kinds)
                random.shuffle(order)
                for kind in order:
                    client_id, secret, status = kinds[kind]
                    started = time.perf_counter()
                    answer = client.post(
                        "/oauth/token",
                        data={"grant_type": "client_credentials"},
                        auth=(client_id, secret),
                        headers={"DPoP": key.proof("POST", f"{url}/oauth/token")},
                    )
                    elapsed = (time.perf_counter() - started) * 1000
                    if answer.status_code != status:
                        raise SystemExit(f"{kind}: expected {status}, got {answer.status_code}")
                    if round_:
                        times[kind].append(elapsed)
    finally:
        server.should_exit = True
        thread.join(30)
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    base_median = median(times[BASELINE])
    base_p10 = percentile(times[BASELINE], 0.1)
    print(f"| /oauth/token ({count} each, interleaved) | median ms | ratio | p10 ms | ratio |")
    print("|---|---|---|---|---|")
    for kind, values in times.items():
        middle, low = median(values), percentile(values, 0.1)
        print(
            f"| {kind} | {middle:.1f} | {middle / base_median:.2f} "
            f"| {low:.1f} | {low / base_p10:.2f} |"
        )


if __name__ == "__main__":
    main()
