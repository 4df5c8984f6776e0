"""``cleanroom verify-quote`` with collateral from a PCCS, and quotes saved as bundles."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cleanroom.cli.main import main
from tests.attestation.fake_pccs import FakePccs

RECORDED_TIME = 1752919277
STATUS = ["--accept-status", "ConfigurationAndSWHardeningNeeded"]


@pytest.fixture
def recorded(vectors_dir: Path) -> Path:
    return vectors_dir / "sgx-dcap-qvl"


@pytest.fixture
def pccs(recorded: Path) -> Iterator[FakePccs]:
    document: dict[str, Any] = json.loads((recorded / "sgx_quote_collateral.json").read_text())
    with FakePccs(document, fmspc="00A067110000").serving() as fake:
        yield fake


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def saved(
    recorded: Path, pccs: FakePccs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    bundle = tmp_path / "attested.json"
    code, _out, err = run(
        capsys, "verify-quote", str(recorded / "sgx_quote"), "--pccs-url", pccs.url,
        "--at", str(RECORDED_TIME), *STATUS, "--save-bundle", str(bundle),
    )  # fmt: skip
    assert code == 0, err
    assert f"saved to {bundle}" in err
    return bundle


def test_a_quote_verified_with_pccs_collateral_is_saved_and_checked_offline(
    saved: Path, pccs: FakePccs, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(saved.read_text())
    assert document["type"] == "cleanroom/quote-bundle/v1"
    assert document["saved_at"] == RECORDED_TIME
    assert document["source"] == f"PCCS {pccs.url}"
    requests = len(pccs.requests)
    code, out, err = run(
        capsys, "verify-quote", "--bundle", str(saved), "--at-saved", *STATUS, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "ConfigurationAndSWHardeningNeeded"
    assert len(pccs.requests) == requests  # offline: the PCCS was not asked


def test_a_saved_bundle_checked_now_names_the_expired_collateral(
    saved: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run(capsys, "verify-quote", "--bundle", str(saved), *STATUS, "--json")
    assert code == 1
    error = json.loads(out)["error"]
    assert error["check"] == "collateral-expired"
    assert "qe_identity" in error["message"]
    assert "--at-saved" in error["hint"]


@pytest.mark.parametrize(
    ("saved_at", "check"),
    [(RECORDED_TIME - 400 * 86400, "collateral-not-yet-valid"),
     (RECORDED_TIME + 400 * 86400, "collateral-expired")],
    ids=["before-the-collateral", "after-the-collateral"],
)  # fmt: skip
def test_a_refusal_at_the_saved_time_blames_the_bundle_not_this_machines_clock(
    saved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], saved_at: int, check: str
) -> None:
    document = json.loads(saved.read_text())
    document["saved_at"] = saved_at
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(document))
    code, out, _err = run(
        capsys, "verify-quote", "--bundle", str(moved), "--at-saved", *STATUS, "--json"
    )
    error = json.loads(out)["error"]
    assert (code, error["check"]) == (1, check)
    assert f"the bundle's saved_at ({saved_at}, --at-saved)" in error["hint"], error["hint"]
    assert "check this machine's clock" not in error["hint"]
    assert "fetch fresh collateral" not in error["hint"]


def test_a_tampered_bundle_is_refused(saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(saved.read_text())
    quote = bytearray(base64.b64decode(document["quote"]))
    quote[48 + 320] ^= 1  # REPORTDATA
    document["quote"] = base64.b64encode(bytes(quote)).decode()
    saved.write_text(json.dumps(document))
    code, out, _ = run(
        capsys, "verify-quote", "--bundle", str(saved), "--at-saved", *STATUS, "--json"
    )
    assert code == 1
    assert json.loads(out)["error"]["check"] == "quote-verification"


@pytest.mark.parametrize(
    "args",
    [
        ["verify-quote"],
        ["verify-quote", "QUOTE"],
        ["verify-quote", "QUOTE", "--collateral", "COLLATERAL", "--pccs-url", "http://x"],
        ["verify-quote", "QUOTE", "--bundle", "BUNDLE"],
        ["verify-quote", "--bundle", "BUNDLE", "--collateral", "COLLATERAL"],
        ["verify-quote", "QUOTE", "--collateral", "COLLATERAL", "--at-saved"],
        ["verify-quote", "--bundle", "BUNDLE", "--at-saved", "--at", "1"],
        ["verify-quote", "QUOTE", "--pccs-url", "ftp://pccs"],
        ["verify-quote", "--bundle", "JUNK"],
    ],
    ids=[
        "nothing", "no-collateral", "two-collaterals", "bundle-and-quote", "bundle-and-collateral",
        "at-saved-without-bundle", "at-saved-and-at", "bad-pccs-url", "junk-bundle",
    ],
)  # fmt: skip
def test_unusable_combinations_are_exit_2(
    args: list[str],
    saved: Path,
    recorded: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"type": "something else"}')
    names = {
        "QUOTE": str(recorded / "sgx_quote"),
        "COLLATERAL": str(recorded / "sgx_quote_collateral.json"),
        "BUNDLE": str(saved),
        "JUNK": str(junk),
    }
    code, _out, err = run(capsys, *[names.get(arg, arg) for arg in args])
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err


def test_an_unreachable_pccs_fails_with_the_check_named(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(
        capsys, "verify-quote", str(recorded / "sgx_quote"), "--pccs-url", "http://127.0.0.1:9",
        "--at", str(RECORDED_TIME),
    )  # fmt: skip
    assert code == 1
    assert err.startswith("error: pccs-unreachable: ")
    assert "rejected" not in err
