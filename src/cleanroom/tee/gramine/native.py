"""The native EGETKEY helper: build it (in the Gramine image, and in CI), load it (in an enclave).

    python -m cleanroom.tee.gramine.native --out DIR    # compiles _egetkey into DIR

The image build compiles it into this package's directory, where it becomes one of
the enclave's trusted files. CI compiles it too, but never runs it: ENCLU outside an
enclave faults. :func:`hardware_egetkey` therefore loads it only inside a Gramine
SGX enclave, recognised by ``/dev/attestation``.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import sysconfig
from importlib import resources
from pathlib import Path

from cleanroom.errors import CheckFailed
from cleanroom.tee.gramine.files import DEV_ATTESTATION, DevAttestation
from cleanroom.tee.gramine.localattest import Egetkey
from cleanroom.tee.gramine.platform import GramineEnclave
from cleanroom.tee.platform import EgetkeyError

MODULE = "_egetkey"
SOURCE = f"{MODULE}.c"
# Hardening flags for a module that runs inside the enclave.
CFLAGS = (
    "-O2",
    "-fPIC",
    "-shared",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fstack-protector-strong",
    "-D_FORTIFY_SOURCE=2",
)


class NativeHelperError(CheckFailed):
    """The EGETKEY helper cannot be built or must not be loaded here."""


def source_path() -> Path:
    return Path(str(resources.files("cleanroom.tee.gramine") / SOURCE))


def extension_name() -> str:
    """The file name Python imports the module from (``_egetkey.cpython-311-…so``)."""
    return MODULE + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def build(out_dir: Path, *, compiler: str | None = None) -> Path:
    """Compile ``_egetkey.c`` against this interpreter's headers into ``out_dir``."""
    cc = compiler or str(sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise NativeHelperError(
            "native-build",
            "a C compiler",
            f"{cc!r} not found",
            "cannot build the EGETKEY helper",
            "install gcc and the Python headers (Debian: gcc python3-dev)",
        )
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise NativeHelperError(
            "native-build",
            f"Python.h in {include}",
            "missing",
            "cannot build the EGETKEY helper without the Python headers",
            "install the Python headers (Debian: python3-dev)",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / extension_name()
    command = [cc, *CFLAGS, f"-I{include}", str(source_path()), "-o", str(target)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise NativeHelperError(
            "native-build",
            "exit status 0",
            result.returncode,
            f"{' '.join(command)} failed: {result.stderr.strip()[:2000]}",
        )
    return target


def hardware_egetkey(dev_attestation: Path = DEV_ATTESTATION) -> Egetkey:
    """EGETKEY through the native helper; refused unless this is a Gramine SGX enclave."""
    if not (dev_attestation / "attestation_type").exists():
        raise NativeHelperError(
            "gramine-sgx",
            f"a Gramine SGX enclave ({dev_attestation}/attestation_type exists)",
            "no such file",
            "EGETKEY runs only inside an SGX enclave; outside one it faults",
            "start this under gramine-sgx, or use the simulated backend",
        )
    try:
        native = importlib.import_module(f"cleanroom.tee.gramine.{MODULE}")
    except ImportError as error:
        raise NativeHelperError(
            "native-helper",
            f"cleanroom/tee/gramine/{extension_name()}",
            str(error),
            "the EGETKEY helper is not built into this image",
            "build it with `python -m cleanroom.tee.gramine.native --out <package dir>`",
        ) from error

    def egetkey(request: bytes) -> bytes:
        key = bytearray(16)
        status = native.egetkey(request, key)
        if status != 0:
            raise EgetkeyError(status)
        return bytes(key)

    return egetkey


def hardware_enclave(
    dev_attestation: Path = DEV_ATTESTATION,
) -> tuple[GramineEnclave, DevAttestation]:
    """This Gramine SGX enclave's platform (it checks its own REPORT with EGETKEY as it
    starts), and its ``/dev/attestation`` files."""
    files = DevAttestation(dev_attestation)
    return GramineEnclave(files, hardware_egetkey(dev_attestation)), files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cleanroom.tee.gramine.native")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(str(resources.files("cleanroom.tee.gramine"))),
        help="where to write the module [default: this package's directory]",
    )
    parser.add_argument("--cc", help="the C compiler [default: the one Python was built with]")
    args = parser.parse_args(argv)
    try:
        target = build(args.out, compiler=args.cc)
    except NativeHelperError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
