"""A hostile server's answer is read up to a size, and one in a content coding not at all.

httpx reads a whole body into memory (after inflating gzip, which it asked for):
without a bound, a manager or a Controller could exhaust the memory of the
user's machine with one answer, and a token of any size was cached in the
profile's token.json and sent again with every request. A bound on the inflated
size came too late: httpx inflates each part whole, through every coding the answer
names, and an answer coded ``gzip, gzip`` of a few kilobytes was one part of
gigabytes (found by h34). The client asks for no coding and reads an answer in one
not at all (``answer-encoding``).
"""

from __future__ import annotations

import gzip
import resource
import zlib
from pathlib import Path

import pytest

from cleanroom.client import bounded
from cleanroom.client.compute import ComputeClient
from cleanroom.client.errors import ServerError
from cleanroom.client.manager import MAX_TOKEN_CHARS, ManagerClient
from cleanroom.dpop import ProofKey
from cleanroom.errors import CheckFailed
from cleanroom.protocol.errors import MessageFormatError
from tests.client.hostile_http import hostile_server, json_answer

FUNCTION = "fs://" + "A" * 43
JUST_OVER = bounded.MAX_ANSWER_BYTES + 1


def _stacked_gzip(size: int) -> bytes:
    """``size`` zero digits gzipped twice, built part by part (a few kilobytes for
    hundreds of MiB: what the second gzip inflates is the first's output, itself one
    repeated block)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    outer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, block = [], b"0" * (1 << 20)
    for _ in range(size >> 20):
        parts.append(outer.compress(inner.compress(block)))
    parts.append(outer.compress(inner.flush()))
    parts.append(outer.flush())
    return b"".join(parts)


STACKED_MIB = 256  # four times the client's bound, in one part of 587 bytes


def _huge(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
    if path == "/v1/rooms":  # one JSON document just over the bound
        return 200, {"content-type": "application/json"}, b'{"rooms": "' + b"x" * JUST_OVER + b'"}'
    if path == "/v1/rooms/bomb/receipt":  # a gzip bomb: ~70 KiB inflating to over the bound
        body = gzip.compress(b'{"receipt": "' + b"0" * JUST_OVER + b'"}', 9)
        return 200, {"content-type": "application/json", "content-encoding": "gzip"}, body
    if path == "/v1/rooms/bomb/sessions/s/download":  # a refusal whose body is a bomb
        body = gzip.compress(b'{"detail": "' + b"0" * JUST_OVER + b'"}', 9)
        return 403, {"content-type": "application/json", "content-encoding": "gzip"}, body
    if path.startswith("/v1/functions/"):
        return 200, {"content-type": "application/octet-stream"}, b"\0" * 4096
    if path == "/oauth/token":
        token = "t" * (MAX_TOKEN_CHARS + 1)
        return json_answer({"access_token": token, "token_type": "DPoP", "expires_in": 60})
    return None


def test_a_huge_json_answer_is_refused_before_it_is_all_read() -> None:
    with (
        hostile_server(_huge) as url,
        ManagerClient(url, token="t") as manager,
        pytest.raises(CheckFailed) as refused,
    ):
        manager.rooms()
    assert refused.value.check == "answer-size"


def test_a_gzip_bomb_is_refused_unread() -> None:
    with hostile_server(_huge) as url:
        compute = ComputeClient(url, token="t", dpop_key=ProofKey.generate())
        with compute, pytest.raises(CheckFailed) as refused:
            compute.receipt("bomb")
    assert refused.value.check == "answer-encoding"


def test_a_refused_downloads_answer_is_refused_unread_too() -> None:
    with hostile_server(_huge) as url:
        compute = ComputeClient(url, token="t", dpop_key=ProofKey.generate())
        with compute, pytest.raises(CheckFailed) as refused:
            list(compute.download("bomb", "s"))
    assert refused.value.check == "answer-encoding"


def test_an_answer_coded_twice_is_refused_before_it_is_inflated() -> None:
    """``gzip, gzip``: httpx inflated the one part (587 bytes) to 256 MiB before the
    64 MiB bound was checked (1 GiB from 1,828 bytes, 2.1 GiB at the client's peak; more
    codings, more memory than any machine has). Every kind of answer: a JSON answer of
    the Controller and of the manager, a refusal, a download's head and a function's
    bundle (read part by part); each refused unread, and asked for in no coding."""
    body = _stacked_gzip(STACKED_MIB << 20)
    asked: list[str | None] = []

    def coded(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        status = 403 if path.endswith("/refused/sessions/s/download") else 200
        return status, {"content-type": "application/json", "content-encoding": "gzip, gzip"}, body

    with hostile_server(coded, encodings=asked) as url:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        refusals = []
        with ComputeClient(url, token="t", dpop_key=ProofKey.generate()) as compute:
            for call in (
                lambda: compute.receipt("room"),
                lambda: list(compute.download("refused", "s")),
                lambda: list(compute.download("room", "s")),
            ):
                with pytest.raises(CheckFailed) as refused:
                    call()
                refusals.append(refused.value.check)
        with ManagerClient(url, token="t") as manager:
            for call in (manager.rooms, lambda: manager.download_function(FUNCTION)):
                with pytest.raises(CheckFailed) as refused:
                    call()
                refusals.append(refused.value.check)
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert refusals == ["answer-encoding"] * 5
    assert grown_kib < bounded.MAX_ANSWER_BYTES >> 10  # KiB: never near the bound
    assert asked and set(asked) == {"identity"}


def test_a_function_download_is_bounded() -> None:
    with hostile_server(_huge) as url, ManagerClient(url, token="t") as manager:
        with pytest.raises(CheckFailed) as refused:
            manager.download_function(FUNCTION, max_bytes=1024)
        with pytest.raises(CheckFailed) as other:  # within the bound: the hash decides
            manager.download_function(FUNCTION, max_bytes=8192)
    assert (refused.value.check, other.value.check) == ("answer-size", "function-id")


def test_a_huge_token_is_refused_and_not_kept(tmp_path: Path) -> None:
    with hostile_server(_huge) as url, ManagerClient(url) as manager:
        with pytest.raises(MessageFormatError, match="access token"):
            manager.fetch_token("c" * 32, "secret")
        assert manager.token is None


def _deep(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
    body = b"[" * 100_000 + b"]" * 100_000
    status = 500 if path == "/v1/rooms/broken/receipt" else 200
    return status, {"content-type": "application/json"}, body


def test_json_nested_too_deep_is_a_bad_answer_not_an_internal_error() -> None:
    with hostile_server(_deep) as url, ManagerClient(url, token="t") as manager:
        with pytest.raises(MessageFormatError, match="not JSON"):
            manager.rooms()
        with ComputeClient(url, token="t", dpop_key=ProofKey.generate()) as compute:
            with pytest.raises(MessageFormatError, match="not JSON"):
                compute.receipt("deep")
            with pytest.raises(ServerError) as refused:
                compute.receipt("broken")
    assert refused.value.status == 500


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_by_name_and_nothing_is_sent_where_it_points(code: int) -> None:
    """A redirect is never followed (the request carries a token and a DPoP proof), and
    was read as an answer, refused as malformed with no check named: now
    ``answer-redirect``, from the manager and from a compute server alike, for a JSON
    answer and a streamed download."""
    seen: list[str] = []

    def elsewhere(method: str, path: str) -> tuple[int, dict[str, str], bytes] | None:
        seen.append(f"{method} {path}")
        return json_answer({"rooms": []})

    with hostile_server(elsewhere) as other:

        def redirecting(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
            return code, {"location": other + path}, b""

        with hostile_server(redirecting) as url:
            with ManagerClient(url, token="t") as manager:
                with pytest.raises(CheckFailed) as listing:
                    manager.rooms()
                with pytest.raises(CheckFailed) as bundle:
                    manager.download_function(FUNCTION)
            compute = ComputeClient(url, token="t", dpop_key=ProofKey.generate())
            with compute, pytest.raises(CheckFailed) as receipt:
                compute.receipt("room")
    for refused in (listing, bundle, receipt):
        assert refused.value.check == "answer-redirect", refused.value
        assert f"{code} to {other}" in refused.value.actual
    assert seen == []
