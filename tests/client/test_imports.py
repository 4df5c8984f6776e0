"""The review names the file the Worker imports as the handler's module, and what it hides.

Three witnesses: the import system itself (``PathFinder`` over the same
directories, and this interpreter's own loader table), and the Worker's runner
(its bootstrap and confinement), which runs each tricky function and reports
which file ran.
"""

from __future__ import annotations

import importlib.machinery
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.client.imports import (
    ModuleError,
    extension_suffixes,
    find_spec,
    locate_handler,
    search_path,
    shadowing,
)
from cleanroom.enclave.errors import RunError
from cleanroom.enclave.runner import Sandbox, installed_runtime, run_function
from cleanroom.enclave.supervisor import Limits
from cleanroom.protocol.bundle import pack, unpack
from cleanroom.runtimes import Runtime
from tests.protocol.test_bundle import Tree, write_tree
from tests.sandbox import confined

RUNTIME = "python3.11"
SO = ".cpython-311-x86_64-linux-gnu.so"


def marker(path: str) -> bytes:
    """A module whose ``run`` writes ``path`` (the file it is) into the output."""
    return (
        "import pathlib\n\n"
        "def run():\n"
        f"    pathlib.Path('outputs/output_1/ran.txt').write_text({path!r})\n"
    ).encode()


# --- where the handler is ---------------------------------------------------------------

TRICKS: dict[str, tuple[Tree, str, str]] = {
    # name: (function tree, handler, the file Python imports)
    "plain": ({"handler.py": marker("handler.py")}, "handler.run", "handler.py"),
    "package-beside-module": (
        {
            "handler.py": marker("handler.py"),
            "handler": {"__init__.py": marker("handler/__init__.py")},
        },
        "handler.run",
        "handler/__init__.py",
    ),
    "top-before-packages": (
        {
            "handler.py": b"",
            "mod.py": marker("mod.py"),
            "packages": {"mod.py": marker("packages/mod.py")},
        },
        "mod.run",
        "mod.py",
    ),
    "namespace-at-top-does-not-stop-the-search": (
        {
            "handler.py": b"",
            "mod": {"README.txt": b""},
            "packages": {"mod.py": marker("packages/mod.py")},
        },
        "mod.run",
        "packages/mod.py",
    ),
    "module-before-namespace": (
        {"handler.py": b"", "mod.py": marker("mod.py"), "mod": {"x.py": b""}},
        "mod.run",
        "mod.py",
    ),
    "submodule": (
        {
            "handler.py": b"",
            "pkg": {
                "__init__.py": b"",
                "job.py": marker("pkg/job.py"),
                "job": {"__init__.py": marker("pkg/job/__init__.py")},
            },
        },
        "pkg.job.run",
        "pkg/job/__init__.py",
    ),
    "namespace-portions-merge": (
        {
            "handler.py": b"",
            "ns": {"a.py": b""},
            "packages": {"ns": {"job.py": marker("packages/ns/job.py")}},
        },
        "ns.job.run",
        "packages/ns/job.py",
    ),
}


def tree_dir(root: Path, tree: Tree) -> Path:
    return write_tree(root, tree)


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_the_handler_is_where_import_finds_it(trick: str, tmp_path: Path) -> None:
    tree, handler, expected = TRICKS[trick]
    root = tree_dir(tmp_path / "f", tree)
    located = locate_handler(root, handler, RUNTIME)
    assert located.path == expected
    assert located.kind == "source"


def test_enclosing_packages_run_first(tmp_path: Path) -> None:
    root = tree_dir(tmp_path / "f", TRICKS["submodule"][0])
    assert locate_handler(root, "pkg.job.run", RUNTIME).runs_first == ("pkg/__init__.py",)


def test_an_extension_comes_before_its_source(tmp_path: Path) -> None:
    root = tree_dir(
        tmp_path / "f",
        {"handler.py": b"", "packages": {"mod.py": b"", f"mod{SO}": b"\x7fELF"}},
    )
    located = locate_handler(root, "mod.run", RUNTIME)
    assert (located.path, located.kind) == (f"packages/mod{SO}", "extension")
    # Another runtime's extension is not importable by this one: the source is.
    assert locate_handler(root, "mod.run", "python3.12").path == "packages/mod.py"


