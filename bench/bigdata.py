"""Figure 6: a 100M x 100M hashed-email overlap, end to end, in the data runtime.

Each party holds N distinct SHA-256 hashes of customer emails (Parquet, one 32-byte
column, made by DuckDB from ``range()``: no Python loop), 30 % of them shared. Both
upload, the function (``bench/functions/hashed_overlap``: DuckDB, a semi-join) runs
in the Worker's sandbox, both download. Baseline, in the same run: the same query
with the same library (the data runtime's interpreter and DuckDB) run directly on
the plaintext files. Also reported: the Controller's and the Worker's peak resident
memory (the function's own is its cgroup's).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import Figure, Target
from bench.env import FUNCTIONS, Environment, User
from bench.figures import say
from cleanroom.runtimes import resolve_runtime

RUNTIME = "python3.11-data"
SHARED = 0.3
MEMORY_GIB = 8  # DuckDB's own limit; the run's cgroup allows more (the files in /tmp too)

GENERATE = """
import sys, duckdb
path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connection = duckdb.connect()
connection.execute("SET enable_progress_bar = false")
connection.execute(
    "COPY (SELECT unhex(sha256('customer-' || i || '@example.com')) AS h "
    f"FROM range({start}, {stop}) t(i)) TO '{path}' "
    "(FORMAT parquet, COMPRESSION uncompressed, ROW_GROUP_SIZE 1000000)"
)
"""

# The handler called on the host, as the sandbox calls it (no sandbox, no TEE).
DIRECT = """
import importlib, sys
sys.path[:0] = [sys.argv[1]]
getattr(importlib.import_module("handler"), "run")()
"""


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def generate(python: Path, directory: Path, start: int, stop: int) -> None:
    directory.mkdir(parents=True)
    subprocess.run(  # noqa: S603 - the data runtime's interpreter, our own script
        [str(python), "-I", "-c", GENERATE, str(directory / "hashes.parquet"), str(start),
         str(stop)],
        check=True,
    )  # fmt: skip


def direct(python: Path, data: Path, work: Path) -> tuple[float, dict[str, int]]:
    for input_id, party in (("input_1", "a"), ("input_2", "b")):
        (work / "inputs" / input_id).mkdir(parents=True)
        for path in (data / party).iterdir():
            (work / "inputs" / input_id / path.name).hardlink_to(path)
    (work / "outputs" / "output_1").mkdir(parents=True)
    (work / "parameters.json").write_text(json.dumps({"memory_gib": MEMORY_GIB}))
    started = time.perf_counter()
    subprocess.run(  # noqa: S603 - fixed argv
        [str(python), "-I", "-c", DIRECT, str(FUNCTIONS["hashed_overlap"])],
        cwd=work,
        env={"WORK_DIR": str(work), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        check=True,
    )
    seconds = time.perf_counter() - started
    result = json.loads((work / "outputs" / "output_1" / "overlap.json").read_text())
    return seconds, result


def function_seconds(worker_log: Path) -> float | None:
    """How long the function ran in its sandbox, as the Worker logged it."""
    found = re.findall(r"run ended \S+ \(exit \S+\) in ([0-9.]+) s", worker_log.read_text())
    return float(found[-1]) if found else None


def overlap(env: Environment, alice: User, bob: User, rows: int) -> list[Figure]:
    label = f"{rows // 1_000_000}M"
    say(f"big data: a {label} x {label} hashed-email overlap in {RUNTIME}")
    python = resolve_runtime(RUNTIME).interpreter
    data = env.root / "data" / f"hashes-{label}"
    shared = int(rows * SHARED)
    started = time.perf_counter()
    generate(python, data / "a", 0, rows)
    generate(python, data / "b", rows - shared, 2 * rows - shared)
    generate_s = time.perf_counter() - started
    input_bytes = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    say(f"  generated {input_bytes / 1e9:.1f} GB in {generate_s:.0f} s")
    name = f"hashes-{label.lower()}"
    memory_mib = (MEMORY_GIB + 4) << 10
    spec = env.spec(name, "hashed_overlap", alice, {"input_1": alice, "input_2": bob},
                    {"output_1": alice, "output_2": bob}, parameters={"memory_gib": MEMORY_GIB},
                    memory_mib=memory_mib, runtime=RUNTIME, disk_mib=8192)  # fmt: skip
    env.deploy(spec, alice, [bob])

    e2e_started = time.perf_counter()
    alice.client.upload(name, "input_1", data / "a")
    bob.client.upload(name, "input_2", data / "b")
    uploads_s = time.perf_counter() - e2e_started
    run_started = time.perf_counter()
    ended = alice.client.run(name, wait=True, poll_s=0.2)  # the Worker's signed status
    run_s = time.perf_counter() - run_started
    if not ended.succeeded:
        raise RuntimeError(f"the overlap: {ended.summary()}")
    down_started = time.perf_counter()
    result_a = alice.client.download(name, "output_1", data / "out-a")
    bob.client.download(name, "output_2", data / "out-b")
    downloads_s = time.perf_counter() - down_started
    e2e_s = time.perf_counter() - e2e_started
    outcome = json.loads((result_a.directory / "overlap.json").read_text())
    if outcome != {"input_1": rows, "input_2": rows, "shared": shared}:
        raise RuntimeError(f"the clean room found {outcome}, not {shared} shared")
    worker_rss = peak_rss(env.worker_pid(name))
    controller_rss = peak_rss(env.compute_pid)
    room_dir = env.stack.room_directory(str(alice.profile.config.project), name)
    in_sandbox_s = function_seconds(room_dir / "worker.log")
    alice.client.delete(name)

    say(f"  in the Worker {run_s:.1f} s (the function {in_sandbox_s} s); direct run")
    direct_s, direct_result = direct(python, data, data / "direct")
    if direct_result != outcome:
        raise RuntimeError("the direct run and the clean room disagree")
    shutil.rmtree(data, ignore_errors=True)
    work = f"{label} x {label} hashes"
    size = {"rows_per_party": rows, "shared": shared, "input_bytes": input_bytes}
    return [
        Figure(f"bigdata_run_{label.lower()}", "6 big data", "run in Worker", run_s, "s",
               direct_s, "same query, same DuckDB, run directly", work, size,
               Target("<=", 1.2),
               {"function_in_sandbox_s": in_sandbox_s,
                "note": "run: POST run until done (includes decrypting both inputs from the "
                "sealed store onto the run's disk); function_in_sandbox_s: the function "
                "alone, as the Worker logged it"}),
        Figure(f"bigdata_e2e_{label.lower()}", "6 big data", "end-to-end", e2e_s, "s",
               300.0, "5 minutes", work, size, Target("<=", 1.0),
               {"uploads_s": uploads_s, "run_s": run_s, "downloads_s": downloads_s,
                "generate_inputs_s": generate_s}),
        Figure(f"bigdata_controller_rss_{label.lower()}", "6 big data", "Controller peak RSS",
               controller_rss / (1 << 20), "MiB", 256.0, "256 MiB", work, size,
               Target("<=", 1.0)),
        Figure(f"bigdata_worker_rss_{label.lower()}", "6 big data", "Worker peak RSS",
               worker_rss / (1 << 20), "MiB", 256.0, "256 MiB (not the function)", work, size,
               Target("<=", 1.0)),
    ]  # fmt: skip
