"""One transfer in a fresh client process, so that its peak RSS (VmHWM) is its own.

    python -m bench.transfer cr-upload     --home H --profile P --room R --id input_1 --path DIR
    python -m bench.transfer cr-download   --home H --profile P --room R --id output_1 --path DIR
    python -m bench.transfer plain-upload   --url URL --path FILE
    python -m bench.transfer plain-download --url URL --path FILE

Prints one JSON line: ``{"seconds", "bytes", "vmhwm_kib"}``. ``seconds`` is the
transfer as the user sees it (for the clean room: ``CleanRoomClient.upload`` or
``.download``, with their Phase 1 and Phase 2), not the interpreter's start.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import status_kib

CHUNK = 1 << 20


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.transfer")
    parser.add_argument(
        "mode", choices=["cr-upload", "cr-download", "plain-upload", "plain-download"]
    )
    parser.add_argument("--home", type=Path)
    parser.add_argument("--profile")
    parser.add_argument("--room")
    parser.add_argument("--id")
    parser.add_argument("--url")
    parser.add_argument("--path", type=Path, required=True)
    args = parser.parse_args()

    import httpx

    size = 0
    if args.mode.startswith("cr-"):
        from cleanroom.client import CleanRoomClient
        from cleanroom.client.profile import Profile

        client = CleanRoomClient(Profile.load(args.profile, args.home))
        client.approved(args.room)  # log in and fetch once: not part of the transfer
        started = time.perf_counter()
        if args.mode == "cr-upload":
            size = client.upload(args.room, args.id, args.path).bytes
        else:
            size = sum(client.download(args.room, args.id, args.path).files.values())
        seconds = time.perf_counter() - started
    else:
        with httpx.Client(timeout=httpx.Timeout(60.0, read=None, write=None)) as http:
            http.get(args.url.rsplit("/", 2)[0] + "/ping")  # connect once, like approved()
            started = time.perf_counter()
            if args.mode == "plain-upload":
                response = http.post(
                    args.url,
                    content=_file_chunks(args.path),
                    headers={"content-type": "application/octet-stream"},
                )
                response.raise_for_status()
                size = int(response.json()["bytes"])
            else:
                with http.stream("POST", args.url) as response, args.path.open("wb") as out:
                    response.raise_for_status()
                    for chunk in response.iter_raw(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
            seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": size, "vmhwm_kib": status_kib_self()}))


def status_kib_self() -> int | None:
    import os

    return status_kib(os.getpid(), "VmHWM")


if __name__ == "__main__":
    main()
