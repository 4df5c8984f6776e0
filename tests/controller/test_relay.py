"""The Controller's client to its enclave processes: a request it cannot send is the
caller's (400), an enclave that does not answer is the enclave's (502); a streamed body
goes on byte for byte."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cleanroom.controller.relay import (
    EnclaveClient,
    EnclaveUnreachable,
    RequestNotRelayable,
    coalesced,
)


def test_a_request_whose_url_does_not_parse_is_not_relayable(tmp_path: Path) -> None:
    async def attempt() -> None:
        client = EnclaveClient(tmp_path / "absent.sock")
        try:
            for send in (
                lambda: client.request("GET", ":bad"),
                lambda: client.open_stream("POST", ":bad"),
            ):
                with pytest.raises(RequestNotRelayable):
                    await send()
            with pytest.raises(EnclaveUnreachable):  # a good URL, nobody listening
                await client.request("GET", "/state")
        finally:
            await client.close()

    asyncio.run(attempt())


@pytest.mark.parametrize("sizes", [[], [0], [5], [3, 4, 1, 9, 2, 2, 7], [16] * 5, [1] * 40])
def test_a_streamed_body_goes_on_unchanged_in_pieces_of_at_least_the_size(
    sizes: list[int],
) -> None:
    pieces = [os.urandom(size) for size in sizes]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def relayed() -> list[bytes]:
        return [piece async for piece in coalesced(body(), 8)]

    out = asyncio.run(relayed())
    assert b"".join(out) == b"".join(pieces)  # nothing lost, added or reordered
    assert all(len(piece) >= 8 for piece in out[:-1])
    assert all(len(piece) < 8 + max(sizes, default=0) for piece in out)  # bounded memory
