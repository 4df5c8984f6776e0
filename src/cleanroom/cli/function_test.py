"""``cleanroom function test``: run a function locally in the Worker's sandbox, no TEE."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cleanroom.cli.common import (
    DURATION_HELP,
    EXIT_USAGE,
    SIZE_HELP,
    counted,
    disk_mib,
    duration_text,
    fail,
    json_output,
    memory_mib,
    parse_duration,
    print_json,
    stderr,
    stdout,
)
from cleanroom.protocol.spec import Resources, WorkSpec
from cleanroom.protocol.text import shown, terminal_safe

if TYPE_CHECKING:
    from cleanroom.client.review import ReviewWarning
    from cleanroom.enclave.runner import RunResult
    from cleanroom.enclave.trial import Trial

DEFAULTS = Resources()


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key or not value:
            fail(f"{what} must be ID=PATH, got {item!r}", EXIT_USAGE)
        if key in pairs:
            fail(f"{what} {key} given twice", EXIT_USAGE)
        pairs[key] = value
    return pairs


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    value, unit = float(size), "B"
    for larger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def function_test(
    directory: Annotated[
        Path, typer.Argument(help="The function directory (handler.py at its top).")
    ],
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            metavar="ID=PATH",
            help="An input: its id and a file or directory of test data (repeatable). "
            "It appears at /work/inputs/ID/.",
            show_default=False,
        ),
    ] = None,
    output_ids: Annotated[
        list[str] | None,
        typer.Option(
            "--output-id",
            metavar="ID",
            help="An output id the function writes to, /work/outputs/ID/ (repeatable) "
            "[default: output_1].",
            show_default=False,
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="A parameter (repeatable), typed as `cleanroom deploy` types it.",
            show_default=False,
        ),
    ] = None,
    handler: Annotated[str, typer.Option(help="The entry point, module.function.")] = (
        "handler.run"
    ),
    runtime: Annotated[str, typer.Option(help="The Worker's Python runtime.")] = "python3.11",
    memory: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help=f"Memory limit: {SIZE_HELP}. A number alone is MiB, and only from 64 "
            "(below needs its unit: deploy's number alone is GiB).",
        ),
    ] = f"{DEFAULTS.memory_mib}M",
    timeout: Annotated[
        str, typer.Option(metavar="DURATION", help=f"Wall-time limit: {DURATION_HELP}.")
    ] = duration_text(DEFAULTS.timeout_s),
    cpu: Annotated[
        str, typer.Option(metavar="DURATION", help=f"CPU-time limit, all tasks: {DURATION_HELP}.")
    ] = duration_text(DEFAULTS.cpu_s),
    processes: Annotated[
        int, typer.Option(help="Task limit (processes and threads).")
    ] = DEFAULTS.processes,
    disk: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help=f"Limit of outputs/ and /tmp together: {SIZE_HELP}; a number alone is MiB.",
        ),
    ] = f"{DEFAULTS.disk_mib}M",
    out: Annotated[
        Path, typer.Option(help="Where the outputs are written: must not exist, or be empty.")
    ] = Path("test-outputs"),
) -> None:
    """Run DIRECTORY's handler on test data, in the same sandbox and runtime as a Worker
    (bubblewrap: no network, the same syscall filter, /work layout, the limits), but
    without a TEE: nothing is attested or encrypted. Prints what each output received,
    the resources used and the function's own output (every character a terminal acts
    on escaped, as \\x1b); exits 1 unless the run succeeded.
    The handler is checked first as deploy and every review check it: a module the
    function does not have is refused (handler-module, exit 2); a handler not seen
    defined, or an import the runtime lacks, is a warning."""
    from pydantic import ValidationError

    from cleanroom.client.access import parse_parameters
    from cleanroom.enclave.supervisor import Limits
    from cleanroom.enclave.trial import run_trial
    from cleanroom.errors import CheckFailed
    from cleanroom.protocol.bundle import BundleError

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        fail(f"{out} exists and is not a directory", EXIT_USAGE)
    if out.is_dir() and any(out.iterdir()):
        fail(f"{out} is not empty (choose another --out)", EXIT_USAGE)
    inputs = {key: Path(value) for key, value in _pairs(input_ or [], "--input").items()}
    try:
        parameters = parse_parameters(param or [])
        resources = Resources(
            memory_mib=memory_mib(memory, "--memory", bare="MiB"),
            timeout_s=parse_duration(timeout, "--timeout"),
            cpu_s=parse_duration(cpu, "--cpu"),
            processes=processes,
            disk_mib=disk_mib(disk, "--disk"),
        )
    except CheckFailed as error:  # a limit out of range: unusable input here, exit 2
        fail(str(error), EXIT_USAGE)
    except ValidationError as error:
        first = error.errors()[0]
        where = str(first["loc"][0])  # the spec's field: named by its option and unit
        size = {"memory_mib": f"--memory {memory}", "disk_mib": f"--disk {disk}"}.get(where)
        if size is not None:  # given with or without a unit: the bound is in MiB
            fail(f"{size}: {first['msg']} MiB", EXIT_USAGE)
        duration = {"timeout_s": f"--timeout {timeout}", "cpu_s": f"--cpu {cpu}"}.get(where)
        if duration is not None:  # given with or without a unit: the bound is in seconds
            fail(f"{duration}: {first['msg']} s", EXIT_USAGE)
        fail(f"{_LIMIT_OPTIONS.get(where, where)}: {first['msg']}", EXIT_USAGE)
    if _HANDLER.fullmatch(handler) is None:  # the spec's pattern: deploy would refuse it
        fail(f"--handler {shown(handler)}: give module.function, e.g. handler.run", EXIT_USAGE)
    try:
        warnings = _handler_warnings(directory, handler, runtime)
    except BundleError as error:  # the directory given is no bundle: exit 2, not 1
        fail(str(error), EXIT_USAGE)
    except CheckFailed as error:  # handler-module: as deploy refuses it, before a run
        fail(str(error), EXIT_USAGE)
    except OSError as error:
        fail(f"{error.filename or directory}: {error.strerror}", EXIT_USAGE)
    for warning in warnings:
        stderr.print(f"warning: {warning.check}: {warning.message}", markup=False)
    try:
        with stderr.status(f"running {directory} in the sandbox…"):
            trial = run_trial(
                directory,
                handler=handler,
                runtime=runtime,
                inputs=inputs,
                outputs=output_ids or ["output_1"],
                parameters=parameters,
                limits=Limits(**resources.model_dump()),
                destination=out,
            )
    except BundleError as error:  # the directory given is no bundle: exit 2, not 1
        fail(str(error), EXIT_USAGE)
    except OSError as error:
        fail(f"{error.filename or directory}: {error.strerror}", EXIT_USAGE)
    result = trial.result
    if json_output():
        print_json(
            {
                "status": result.status,
                "exit_code": result.exit_code,
                "confinement": list(result.confinement),
                "seconds": result.seconds,
                "cpu_seconds": result.cpu_seconds,
                "memory_peak_bytes": result.memory_peak_bytes,
                "disk_bytes": result.disk_bytes,
                "warnings": [warning.to_json() for warning in warnings],
                "outputs_withheld": result.outputs_withheld,
                "outputs_left_out": result.outputs_left_out,
                "outputs": {
                    output_id: {
                        "directory": str(out / output_id),
                        "files": {
                            item.name.split("/", 1)[1]: item.size
                            for item in trial.outputs
                            if item.name.split("/", 1)[0] == output_id
                        },
                    }
                    for output_id in output_ids or ["output_1"]
                },
                "log": result.log.decode(errors="replace"),
            }
        )
    else:
        _show(result, trial, out, output_ids or ["output_1"])
    if result.status != "succeeded":
        missing = _in_another_runtime(result.log, runtime)
        if missing is not None:
            stderr.print(missing, markup=False)
        layout = _not_in_the_layout(result.log, sorted(inputs), output_ids or ["output_1"])
        if layout is not None:
            stderr.print(layout, markup=False)
        raise typer.Exit(1)


_NOT_FOUND = re.compile(rb"No such file or directory: '(/work/[^'\n]{0,200})'")


def _not_in_the_layout(log: bytes, inputs: list[str], outputs: list[str]) -> str | None:
    """A hint when the run failed opening a path under /work that the sandbox does not
    have (``/work/input/…`` for ``/work/inputs/…``, an input id not given): the
    traceback named the path, and nothing said where the data is."""
    found = _NOT_FOUND.search(log)
    if found is None:
        return None
    path = found.group(1).decode(errors="replace")
    ids = ", ".join(inputs) or "none given"
    return (
        f"hint: {shown(path)} is not in the sandbox: it has /work/inputs/ID/ (here: {ids}), "
        f"/work/outputs/ID/ (here: {', '.join(outputs)}), /work/parameters.json and "
        "/work/function/ (examples/README.md)"
    )


def _handler_warnings(directory: Path, handler: str, runtime: str) -> tuple[ReviewWarning, ...]:
    """What deploy and every reviewer's inspect will say of the handler (review's
    check_handler), said before the run: a seed-product script's main() under
    ``__main__`` ran nothing and failed with a bare AttributeError of ``run``. A
    runtime not in the catalogue is left to the run to refuse."""
    from cleanroom.client.review import check_handler
    from cleanroom.protocol.bundle import function_id, pack
    from cleanroom.runtimes import CATALOGUE

    if runtime not in CATALOGUE:
        return ()
    bundle = pack(directory)  # the same refusals as an upload
    return check_handler(bundle, handler, runtime, function=function_id(bundle))


_LIMIT_OPTIONS = {"processes": "--processes"}
_HANDLER = re.compile(WorkSpec.model_fields["handler"].metadata[0].pattern)
_NO_MODULE = re.compile(rb"ModuleNotFoundError: No module named '([A-Za-z_][A-Za-z0-9_]{0,99})")


def _in_another_runtime(log: bytes, runtime: str) -> str | None:
    """A hint when the run failed importing a module that another installed runtime of
    the catalogue has (pandas under python3.11, the standard library only): the function
    printed only its traceback, and nothing said where the module is."""
    from cleanroom.runtimes import CATALOGUE, RuntimeUnavailable, resolve_runtime

    found = _NO_MODULE.search(log)
    if found is None:
        return None
    module = found.group(1).decode()
    for name, other in CATALOGUE.items():
        if name == runtime:
            continue
        try:
            installed = resolve_runtime(name)
        except RuntimeUnavailable:
            continue
        site = installed.directory / "lib" / f"python{other.python}" / "site-packages"
        if (
            (site / module).is_dir()
            or any(site.glob(f"{module}.py"))
            or any(site.glob(f"{module}.*.so"))
        ):
            return (
                f"hint: {module} is not in runtime {runtime}; runtime {name} has it: give "
                f"--runtime {name} here and to cleanroom deploy (or vendor {module} into the "
                "function's packages/)"
            )
    return None


def _show(result: RunResult, trial: Trial, out: Path, outputs: list[str]) -> None:
    stdout.print(f"status: {result.status} (exit code {result.exit_code})", markup=False)
    for line in result.confinement:
        stdout.print(f"confined by: {line}", markup=False)
    stdout.print(
        f"used: {result.seconds:.2f} s wall, "
        f"{'-' if result.cpu_seconds is None else f'{result.cpu_seconds:.2f} s'} CPU, "
        f"{_size(result.memory_peak_bytes)} peak memory, {_size(result.disk_bytes)} disk",
        markup=False,
    )
    if result.outputs_withheld:
        stdout.print("outputs: withheld (larger than --disk)", markup=False)
    if result.outputs_left_out:
        stdout.print(
            f"outputs: {counted(result.outputs_left_out, 'file')} left out for their names (a "
            "character a terminal acts on or does not show, a leading '-', a .git, a "
            "name a case- or normalisation-insensitive disk holds as another's, "
            ".manifest, a backslash, over 1,024 bytes: docs/threat-model.md)",
            markup=False,
        )
    for output_id in outputs:
        files = [o for o in trial.outputs if o.name.split("/", 1)[0] == output_id]
        stdout.print(
            f"{output_id}: {counted(len(files), 'file')} in {out / output_id}", markup=False
        )
        for item in files:
            # The function names its files: shown escaped, as every untrusted text.
            stdout.print(f"  {shown(item.name.split('/', 1)[1])}  {_size(item.size)}", markup=False)
    if result.log:
        stdout.print("--- the function's stdout and stderr ---", markup=False)
        # What the function printed reached the terminal raw, past the sandbox: its ESC
        # sequences set the window's title and the clipboard (OSC 52, ended by ESC \),
        # cleared the screen and repainted "status: …" (rich drops BEL, CR and a few
        # others, not ESC; h35's red team). A function tried may be another party's
        # (`function download`), so every character a terminal acts on is escaped, line
        # by line; --json has it whole, escaped by JSON.
        lines = result.log.decode(errors="replace").rstrip().split("\n")
        stdout.out("\n".join(terminal_safe(line) for line in lines), highlight=False)