@pytest.mark.parametrize(
    ("tree", "handler", "actual"),
    [
        ({"handler.py": b""}, "missing.run", "missing: not found"),
        ({"handler.py": b"", "ns": {"x.txt": b""}}, "ns.run", "ns: a namespace package"),
        ({"handler.py": b""}, "handler.sub.run", "handler: a module, not a package"),
        ({"handler.py": b"", "json.py": b""}, "json.run", "json: a standard-library name"),
        ({"handler.py": b""}, "os.path.run", "os: a standard-library name"),
        ({"handler.py": b"", "pkg": {"__init__.py": b""}}, "pkg.gone.run", "pkg.gone: not found"),
    ],
)
def test_a_handler_the_review_cannot_locate_is_an_error(
    tree: Tree, handler: str, actual: str, tmp_path: Path
) -> None:
    root = tree_dir(tmp_path / "f", tree)
    with pytest.raises(ModuleError) as caught:
        locate_handler(root, handler, RUNTIME)
    assert caught.value.check == "handler-module"
    assert caught.value.actual == actual


# --- the import system agrees -------------------------------------------------------------


def test_the_loaders_are_the_interpreters_own() -> None:
    """For this interpreter's own version and platform, the loader table is importlib's."""
    runtime = _this_runtime()
    assert list(extension_suffixes(runtime)) == importlib.machinery.EXTENSION_SUFFIXES
    assert importlib.machinery.SOURCE_SUFFIXES == [".py"]
    assert importlib.machinery.BYTECODE_SUFFIXES == [".pyc"]


def _this_runtime() -> str:
    if (
        sysconfig.get_config_var("MULTIARCH") != "x86_64-linux-gnu"
        or sys.implementation.name != "cpython"
    ):
        pytest.skip(f"this interpreter is not on the Worker's platform ({platform.machine()})")
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def _path_finder(name: str, path: list[str]) -> importlib.machinery.ModuleSpec | None:
    """importlib's own PathFinder over ``path``, leaving no trace in sys.path_importer_cache.

    For a submodule, PathFinder reads the parent's ``__path__`` from sys.modules: a
    stand-in parent is put there for the call (nothing is imported).
    """
    parent = name.rpartition(".")[0]
    saved = sys.modules.get(parent)
    if parent:
        stand_in = types.ModuleType(parent)
        stand_in.__path__ = path
        sys.modules[parent] = stand_in
    try:
        return importlib.machinery.PathFinder.find_spec(name, path)
    finally:
        for entry in path:
            sys.path_importer_cache.pop(entry, None)
        if parent:
            if saved is None:
                del sys.modules[parent]
            else:
                sys.modules[parent] = saved


def _same(
    ours: importlib.machinery.ModuleSpec | None, theirs: importlib.machinery.ModuleSpec | None
) -> None:
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert ours.origin == theirs.origin or (ours.loader is None and theirs.loader is None)
    assert type(ours.loader) is type(theirs.loader)
    assert _locations(ours) == _locations(theirs)


def _locations(spec: importlib.machinery.ModuleSpec) -> list[str]:
    # A namespace package's _NamespacePath recomputes itself from its parent in
    # sys.modules when iterated; these packages are never imported: read its list.
    locations = spec.submodule_search_locations
    return list(getattr(locations, "_path", locations) or [])


_DIRS = st.lists(st.sampled_from(["a", "b", "packages"]), max_size=2).map("/".join)
_LEAVES = st.sampled_from(["a.py", "b.py", "__init__.py", "a/x.txt", "b/x.txt", "x.txt", f"a{SO}"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_DIRS, _LEAVES), min_size=1, max_size=8))
def test_the_search_is_pathfinders(entries: list[tuple[str, str]]) -> None:
    runtime = _this_runtime()
    with tempfile.TemporaryDirectory() as name:
        root = Path(name) / "f"
        root.mkdir()
        for directory, leaf in entries:
            target = root / directory / leaf
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_dir():
                target.write_bytes(b"")
        top = search_path(root)
        for module in ("a", "b", "packages"):
            ours = find_spec(module, top, runtime)
            theirs = _path_finder(module, [str(entry) for entry in top])
            _same(ours, theirs)
            if theirs is not None and theirs.submodule_search_locations is not None:
                inner = _locations(theirs)
                for child in ("a", "b"):
                    _same(
                        find_spec(f"{module}.{child}", [Path(p) for p in inner], runtime),
                        _path_finder(f"{module}.{child}", inner),
                    )


# --- the Worker's runner runs the file the review names ---------------------------------------


@pytest.fixture(scope="module")
def confinement() -> Iterator[Sandbox]:
    with confined() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def interpreter() -> Runtime:
    try:
        return installed_runtime(RUNTIME)
    except RunError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


def run_as_the_worker(
    bundle: bytes, handler: str, workspace: Path, confinement: Sandbox, interpreter: Runtime
) -> str:
    """Unpack and run ``bundle`` as the Worker does; what the handler wrote."""
    unpack(bundle, workspace / "function")
    (workspace / "inputs").mkdir()
    (workspace / "parameters.json").write_text("{}")
    received: dict[str, bytes] = {}
    result = run_function(
        sandbox=confinement,
        runtime=interpreter,
        workspace=workspace,
        outputs=["output_1"],
        handler=handler,
        limits=Limits(memory_mib=256, processes=64, cpu_s=60, timeout_s=30, disk_mib=16),
        receive=lambda name, stream, _size: received.__setitem__(name, stream.read()),
        keep_log=True,
    )
    assert result.status == "succeeded", result.log.decode(errors="replace")
    return received["output_1/ran.txt"].decode()


