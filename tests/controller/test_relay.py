"""The Controller's client to its enclave processes: a request it cannot send is the
caller's (400), an enclave that does not answer is the enclave's (502)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cleanroom.controller.relay import EnclaveClient, EnclaveUnreachable, RequestNotRelayable


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
