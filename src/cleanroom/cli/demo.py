"""``cleanroom demo``: what exists so far, end to end, in a temporary directory.

1. initialise a simulated SGX platform;
2. measure the Attester image and mint a quote for it;
3. verify that quote against the simulated root with a policy that expects the
   Attester's measurement and the REPORTDATA it was given;
4. verify the recorded real SGX quote against Intel's production root;
5. show rejections with their reasons: the simulated quote against Intel's root,
   a tampered quote, the wrong measurement, a DEBUG enclave.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cleanroom.attestation import (
    Appraisal,
    AttestationError,
    AttestationPolicy,
    TrustAnchor,
    appraise_quote,
    load_collateral,
)
from cleanroom.cli.common import stdout
from cleanroom.tee.measure import measure
from cleanroom.tee.simulated import SimulatedPlatform

# The recorded real quote's collateral is valid at this instant (see the vectors' README).
RECORDED_QUOTE_TIME = 1752919277


def _default_vectors() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "vectors"
        if (parent / "pyproject.toml").exists() and candidate.is_dir():
            return candidate
    return None


def _expect_accept(title: str, run: Callable[[], Appraisal]) -> Appraisal:
    appraisal = run()
    facts = appraisal.quote.to_json()
    stdout.print(f"[green]✔ accepted[/] {title}")
    stdout.print(f"    TCB status {facts['status']}, advisories {facts['advisory_ids'] or 'none'}")
    stdout.print(f"    MRENCLAVE {facts['mrenclave']}")
    stdout.print(f"    MRSIGNER  {facts['mrsigner']}")
    for check in appraisal.checks:
        stdout.print(f"    ✔ {check.check}: {check.actual}")
    return appraisal


def _expect_reject(title: str, run: Callable[[], object]) -> None:
    try:
        run()
    except AttestationError as error:
        stdout.print(f"[green]✔ rejected[/] {title}")
        stdout.print(f"    {error.check}: {error.message}")
        stdout.print(f"    expected {error.expected_text}", markup=False)
        stdout.print(f"    actual   {error.actual_text}", markup=False)
        return
    raise RuntimeError(f"demo: {title} was accepted, but it must be rejected")


def demo(
    vectors: Annotated[
        Path | None,
        typer.Option(
            help="Recorded SGX evidence [default: ../shared/vectors beside the source tree]."
        ),
    ] = None,
) -> None:
    """Run what exists so far: simulated platform, quotes, verification, rejections."""
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="cleanroom-demo-") as temp:
        stdout.rule("1. a simulated SGX platform (INSECURE: no hardware protection)")
        platform = SimulatedPlatform.init(Path(temp) / "platform", now=now)
        root = TrustAnchor.from_certificate(platform.root_certificate_der())
        stdout.print(f"platform in {platform.directory}; root CA {root.fingerprint}")

        stdout.rule("2. measure the Attester and mint its quote")
        attester = measure("attester")
        stdout.print(f"Attester MRENCLAVE {attester.mr_enclave.hex()}")
        stdout.print(f"Attester MRSIGNER  {attester.mr_signer.hex()}")
        nonce = os.urandom(32)
        report_data = hashlib.sha512(b"demo claims" + nonce).digest()
        quote = platform.enclave(attester.identity()).quote(report_data)
        collateral = load_collateral(platform.collateral_json(now=now))
        stdout.print(f"quote: {len(quote)} bytes, REPORTDATA = SHA-512(claims)")

        policy = AttestationPolicy(
            mrenclaves=frozenset({attester.mr_enclave}),
            mrsigner=attester.mr_signer,
            isv_prod_id=attester.isv_prod_id,
            min_isv_svn=attester.isv_svn,
            report_data=report_data,
        )

        stdout.rule("3. verify it against the explicitly trusted simulated root")
        _expect_accept(
            "simulated Attester quote (trusting the simulated root)",
            lambda: appraise_quote(quote, collateral, at=now, trust=root, policy=policy),
        )

        stdout.rule("4. verify the recorded real SGX quote against Intel's root")
        vectors = vectors or _default_vectors()
        recorded = vectors / "sgx-dcap-qvl" if vectors else None
        if recorded and (recorded / "sgx_quote").exists():
            real_quote = (recorded / "sgx_quote").read_bytes()
            real_collateral = load_collateral((recorded / "sgx_quote_collateral.json").read_text())
            real_policy = AttestationPolicy(
                accepted_statuses=frozenset({"UpToDate", "ConfigurationAndSWHardeningNeeded"})
            )
            _expect_accept(
                "recorded real quote at its collateral's time, accepting its TCB status",
                lambda: appraise_quote(
                    real_quote,
                    real_collateral,
                    at=RECORDED_QUOTE_TIME,
                    trust=TrustAnchor.intel_production(),
                    policy=real_policy,
                ),
            )
            _expect_reject(
                "recorded real quote under the default TCB policy",
                lambda: appraise_quote(
                    real_quote,
                    real_collateral,
                    at=RECORDED_QUOTE_TIME,
                    trust=TrustAnchor.intel_production(),
                    policy=AttestationPolicy(),
                ),
            )
        else:
            stdout.print("[yellow]skipped: recorded vectors not found (pass --vectors DIR)[/]")

        stdout.rule("5. rejections")
        _expect_reject(
            "simulated quote against Intel's production root",
            lambda: appraise_quote(
                quote, collateral, at=now, trust=TrustAnchor.intel_production(), policy=policy
            ),
        )
        tampered = bytearray(quote)
        tampered[48 + 320] ^= 0x01  # one bit of REPORTDATA in the signed report body
        _expect_reject(
            "quote with one changed bit",
            lambda: appraise_quote(bytes(tampered), collateral, at=now, trust=root, policy=policy),
        )
        worker = measure("worker")
        worker_quote = platform.enclave(worker.identity()).quote(report_data)
        _expect_reject(
            "a Worker's quote offered as the Attester's",
            lambda: appraise_quote(worker_quote, collateral, at=now, trust=root, policy=policy),
        )
        debug_quote = platform.enclave(attester.identity(debug=True)).quote(report_data)
        _expect_reject(
            "the Attester running as a DEBUG enclave",
            lambda: appraise_quote(debug_quote, collateral, at=now, trust=root, policy=policy),
        )
        _expect_reject(
            "the simulated quote 31 days later (collateral expired)",
            lambda: appraise_quote(
                quote, collateral, at=now + 31 * 86400, trust=root, policy=policy
            ),
        )
    stdout.rule("done")
    stdout.print(
        "Next: the full clean room flow (management server, Controller, Attester, Worker)."
    )
