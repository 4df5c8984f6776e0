"""The native EGETKEY helper compiles, holds exactly one ENCLU with leaf 1, and is never run here.

ENCLU outside an enclave faults, so these tests build the module and read its
machine code; they load it only in a child process and only to check that it
refuses wrong buffer sizes before reaching the instruction.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cleanroom.tee.gramine import native
from cleanroom.tee.gramine.native import NativeHelperError, build, hardware_egetkey

ENCLU = bytes.fromhex("0f01d7")


def _compiler_or_skip() -> None:
    missing = shutil.which("cc") is None and shutil.which("gcc") is None
    if missing:
        message = "no C compiler (scripts/test.sh installs gcc and python3-dev)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _compiler_or_skip()
    return build(tmp_path_factory.mktemp("native"))


def test_the_helper_compiles_with_warnings_as_errors(built: Path) -> None:
    assert built.name == native.extension_name()
    assert built.stat().st_size > 0
    assert "-Werror" in native.CFLAGS


def test_the_helper_holds_one_enclu_and_it_is_egetkey(built: Path) -> None:
    assert built.read_bytes().count(ENCLU) == 1
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not installed: the byte count above is the whole check")
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(built)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    function = listing[listing.index("<egetkey>:") :]
    before = function[: function.index("enclu")]
    # The last write to EAX before ENCLU selects leaf 1, EGETKEY.
    writes = re.findall(r"\s(mov|xor)\s+([^\n]*%eax|[^\n]*%rax)\n", before)
    assert writes, before[-600:]
    assert writes[-1] == ("mov", "$0x1,%eax"), writes[-3:]


def test_the_helper_refuses_wrong_sizes_before_enclu(built: Path) -> None:
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('_egetkey', {str(built)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "for request, key in ((bytes(511), bytearray(16)), (bytes(512), bytearray(15)),\n"
        "                     (bytes(513), bytearray(16))):\n"
        "    try:\n"
        "        module.egetkey(request, key)\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
        "    else:\n"
        "        sys.exit('ENCLU reached')\n"
        "try:\n"
        "    module.egetkey(bytes(512), bytes(16))\n"
        "except TypeError:\n"
        "    print('read-only key refused')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "egetkey: expected a 512-byte KEYREQUEST and a 16-byte key buffer, got 511 and 16 bytes",
        "egetkey: expected a 512-byte KEYREQUEST and a 16-byte key buffer, got 512 and 15 bytes",
        "egetkey: expected a 512-byte KEYREQUEST and a 16-byte key buffer, got 513 and 16 bytes",
    ]
    assert lines[3] == "read-only key refused"


def test_the_helper_is_not_loaded_outside_a_gramine_enclave(tmp_path: Path) -> None:
    with pytest.raises(NativeHelperError) as caught:
        hardware_egetkey(tmp_path)
    assert caught.value.check == "gramine-sgx"


def test_an_image_without_the_helper_is_refused(tmp_path: Path) -> None:
    (tmp_path / "attestation_type").write_text("dcap")
    package = Path(native.__file__).parent
    if list(package.glob("_egetkey*.so")):
        pytest.skip("the helper is built into this checkout")
    with pytest.raises(NativeHelperError) as caught:
        hardware_egetkey(tmp_path)
    assert caught.value.check == "native-helper"


def test_a_missing_compiler_is_a_named_refusal(tmp_path: Path) -> None:
    with pytest.raises(NativeHelperError) as caught:
        build(tmp_path, compiler="no-such-cc-here")
    assert caught.value.check == "native-build"
