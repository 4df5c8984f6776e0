"""``cleanroom gramine``: the operator's and the release's steps towards real SGX.

``manifest`` renders an image's Gramine manifest from its measured file list;
``check`` refuses a manifest (rendered or signed) that would not protect its
enclave, and can check every trusted file's hash here; ``publish`` writes the
measurement file a release signs, from the signed enclaves' SIGSTRUCTs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cleanroom.cli.common import (
    EXIT_REJECTED,
    EXIT_USAGE,
    fail,
    json_output,
    print_json,
    read_file,
    stdout,
    with_exit_codes,
)
from cleanroom.errors import CheckFailed

app = typer.Typer(
    help="Build towards real SGX: Gramine manifests, their checks, signed measurement files.",
    no_args_is_help=True,
)


@app.callback()
def _gramine() -> None:
    """Build towards real SGX: Gramine manifests, their checks, signed measurement files."""


def _refuse(error: CheckFailed, *, usage: frozenset[str] = frozenset()) -> None:
    hint = f" — {error.hint}" if error.hint else ""
    fail(f"{error}{hint}", EXIT_USAGE if error.check in usage else EXIT_REJECTED)


@app.command("manifest")
def manifest(
    image: Annotated[str, typer.Argument(help="Enclave image: attester or worker.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Directory for IMAGE.manifest and IMAGE.enclave.json: where they will be in "
            "the enclave image (the manifest names the configuration file by this path).",
        ),
    ],
    worker_sig: Annotated[
        Path | None,
        typer.Option(
            help="For the Attester: the signed Worker's SIGSTRUCT (worker.sig); the Attester "
            "admits exactly that MRENCLAVE, and its own measurement covers it.",
            show_default=False,
        ),
    ] = None,
    gramine_libdir: Annotated[
        Path | None,
        typer.Option(
            help="Gramine's library directory (holding libsysdb.so and runtime/glibc) "
            "[default: the installed Gramine's].",
            show_default=False,
        ),
    ] = None,
    enclave_size: Annotated[
        str | None,
        typer.Option(
            help="Enclave size, a power of two (2G for the Attester, 4G for the Worker); "
            "without EDMM all of it is committed at start.",
            show_default=False,
        ),
    ] = None,
    max_threads: Annotated[
        int | None,
        typer.Option(help="Threads at a time in the enclave [default: 64].", show_default=False),
    ] = None,
    edmm: Annotated[
        bool, typer.Option("--edmm", help="Add enclave memory on demand (SGX2, Linux 6.0+).")
    ] = False,
) -> None:
    """Render IMAGE's Gramine manifest from this installation's measured file list.

    Its trusted files are exactly what `cleanroom measure IMAGE --list` prints, with
    the same SHA-256, plus Gramine's glibc and the enclave's configuration file;
    sgx.debug is false, remote attestation DCAP, no host environment or argument
    reaches the enclave. Sign the result with gramine-sgx-sign (docs/deploy-sgx.md).
    """
    from cleanroom.tee.gramine.manifest import (
        SIZING,
        GramineInstall,
        ManifestError,
        Sizing,
        admitted_workers,
        render,
    )
    from cleanroom.tee.gramine.measure import SigstructError, read_sigstruct
    from cleanroom.tee.measure import IMAGES, image_files

    definition = IMAGES.get(image)
    if definition is None:
        fail(f"unknown enclave image {image!r}; one of {', '.join(IMAGES)}", EXIT_USAGE)
    if (worker_sig is not None) != (image == "attester"):
        fail("--worker-sig goes with the attester image, and only with it", EXIT_USAGE)
    default = SIZING[image]
    sizing = Sizing(enclave_size or default.enclave_size, max_threads or default.max_threads, edmm)
    try:
        extra = {}
        if worker_sig is not None:
            extra = admitted_workers(read_sigstruct(read_file(worker_sig, "Worker signature")))
        rendered = render(
            definition,
            image_files(image),
            out_dir=out,
            install=GramineInstall.find(gramine_libdir),
            sizing=sizing,
            extra_config=extra,
        )
        rendered.write()
    except SigstructError as error:
        _refuse(error, usage=SigstructError.MALFORMED)
    except ManifestError as error:
        _refuse(error, usage=frozenset({"gramine-install", "manifest-sizing"}))
    except OSError as error:
        fail(str(error), EXIT_USAGE)
    if json_output():
        print_json(
            {
                "manifest": str(rendered.manifest_path),
                "trusted_files": len(rendered.trusted),
                "enclave_config": str(rendered.enclave_config_path),
            }
        )
        return
    stdout.print(f"{rendered.manifest_path} ({len(rendered.trusted)} trusted files)")
    stdout.print(f"{rendered.enclave_config_path}")


@app.command("check")
def check(
    manifest_file: Annotated[
        Path, typer.Argument(help="A Gramine manifest: IMAGE.manifest or a signed .manifest.sgx.")
    ],
    image: Annotated[
        str | None,
        typer.Option(help="The image it must start: attester or worker.", show_default=False),
    ] = None,
    files: Annotated[
        bool,
        typer.Option(
            "--files",
            help="Also hash every trusted file here and compare (reproducing an image: "
            "run it inside the image you built).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Refuse a manifest that would not protect its enclave.

    Checks: sgx.debug = false (manifest-debug), DCAP attestation
    (manifest-attestation), no host environment, host arguments, insecure options,
    lax file policy or verbose log (manifest-insecure), every trusted file hashed
    (manifest-trusted-files), the service it starts (manifest-image), and with
    --files every trusted file's bytes here (manifest-files).
    """
    from cleanroom.tee.gramine.manifest import (
        ManifestError,
        check_manifest,
        trusted_entries,
        unmatched,
    )

    as_json = as_json or json_output()
    text = read_file(manifest_file, "manifest").decode("utf-8", errors="replace")
    try:
        facts = check_manifest(text, image=image)
        if files:
            wrong = unmatched(trusted_entries(text))
            if wrong:
                raise ManifestError(
                    "manifest-files",
                    "every trusted file with the hash the manifest names",
                    f"{len(wrong)} differ, first {wrong[0]}",
                    "the files here are not the ones this manifest was rendered from",
                )
    except ManifestError as error:
        if as_json:
            stdout.out(json.dumps({"error": error.to_json()}, indent=2))
            code = EXIT_USAGE if error.check == "manifest-toml" else EXIT_REJECTED
            raise typer.Exit(code) from None
        _refuse(error, usage=frozenset({"manifest-toml"}))
    if as_json:
        stdout.out(json.dumps({"manifest": str(manifest_file), **facts.__dict__}, indent=2))
        return
    stdout.print(f"manifest accepted: {manifest_file}")
    stdout.print(f"ISVPRODID {facts.isv_prod_id}  ISVSVN {facts.isv_svn}")
    stdout.print(f"enclave {facts.enclave_size}, {facts.max_threads} threads")
    stdout.print(
        f"{facts.trusted_files} trusted files" + (", every one as hashed" if files else "")
    )


