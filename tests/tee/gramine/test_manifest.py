"""Gramine manifests: rendered from exactly the files `cleanroom measure` hashes, with their
hashes, in TOML; and a manifest that would not protect its enclave refused by name."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.cli.main import main
from cleanroom.tee.gramine.manifest import (
    GramineInstall,
    ManifestError,
    Sizing,
    admitted_workers,
    check_manifest,
    render,
    toml_string,
    trusted_entries,
    unmatched,
)
from cleanroom.tee.gramine.measure import read_sigstruct
from cleanroom.tee.image import ImageFiles, TrustedFile
from cleanroom.tee.measure import ATTESTER, WORKER, image_files
from tests.tee.gramine.sigstructs import sign, unsigned


@pytest.fixture(scope="module")
def outside_tmp() -> Iterator[Path]:
    """A directory outside /tmp: inside a Gramine enclave /tmp is a tmpfs, so the manifest
    refuses trusted files there (and pytest's tmp_path is under /tmp)."""
    directory = Path(tempfile.mkdtemp(prefix="cleanroom-manifest-", dir="/var/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def install(outside_tmp: Path) -> GramineInstall:
    """A stand-in for Gramine's install: its LibOS and glibc are files like any other here."""
    libdir = outside_tmp / "gramine"
    (libdir / "runtime" / "glibc").mkdir(parents=True)
    (libdir / "libsysdb.so").write_bytes(b"LibOS stand-in")
    (libdir / "runtime" / "glibc" / "libc.so.6").write_bytes(b"glibc stand-in")
    (libdir / "runtime" / "glibc" / "ld-linux-x86-64.so.2").write_bytes(b"ld.so stand-in")
    return GramineInstall.find(libdir)


def worker_sig(prod_id: int = WORKER.isv_prod_id) -> bytes:
    return sign(unsigned(isv_prod_id=prod_id, enclave_hash=bytes([7]) * 32)).to_bytes()


@pytest.fixture(scope="module")
def rendered_worker(outside_tmp: Path, install: GramineInstall) -> tuple[str, ImageFiles, Path]:
    files = image_files("worker")
    rendered = render(WORKER, files, out_dir=outside_tmp / "out", install=install)
    rendered.write()
    return rendered.manifest, files, rendered.enclave_config_path


@pytest.fixture(scope="module")
def rendered_attester(outside_tmp: Path, install: GramineInstall) -> tuple[str, ImageFiles, Path]:
    files = image_files("attester")
    extra = admitted_workers(read_sigstruct(worker_sig()))
    rendered = render(
        ATTESTER, files, out_dir=outside_tmp / "out", install=install, extra_config=extra
    )
    rendered.write()
    return rendered.manifest, files, rendered.enclave_config_path


@pytest.mark.parametrize("which", ["rendered_worker", "rendered_attester"])
def test_trusted_files_are_exactly_the_measured_list_with_its_hashes(
    which: str, request: pytest.FixtureRequest, install: GramineInstall
) -> None:
    text, files, config_path = request.getfixturevalue(which)
    document = tomllib.loads(text)
    trusted = {entry["uri"]: entry["sha256"] for entry in document["sgx"]["trusted_files"]}
    measured = {f"file:{entry.path}": entry.sha256 for entry in files.files}
    gramine = {f"file:{path}" for path in install.runtime_dir.iterdir()}
    # The measured list, the configuration file and Gramine's glibc: nothing else.
    assert set(trusted) == set(measured) | {f"file:{config_path}"} | gramine
    assert all(trusted[uri] == sha256 for uri, sha256 in measured.items())
    # And every hash is the file's here.
    assert unmatched(trusted_entries(text)) == []
    assert len(document["sgx"]["trusted_files"]) == len(trusted)  # no duplicates
    loader = document["loader"]["entrypoint"]
    assert loader["uri"] == f"file:{install.libos}"
    assert loader["sha256"] == hashlib.sha256(install.libos.read_bytes()).hexdigest()


@pytest.mark.parametrize("which", ["rendered_worker", "rendered_attester"])
def test_settings_protect_the_enclave(which: str, request: pytest.FixtureRequest) -> None:
    text, files, config_path = request.getfixturevalue(which)
    image = WORKER if which == "rendered_worker" else ATTESTER
    document = tomllib.loads(text)
    sgx, loader = document["sgx"], document["loader"]
    assert sgx["debug"] is False
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["file_check_policy"] == "strict"
    assert (sgx["isvprodid"], sgx["isvsvn"]) == (image.isv_prod_id, image.isv_svn)
    assert re.fullmatch(r"[0-9]+G", sgx["enclave_size"]) and sgx["max_threads"] >= 8
    assert document["sys"]["disallow_subprocesses"] is True
    assert loader["log_level"] == "error"
    assert "insecure__" not in text
    # The environment is the manifest's alone: values, never a passthrough.
    assert all(isinstance(value, str) for value in loader["env"].values())
    argv = loader["argv"]
    assert argv[argv.index("-m") + 1] == image.service
    assert argv[argv.index("--tee") + 1] == "gramine"
    assert argv[argv.index("--enclave-config") + 1] == str(config_path)
    # The interpreter's group also holds a venv's pyvenv.cfg; the binary is the other entry.
    interpreter = next(
        e.path
        for e in files.files
        if e.group == "interpreter" and not e.path.endswith("pyvenv.cfg")
    )
    assert Path(argv[0]).resolve() == Path(interpreter).resolve()
    assert document["libos"]["entrypoint"] == argv[0]
    if argv[0] != interpreter:  # started as a venv's link: the link's path is the file
        assert {"path": argv[0], "uri": f"file:{interpreter}"} in document["fs"]["mounts"]
    check_manifest(text, image=image.name)


def test_the_worker_workspace_is_encrypted_and_little_else_is_allowed(
    rendered_worker: tuple[str, ImageFiles, Path],
) -> None:
    document = tomllib.loads(rendered_worker[0])
    encrypted = [m for m in document["fs"]["mounts"] if m.get("type") == "encrypted"]
    assert encrypted == [
        {
            "type": "encrypted",
            "path": "/cleanroom/room/run",
            "uri": "file:/cleanroom/room/run",
            "key_name": "workspace",
        }
    ]
    assert "insecure__keys" not in document["fs"]  # the key is drawn by the Worker at start
    assert document["sgx"]["allowed_files"] == [
        "file:/cleanroom/room/spec.json",
        "file:/cleanroom/room/function.tar",
        "file:/cleanroom/room/sealed/",
    ]


def test_the_attester_admits_the_signed_worker(
    rendered_attester: tuple[str, ImageFiles, Path],
) -> None:
    text, _files, config_path = rendered_attester
    document = tomllib.loads(text)
    assert document["sgx"]["allowed_files"] == []
    config = json.loads(config_path.read_bytes())
    worker = read_sigstruct(worker_sig())
    assert config["type"] == "cleanroom/gramine-enclave/v1"
    assert config["config"]["worker_mrenclaves"] == [worker.mr_enclave.hex()]
    assert config["config"]["worker_mrsigner"] == worker.mr_signer.hex()


def test_the_attester_needs_the_workers_signature(
    outside_tmp: Path, install: GramineInstall
) -> None:
    with pytest.raises(ManifestError) as caught:
        render(ATTESTER, image_files("attester"), out_dir=outside_tmp / "a", install=install)
    assert caught.value.check == "worker-signature"
    with pytest.raises(ManifestError) as caught:
        admitted_workers(read_sigstruct(worker_sig(prod_id=ATTESTER.isv_prod_id)))
    assert caught.value.check == "worker-signature"


# -- synthetic images: fast, and free to break --------------------------------------------------


@pytest.fixture
def small_image(outside_tmp: Path) -> Iterator[ImageFiles]:
    root = Path(tempfile.mkdtemp(dir=outside_tmp))
    entries = []
    for group, name, data in [
        ("interpreter", "bin/python3", b"\x7fELF interpreter"),
        ("stdlib", 'lib/python3/odd "name" \\ here.py', b"x = 1\n"),
        ("packages", "lib/site/pkg/__init__.py", b""),
        ("cleanroom", "lib/site/cleanroom/__init__.py", b"# cleanroom\n"),
        ("libraries", "lib/x86_64/libz.so.1", b"\x7fELF libz"),
    ]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(TrustedFile(group, str(path), hashlib.sha256(data).hexdigest(), len(data)))
    yield ImageFiles("worker", tuple(entries), {"runtimes": {}})
    shutil.rmtree(root, ignore_errors=True)


def render_small(image: ImageFiles, out: Path, install: GramineInstall) -> str:
    executable = next(e.path for e in image.files if e.group == "interpreter")
    rendered = render(WORKER, image, out_dir=out, install=install, executable=executable)
    rendered.write()
    return rendered.manifest


def test_odd_paths_are_quoted_and_parse_back(
    small_image: ImageFiles, outside_tmp: Path, install: GramineInstall
) -> None:
    text = render_small(small_image, outside_tmp / "small", install)
    uris = {entry.uri for entry in trusted_entries(text)}
    assert {f"file:{entry.path}" for entry in small_image.files} <= uris
    assert unmatched(trusted_entries(text)) == []


def test_a_changed_byte_is_found(
    small_image: ImageFiles, outside_tmp: Path, install: GramineInstall
) -> None:
    out = Path(tempfile.mkdtemp(dir=outside_tmp))
    text = render_small(small_image, out, install)
    manifest = out / "worker.manifest"
    manifest.write_text(text)
    assert main(["gramine", "check", str(manifest), "--image", "worker", "--files"]) == 0
    library = Path(next(e.path for e in small_image.files if e.group == "libraries"))
    library.write_bytes(library.read_bytes() + b"\0")
    assert unmatched(trusted_entries(text)) == [
        f"{library}: {hashlib.sha256(library.read_bytes()).hexdigest()}"
    ]
    assert main(["gramine", "check", str(manifest), "--files"]) == 1


def test_a_measured_file_where_gramine_mounts_its_own_is_refused(
    small_image: ImageFiles, outside_tmp: Path, install: GramineInstall
) -> None:
    moved = ImageFiles(
        "worker",
        (*small_image.files, TrustedFile("libraries", "/tmp/libx.so", "0" * 64, 1)),
        small_image.config,
    )
    with pytest.raises(ManifestError) as caught:
        render_small(moved, outside_tmp / "moved", install)
    assert caught.value.check == "manifest-path"


def test_sizing_is_checked(
    small_image: ImageFiles, outside_tmp: Path, install: GramineInstall
) -> None:
    for sizing in (Sizing("3G", 64), Sizing("4 G", 64), Sizing("4G", 2)):
        with pytest.raises(ManifestError) as caught:
            render(
                WORKER,
                small_image,
                out_dir=outside_tmp / "s",
                install=install,
                executable=small_image.files[0].path,
                sizing=sizing,
            )
        assert caught.value.check == "manifest-sizing"


def test_without_gramine_nothing_is_rendered(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        GramineInstall.find(tmp_path)
    assert caught.value.check == "gramine-install"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_toml_strings_round_trip(text: str) -> None:
    assert tomllib.loads(f"x = {toml_string(text)}")["x"] == text


# -- a manifest that would not protect its enclave --------------------------------------------


@pytest.fixture(scope="module")
def good(rendered_worker: tuple[str, ImageFiles, Path]) -> str:
    return rendered_worker[0]


def refused(text: str, check: str, image: str | None = "worker") -> ManifestError:
    with pytest.raises(ManifestError) as caught:
        check_manifest(text, image=image)
    assert caught.value.check == check, caught.value
    return caught.value


def test_a_debug_manifest_is_refused(good: str) -> None:
    error = refused(good.replace("sgx.debug = false", "sgx.debug = true"), "manifest-debug")
    assert "sgx.debug = true" in str(error)
    refused(good.replace("sgx.debug = false\n", ""), "manifest-debug")


def test_a_manifest_without_dcap_is_refused(good: str) -> None:
    text = good.replace('sgx.remote_attestation = "dcap"', 'sgx.remote_attestation = "none"')
    refused(text, "manifest-attestation")


@pytest.mark.parametrize(
    "line",
    [
        "loader.insecure__use_host_env = true",
        "loader.insecure__use_cmdline_argv = true",
        'fs.insecure__keys.workspace = "00112233445566778899aabbccddeeff"',
        "loader.env.LD_PRELOAD = { passthrough = true }",
        'sgx.file_check_policy = "allow_all_but_log"',
        'sys.debug__mock_syscalls = [{ name = "open" }]',
    ],
)
def test_a_manifest_that_lets_the_host_in_is_refused(good: str, line: str) -> None:
    key = line.split(" = ")[0]
    lines = [
        existing
        for existing in good.splitlines()
        if not existing.startswith(key + " ") and not existing.startswith("sgx.file_check_policy")
    ]
    # Dotted keys belong before the first table array; put it at the top.
    refused(line + "\n" + "\n".join(lines), "manifest-insecure")


def test_a_verbose_log_is_refused(good: str) -> None:
    refused(
        good.replace('loader.log_level = "error"', 'loader.log_level = "all"'), "manifest-insecure"
    )


def test_a_trusted_file_without_its_hash_is_refused(good: str) -> None:
    text = re.sub(r'\{ uri = ("file:[^"]*"), sha256 = "[0-9a-f]{64}" \}', r"\1", good, count=1)
    refused(text, "manifest-trusted-files")


def test_a_manifest_of_another_program_is_refused(good: str) -> None:
    refused(good, "manifest-image", image="attester")
    refused("sgx.debug = [", "manifest-toml")


def test_the_cli_names_the_check(
    good: str, outside_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    debug = outside_tmp / "debug.manifest"
    debug.write_text(good.replace("sgx.debug = false", "sgx.debug = true"))
    assert main(["gramine", "check", str(debug)]) == 1
    assert "manifest-debug" in capsys.readouterr().err
    assert main(["gramine", "check", str(debug), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["check"] == "manifest-debug"
    assert main(["gramine", "check", str(outside_tmp / "missing.manifest")]) == 2
    assert main(["gramine", "manifest", "attester", "--out", str(outside_tmp / "x")]) == 2
