"""Gramine manifests for the Attester and the Worker, from the files ``cleanroom measure`` hashes.

As ``gramine-manifest`` does, a Jinja2 template (``enclave.manifest.j2``) is rendered
into TOML. Unlike the usual templates, it globs nothing: the trusted files are
exactly the image's measured list (:mod:`cleanroom.tee.image`: interpreter, standard
library, packages, cleanroom, shared libraries and, for the Worker, the runtimes),
each with the SHA-256 the measurement computed, plus the few files a Gramine enclave
needs besides (Gramine's own glibc, which its programs load, and the enclave's
configuration file). ``gramine-sgx-sign`` therefore hashes nothing itself, and what
``cleanroom measure IMAGE --list`` prints is what the signed MRENCLAVE covers.

The image's run-time configuration (for the Worker, its runtimes; for the Attester,
the Worker measurements it admits, read from the Worker's signature) is a trusted
JSON file beside the manifest (``IMAGE.enclave.json``): the enclave reads it as its
measured configuration, as a simulated enclave reads its manifest's ``config``.

:func:`check_manifest` refuses a manifest that would not protect what the enclave
holds (``sgx.debug = true``, host environment or arguments passed through, a lax
file policy, verbose logging, unhashed trusted files); the renderer checks its own
output with it, and the launcher checks the signed ``.manifest.sgx`` it is about to
start. See docs/deploy-sgx.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

from cleanroom import __version__
from cleanroom.errors import CheckFailed
from cleanroom.tee.gramine.config import CONFIG_TYPE
from cleanroom.tee.gramine.measure import GramineMeasurement
from cleanroom.tee.image import HASH_CHUNK, ImageDefinition, ImageFiles
from cleanroom.tee.measure import ATTESTER, WORKER

TEMPLATE = "enclave.manifest.j2"

# Where a Gramine install keeps its LibOS and glibc: the distribution packages, then a
# build from source with meson's default prefix.
GRAMINE_LIBDIRS = (
    Path("/usr/lib/x86_64-linux-gnu/gramine"),
    Path("/usr/local/lib/x86_64-linux-gnu/gramine"),
)

# Inside the enclave: where the launcher binds the room directory, and the address
# each service listens on (in its own network namespace; an untrusted relay outside
# the enclave connects the Controller's Unix socket to it: Gramine's Unix sockets do
# not reach the host).
ROOM_PATH = "/cleanroom/room"
WORKSPACE_PATH = f"{ROOM_PATH}/run"
WORKSPACE_KEY = "workspace"
LISTEN = {"attester": "127.0.0.1:7100", "worker": "127.0.0.1:7101"}

# Paths the manifest gives to Gramine itself (its glibc, pseudo-filesystems, tmpfs, the
# room): no measured file may live there.
RESERVED = ("/lib", "/lib64", "/dev", "/proc", "/sys", "/tmp", "/cleanroom")  # noqa: S108

SERVICE_ARGS = {
    "attester": (),
    "worker": (
        "--room-dir", ROOM_PATH,
        "--spec", f"{ROOM_PATH}/spec.json",
        "--bundle", f"{ROOM_PATH}/function.tar",
    ),
}  # fmt: skip
ALLOWED = {
    "attester": (),
    # Untrusted inputs the Worker checks itself, and its sealed store (ciphertext).
    "worker": (f"{ROOM_PATH}/spec.json", f"{ROOM_PATH}/function.tar", f"{ROOM_PATH}/sealed/"),
}


@dataclass(frozen=True)
class Sizing:
    """How large an enclave is: SGX1 commits all of ``enclave_size`` at start (unless
    EDMM), and ``max_threads`` is a hard limit on threads at a time."""

    enclave_size: str
    max_threads: int
    edmm: bool = False

    def check(self) -> None:
        if not re.fullmatch(r"[1-9][0-9]*[KMG]", self.enclave_size):
            raise ValueError(f"enclave size must be like 512M or 4G, got {self.enclave_size!r}")
        size = int(self.enclave_size[:-1]) << {"K": 10, "M": 20, "G": 30}[self.enclave_size[-1]]
        if size & (size - 1):
            raise ValueError(f"enclave size must be a power of two, got {self.enclave_size}")
        if not 8 <= self.max_threads <= 1024:
            raise ValueError(f"thread count must be 8..1024, got {self.max_threads}")


# The Attester holds little; the Worker stages a run and streams records through
# threads. anyio's thread pool (40) plus uvicorn's and Gramine's own threads need 64.
SIZING = {"attester": Sizing("2G", 64), "worker": Sizing("4G", 64)}


class ManifestError(CheckFailed):
    """A manifest that cannot be rendered, or that would not protect its enclave."""


@dataclass(frozen=True)
class GramineInstall:
    """Gramine's files an enclave loads besides the application's: the LibOS
    (``libsysdb.so``, the loader's entrypoint) and Gramine's glibc."""

    libdir: Path

    @property
    def libos(self) -> Path:
        return self.libdir / "libsysdb.so"

    @property
    def runtime_dir(self) -> Path:
        return self.libdir / "runtime" / "glibc"

    @classmethod
    def find(cls, libdir: Path | None = None) -> GramineInstall:
        """``libdir``, else the first installed of :data:`GRAMINE_LIBDIRS`."""
        candidates = [libdir] if libdir is not None else list(GRAMINE_LIBDIRS)
        for candidate in candidates:
            install = cls(candidate)
            if install.libos.is_file() and install.runtime_dir.is_dir():
                return install
        raise ManifestError(
            "gramine-install",
            "libsysdb.so and runtime/glibc/ in " + " or ".join(str(c) for c in candidates),
            "not found",
            "Gramine is not installed here: the manifest names its LibOS and glibc by hash",
            "render the manifest where Gramine is installed (the image build), "
            "or give --gramine-libdir",
        )


@dataclass(frozen=True)
class TrustedEntry:
    uri: str
    sha256: str


@dataclass(frozen=True)
class RenderedManifest:
    """A rendered manifest, the configuration file it trusts, and where both go."""

    image: str
    manifest: str
    manifest_path: Path
    enclave_config: bytes
    enclave_config_path: Path
    trusted: tuple[TrustedEntry, ...] = field(repr=False)

    def write(self) -> None:
        """Write both files (the configuration first: the manifest names its hash)."""
        self.enclave_config_path.parent.mkdir(parents=True, exist_ok=True)
        self.enclave_config_path.write_bytes(self.enclave_config)
        self.manifest_path.write_text(self.manifest, encoding="utf-8")


# -- TOML values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """Text the template writes as it is (comments, keys): one line, checked."""

    text: str

    def __post_init__(self) -> None:
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in self.text):
            raise ManifestError(
                "manifest-value", "one line of text", repr(self.text), "a control character"
            )


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ManifestError(
            "manifest-value",
            "UTF-8 text",
            repr(text),
            "a TOML manifest holds UTF-8 only (a path that is not UTF-8 cannot be trusted)",
        ) from error
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    """Every ``{{ value }}`` of the template, as TOML."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises, naming the variable
    if isinstance(value, _Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise ManifestError("manifest-value", "text, a number or a list", type(value).__name__, "")


def _toml_key(name: str) -> _Raw:
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ManifestError("manifest-value", "a bare key", name, "not a TOML bare key")
    return _Raw(name)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(  # noqa: S701 - TOML, not HTML: finalize writes every value
        loader=jinja2.FunctionLoader(_load_template),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=toml_value,
    )
    environment.filters["key"] = _toml_key
    return environment


def _load_template(name: str) -> str:
    return (resources.files("cleanroom.tee.gramine") / name).read_text(encoding="utf-8")


# -- rendering ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _gramine_files(install: GramineInstall) -> list[TrustedEntry]:
    """Gramine's glibc, hashed now (its programs load it from /lib)."""
    entries = []
    for directory, _subdirectories, files in os.walk(install.runtime_dir):
        for name in files:
            path = Path(directory) / name
            if path.is_file():
                entries.append(TrustedEntry(f"file:{path}", _sha256(path)))
    return sorted(entries, key=lambda entry: entry.uri)


def _check_path(path: str) -> None:
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts:
        raise ManifestError("manifest-path", "an absolute path", path, "a relative measured file")
    for reserved in RESERVED:
        if pure == PurePosixPath(reserved) or PurePosixPath(reserved) in pure.parents:
            raise ManifestError(
                "manifest-path",
                f"no measured file under {', '.join(RESERVED)}",
                path,
                "Gramine's own mounts take these paths (its glibc, pseudo-files, the room)",
                "install the interpreter and packages under /usr or /opt",
            )


def _mounts(paths: Iterable[str]) -> list[dict[str, str]]:
    """One chroot mount per top-level pair of directories holding a measured file
    (``/usr/lib``, ``/opt/cleanroom``): the host's files at the same paths. Only the
    trusted files among them can be opened (``sgx.file_check_policy = "strict"``)."""
    tops = set()
    for path in paths:
        parts = PurePosixPath(path).parts
        if len(parts) < 3:
            raise ManifestError(
                "manifest-path", "a file below a directory", path, "a measured file in /"
            )
        tops.add(PurePosixPath(*parts[:3]) if len(parts) > 3 else PurePosixPath(path).parent)
    minimal = sorted(str(top) for top in tops if not any(other in top.parents for other in tops))
    return [{"path": top, "uri": f"file:{top}"} for top in minimal]


def enclave_config(image: ImageDefinition, files: ImageFiles, extra: Mapping[str, Any]) -> bytes:
    """The trusted configuration file's bytes: the image's measured configuration."""
    document = {
        "type": CONFIG_TYPE,
        "image": image.name,
        "isv_prod_id": image.isv_prod_id,
        "isv_svn": image.isv_svn,
        "groups": [group.to_json() for group in files.groups()],
        "config": {**files.config, **extra},
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def admitted_workers(worker: GramineMeasurement) -> dict[str, Any]:
    """The Attester's measured admission rule, from the signed Worker's SIGSTRUCT."""
    if worker.isv_prod_id != WORKER.isv_prod_id:
        raise ManifestError(
            "worker-signature",
            f"ISVPRODID {WORKER.isv_prod_id} (the Worker)",
            worker.isv_prod_id,
            "the signature given for the Worker is another enclave's",
        )
    return {
        "worker_mrenclaves": [worker.mr_enclave.hex()],
        "worker_mrsigner": worker.mr_signer.hex(),
    }


def render(
    image: ImageDefinition,
    files: ImageFiles,
    *,
    out_dir: Path,
    install: GramineInstall,
    executable: str | None = None,
    sizing: Sizing | None = None,
    extra_config: Mapping[str, Any] | None = None,
) -> RenderedManifest:
    """The Gramine manifest of ``image`` whose measured files are ``files``.

    ``executable`` is the interpreter's path as the service is started by it (a
    virtual environment's ``bin/python``; default: this process's); the file it
    resolves to is the measured one. ``out_dir`` is where the manifest and its
    configuration file will be, in the image and on the host alike.
    ``extra_config`` joins the measured configuration (the Attester's admitted
    Workers: :func:`admitted_workers`).
    """
    if image.name not in LISTEN:
        raise ManifestError("manifest-image", sorted(LISTEN), image.name, "no such enclave image")
    if image.name == ATTESTER.name and not (extra_config or {}).get("worker_mrenclaves"):
        raise ManifestError(
            "worker-signature",
            "the signed Worker's measurement",
            "none",
            "the Attester's measured configuration names the Workers it admits",
            "sign the Worker first, then render the Attester with --worker-sig WORKER.sig",
        )
    sizing = sizing or SIZING[image.name]
    try:
        sizing.check()
    except ValueError as error:
        raise ManifestError("manifest-sizing", "a usable size", str(sizing), str(error)) from error
    out_dir = Path(os.path.abspath(out_dir))
    for entry in files.files:
        _check_path(entry.path)
    interpreter = [entry for entry in files.files if entry.group == "interpreter"]
    binaries = [entry for entry in interpreter if not entry.path.endswith("pyvenv.cfg")]
    if len(binaries) != 1:
        raise ManifestError(
            "manifest-interpreter", "one interpreter", [e.path for e in binaries], "in the image"
        )
    started_as = os.path.abspath(executable or sys.executable)
    _check_path(started_as)

    config_path = out_dir / f"{image.name}.enclave.json"
    config = enclave_config(image, files, extra_config or {})
    _check_path(str(config_path))
    ours = [TrustedEntry(f"file:{entry.path}", entry.sha256) for entry in files.files]
    config_entry = TrustedEntry(f"file:{config_path}", hashlib.sha256(config).hexdigest())
    trusted = (*ours, config_entry, *_gramine_files(install))

    library_dirs = sorted(
        {str(PurePosixPath(e.path).parent) for e in files.files if e.group == "libraries"}
    )
    file_mounts = []
    if started_as != binaries[0].path:  # a venv's bin/python is a link to the interpreter
        file_mounts.append({"path": started_as, "uri": f"file:{binaries[0].path}"})
    argv = [
        started_as, "-I", "-B", "-m", image.service,
        "--tee", "gramine",
        "--listen", LISTEN[image.name],
        "--enclave-config", str(config_path),
        *SERVICE_ARGS[image.name],
    ]  # fmt: skip
    room = None
    if image.name == WORKER.name:
        room = {
            "path": ROOM_PATH,
            "uri": f"file:{ROOM_PATH}",
            "workspace": WORKSPACE_PATH,
            "workspace_uri": f"file:{WORKSPACE_PATH}",
            "key_name": WORKSPACE_KEY,
        }
    text = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            image_name_text=_Raw(image.name),
            version_text=_Raw(__version__),
            entrypoint=started_as,
            loader_uri=f"file:{install.libos}",
            runtime_uri=f"file:{install.runtime_dir}",
            loader_sha256=_sha256(install.libos),
            argv=argv,
            environment=[
                ("LD_LIBRARY_PATH", ":".join(["/lib", *library_dirs])),
                ("LANG", "C.UTF-8"),
                # glibc reserves 64 MiB of address space per arena and thread: in an
                # enclave every reserved page is committed.
                ("MALLOC_ARENA_MAX", "2"),
            ],
            mounts=_mounts([*(e.path for e in files.files), str(config_path)]),
            file_mounts=file_mounts,
            room=room,
            edmm=sizing.edmm,
            enclave_size=sizing.enclave_size,
            max_threads=sizing.max_threads,
            isv_prod_id=image.isv_prod_id,
            isv_svn=image.isv_svn,
            allowed_files=[f"file:{path}" for path in ALLOWED[image.name]],
            trusted_files=trusted,
        )
    )
    rendered = RenderedManifest(
        image=image.name,
        manifest=text,
        manifest_path=out_dir / f"{image.name}.manifest",
        enclave_config=config,
        enclave_config_path=config_path,
        trusted=trusted,
    )
    check_manifest(text, image=image.name)  # what we render, we would start
    return rendered


# -- checking a manifest -----------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestFacts:
    """What a checked manifest says about the enclave it describes."""

    isv_prod_id: int
    isv_svn: int
    enclave_size: str
    max_threads: int
    trusted_files: int
    argv: tuple[str, ...]


_HEX64 = re.compile(r"[0-9a-f]{64}")


def _insecure_keys(document: Mapping[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in document.items():
        name = f"{prefix}{key}"
        if "insecure__" in key or key.startswith("debug__"):
            found.append(name)
        if isinstance(value, Mapping):
            found.extend(_insecure_keys(value, name + "."))
    return found


def check_manifest(text: str, *, image: str | None = None) -> ManifestFacts:
    """Refuse a Gramine manifest (rendered, or signed ``.manifest.sgx``) that would not
    protect its enclave; each refusal names its check (``manifest-debug``, …)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ManifestError("manifest-toml", "a TOML manifest", str(error), "not TOML") from error
    sgx = document.get("sgx", {})
    loader = document.get("loader", {})
    if not isinstance(sgx, dict) or not isinstance(loader, dict):
        raise ManifestError("manifest-toml", "sgx and loader tables", "other values", "malformed")
    if sgx.get("debug") is not False:
        raise ManifestError(
            "manifest-debug",
            "sgx.debug = false",
            f"sgx.debug = {json.dumps(sgx.get('debug'))}",
            "a debug enclave's memory is open to the host: it protects nothing",
            "render the manifest again (cleanroom measure --gramine-manifest) and sign it",
        )
    if sgx.get("remote_attestation") != "dcap":
        raise ManifestError(
            "manifest-attestation",
            'sgx.remote_attestation = "dcap"',
            sgx.get("remote_attestation"),
            "the enclave could not be attested with a DCAP quote",
        )
    insecure = _insecure_keys(document)
    environment = loader.get("env", {})
    if isinstance(environment, dict):
        insecure.extend(
            f"loader.env.{name} (passthrough)"
            for name, value in environment.items()
            if isinstance(value, dict) and "passthrough" in value
        )
    if sgx.get("file_check_policy", "strict") != "strict":
        insecure.append(f"sgx.file_check_policy = {sgx.get('file_check_policy')!r}")
    if loader.get("log_level", "error") not in ("error", "none"):
        insecure.append(f"loader.log_level = {loader.get('log_level')!r}")
    if "argv" not in loader:
        insecure.append("no loader.argv (the enclave's arguments would not be measured)")
    if insecure:
        raise ManifestError(
            "manifest-insecure",
            "no host environment, host arguments, unchecked files or verbose log",
            sorted(insecure),
            "this manifest lets the host reach into the enclave",
        )
    trusted = sgx.get("trusted_files", [])
    unhashed = [
        entry
        for entry in trusted
        if not isinstance(entry, dict)
        or not str(entry.get("uri", "")).startswith("file:")
        or not _HEX64.fullmatch(str(entry.get("sha256", "")))
    ]
    if unhashed or not trusted:
        raise ManifestError(
            "manifest-trusted-files",
            "every trusted file as { uri = 'file:…', sha256 = <64 hex> }",
            unhashed[:3] or "no trusted files",
            "a trusted file without its hash is hashed by whoever signs, from whatever is there",
        )
    entrypoint = loader.get("entrypoint", {})
    if not isinstance(entrypoint, dict) or not _HEX64.fullmatch(str(entrypoint.get("sha256", ""))):
        raise ManifestError(
            "manifest-trusted-files",
            "loader.entrypoint.sha256",
            entrypoint,
            "the LibOS is not named by its hash",
        )
    argv = loader.get("argv", [])
    if image is not None:
        module = {ATTESTER.name: ATTESTER.service, WORKER.name: WORKER.service}.get(image)
        if module is None or module not in argv:
            raise ManifestError(
                "manifest-image",
                f"the {image} service ({module})",
                argv,
                "this manifest starts another program",
            )
    return ManifestFacts(
        isv_prod_id=int(sgx.get("isvprodid", 0)),
        isv_svn=int(sgx.get("isvsvn", 0)),
        enclave_size=str(sgx.get("enclave_size", "")),
        max_threads=int(sgx.get("max_threads", 0)),
        trusted_files=len(trusted),
        argv=tuple(str(arg) for arg in argv),
    )


def trusted_entries(text: str) -> list[TrustedEntry]:
    """The trusted files a manifest names, with their hashes (after :func:`check_manifest`)."""
    document = tomllib.loads(text)
    return [
        TrustedEntry(str(entry["uri"]), str(entry["sha256"]))
        for entry in document["sgx"]["trusted_files"]
    ]


def unmatched(entries: Sequence[TrustedEntry]) -> list[str]:
    """The trusted files whose bytes here do not have the hash the manifest names."""
    wrong = []
    for entry in entries:
        path = Path(entry.uri.removeprefix("file:"))
        try:
            actual = _sha256(path)
        except OSError:
            actual = "missing"
        if actual != entry.sha256:
            wrong.append(f"{path}: {actual}")
    return wrong
