"""Collateral windows and quote bundles (a quote saved with its collateral)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest

from cleanroom.attestation import load_collateral
from cleanroom.attestation.collateral import (
    BUNDLE_TYPE,
    QuoteBundle,
    collateral_validity,
)
from cleanroom.attestation.errors import EvidenceError


@pytest.fixture(scope="module")
def recorded(vectors_dir: Path) -> tuple[bytes, str]:
    directory = vectors_dir / "sgx-dcap-qvl"
    return (directory / "sgx_quote").read_bytes(), (
        directory / "sgx_quote_collateral.json"
    ).read_text()


def test_every_signed_part_has_its_window(recorded: tuple[bytes, str]) -> None:
    validity = collateral_validity(load_collateral(recorded[1]))
    parts = {window.part: (window.issued, window.next_update) for window in validity.windows}
    assert parts == {
        "tcb_info": (1750330571, 1752922571),
        "qe_identity": (1750327278, 1752919278),
        "root_ca_crl": (1742469717, 1775215317),
        "pck_crl": (1750328598, 1752920598),
    }
    assert (validity.not_before, validity.not_after) == (1750330571, 1752919278)


@pytest.mark.parametrize(
    "change",
    [
        {"tcb_info": '{"issueDate":"2025-06-19T10:56:11Z"}'},
        {"qe_identity": '{"issueDate":"yesterday","nextUpdate":"tomorrow"}'},
        {"qe_identity": "[]"},
        {"pck_crl": "3000"},
    ],
)
def test_unreadable_windows_are_refused(
    recorded: tuple[bytes, str], change: dict[str, str]
) -> None:
    document = {**json.loads(recorded[1]), **change}
    collateral = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(document))
    with pytest.raises(EvidenceError) as caught:
        collateral_validity(collateral)
    assert caught.value.check == "collateral-format"


def test_a_bundle_round_trips(recorded: tuple[bytes, str]) -> None:
    quote, collateral = recorded
    bundle = QuoteBundle(quote=quote, collateral_json=collateral, saved_at=1752919000, source="x")
    again = QuoteBundle.loads(bundle.dumps())
    assert again.quote == quote
    assert json.loads(again.collateral_json) == json.loads(collateral)
    assert again.collateral().tcb_info == load_collateral(collateral).tcb_info
    assert (again.saved_at, again.source) == (1752919000, "x")


def _document(recorded: tuple[bytes, str]) -> dict[str, Any]:
    return {
        "type": BUNDLE_TYPE,
        "quote": base64.b64encode(recorded[0]).decode(),
        "collateral": json.loads(recorded[1]),
        "saved_at": 1,
        "source": "pccs",
    }


@pytest.mark.parametrize(
    "change",
    [
        {"type": "cleanroom/quote-bundle/v2"},
        {"quote": "not base64!"},
        {"saved_at": -1},
        {"saved_at": True},
        {"source": 7},
        {"collateral": "{}"},
        {"extra": 1},
    ],
)
def test_malformed_bundles_are_refused(recorded: tuple[bytes, str], change: dict[str, Any]) -> None:
    document = {**_document(recorded), **change}
    with pytest.raises(EvidenceError) as caught:
        QuoteBundle.loads(json.dumps(document))
    assert caught.value.check == "bundle-format"
    for text in ("[]", "not json", json.dumps({k: v for k, v in document.items() if k != "quote"})):
        with pytest.raises(EvidenceError):
            QuoteBundle.loads(text)