check.__doc__ = with_exit_codes(check.__doc__)


@app.command("publish")
def publish(
    attester_sig: Annotated[
        Path, typer.Option(help="The signed Attester's SIGSTRUCT (attester.sig).")
    ],
    worker_sig: Annotated[Path, typer.Option(help="The signed Worker's SIGSTRUCT (worker.sig).")],
    key: Annotated[
        Path, typer.Option(help="The release's private key (Ed25519, PEM, unencrypted).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the measurement file.")],
    release: Annotated[
        str | None,
        typer.Option(metavar="VERSION", help="The release [default: this cleanroom's version]."),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="What the images were built from, e.g. --source commit=<git sha> "
            "--source gramine=1.9 (repeatable; informative, signed with the rest).",
        ),
    ] = None,
) -> None:
    """Write the release's measurement file, signed by the release key.

    The values come from the two SIGSTRUCTs, each checked as EINIT would (and a
    DEBUG enclave refused); clients configure from the file with
    `cleanroom configure --measurements FILE --release-key KEY.pub`.
    """
    import time

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from cleanroom import __version__
    from cleanroom.attestation.measurements import (
        EnclaveReference,
        ReleaseMeasurements,
        key_id,
        sign_measurements,
    )
    from cleanroom.tee.gramine.measure import SigstructError, read_sigstruct
    from cleanroom.tee.measure import ATTESTER, WORKER

    pairs = {}
    for item in source or []:
        name, separator, value = item.partition("=")
        if not separator or not name:
            fail(f"--source takes KEY=VALUE, got {item!r}", EXIT_USAGE)
        pairs[name] = value
    try:
        private = serialization.load_pem_private_key(read_file(key, "release key"), password=None)
    except (ValueError, TypeError) as error:
        fail(f"the release key {key} is not an unencrypted PEM private key: {error}", EXIT_USAGE)
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        fail(f"the release key {key} is not an Ed25519 key", EXIT_USAGE)
    enclaves = {}
    for image, path, definition in (
        ("attester", attester_sig, ATTESTER),
        ("worker", worker_sig, WORKER),
    ):
        try:
            measured = read_sigstruct(read_file(path, f"{image} signature"))
        except SigstructError as error:
            _refuse(error, usage=SigstructError.MALFORMED)
        if measured.isv_prod_id != definition.isv_prod_id:
            fail(
                f"{path}: ISVPRODID {measured.isv_prod_id} is not the {image}'s "
                f"({definition.isv_prod_id})",
                EXIT_REJECTED,
            )
        enclaves[image] = EnclaveReference(
            (measured.mr_enclave,), measured.mr_signer, measured.isv_prod_id, measured.isv_svn
        )
    if enclaves["attester"].mr_signer != enclaves["worker"].mr_signer:
        fail("the Attester and the Worker are signed by different keys", EXIT_REJECTED)
    document = ReleaseMeasurements(
        release=release or __version__,
        issued_at=int(time.time()),
        backend="gramine-sgx",
        attester=enclaves["attester"],
        worker=enclaves["worker"],
        source=pairs,
    )
    try:
        out.write_bytes(sign_measurements(document, private))
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror}", EXIT_REJECTED)
    signer = key_id(private.public_key())
    if json_output():
        print_json({"file": str(out), "release": document.release, "release_key_sha256": signer})
        return
    stdout.print(f"{out}: release {document.release}, signed by {signer}")