@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_the_worker_runs_the_file_the_review_names(
    trick: str, tmp_path: Path, workspace: Path, confinement: Sandbox, interpreter: Runtime
) -> None:
    tree, handler, _ = TRICKS[trick]
    bundle = pack(write_tree(tmp_path / "source", tree))
    reviewed = tmp_path / "reviewed"
    unpack(bundle, reviewed)
    named = locate_handler(reviewed, handler, RUNTIME).path
    assert run_as_the_worker(bundle, handler, workspace, confinement, interpreter) == named


EXTENSION_SOURCE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *run(PyObject *self, PyObject *unused) {
    FILE *out = fopen("outputs/output_1/ran.txt", "w");
    if (out == NULL) return PyErr_SetFromErrno(PyExc_OSError);
    fputs("packages/mod.cpython-311-x86_64-linux-gnu.so", out);
    fclose(out);
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"run", run, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "mod", NULL, -1, methods};
PyMODINIT_FUNC PyInit_mod(void) { return PyModule_Create(&module); }
"""


def compiled_extension(directory: Path) -> bytes:
    """A real extension module ``mod`` for the runtime; skips without a C compiler."""
    include = Path("/usr/include/python3.11")
    compiler = shutil.which("cc")
    if compiler is None or not (include / "Python.h").is_file():
        pytest.skip("no C compiler or python3.11 headers to build an extension module")
    source = directory / "mod.c"
    source.write_text(EXTENSION_SOURCE)
    built = directory / f"mod{SO}"
    subprocess.run(
        [compiler, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(built)],
        check=True,
        capture_output=True,
    )
    return built.read_bytes()


def test_the_worker_runs_the_extension_the_review_names(
    tmp_path: Path, workspace: Path, confinement: Sandbox, interpreter: Runtime
) -> None:
    extension = compiled_extension(tmp_path)
    tree: Tree = {
        "handler.py": b"",
        "packages": {"mod.py": marker("packages/mod.py"), f"mod{SO}": extension},
    }
    bundle = pack(write_tree(tmp_path / "source", tree))
    reviewed = tmp_path / "reviewed"
    unpack(bundle, reviewed)
    located = locate_handler(reviewed, "mod.run", RUNTIME)
    assert (located.path, located.kind) == (f"packages/mod{SO}", "extension")
    assert run_as_the_worker(bundle, "mod.run", workspace, confinement, interpreter) == located.path
    (warning,) = shadowing(reviewed, RUNTIME)
    assert (warning.module, warning.used, warning.hidden) == (
        "mod",
        f"packages/mod{SO}",
        ("packages/mod.py",),
    )


# --- what hides what ------------------------------------------------------------------------


def test_shadowing_names_every_hidden_module(tmp_path: Path) -> None:
    root = tree_dir(
        tmp_path / "f",
        {
            "handler.py": b"",
            "handler": {"__init__.py": b""},
            "json.py": b"",
            "util.py": b"",
            "lib": {"__init__.py": b"", "job.py": b"", "job": {"__init__.py": b""}},
            "packages": {
                "util.py": b"",
                "typing.py": b"",
                "numpy": {"__init__.py": b"", "core.py": b"", f"core{SO}": b""},
            },
        },
    )
    found = {
        (item.module, item.used, item.hidden, item.reason) for item in shadowing(root, RUNTIME)
    }
    assert found == {
        ("handler", "handler/__init__.py", ("handler.py",),
         "a package comes before a module of the same name"),
        ("json", None, ("json.py",), "the runtime decides which runs"),
        ("typing", None, ("packages/typing.py",), "the runtime decides which runs"),
        ("util", "util.py", ("packages/util.py",),
         "the top of the function comes before packages/"),
        ("lib.job", "lib/job/__init__.py", ("lib/job.py",),
         "a package comes before a module of the same name"),
        ("numpy.core", f"packages/numpy/core{SO}", ("packages/numpy/core.py",),
         "the interpreter tries compiled extensions first, then sources"),
    }  # fmt: skip


def test_a_plain_function_hides_nothing(tmp_path: Path) -> None:
    root = tree_dir(
        tmp_path / "f",
        {"handler.py": b"", "lib": {"__init__.py": b"", "x.py": b""}, "packages": {"y.py": b""}},
    )
    assert shadowing(root, RUNTIME) == ()
