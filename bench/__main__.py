"""``python -m bench [--quick] [--json PATH] [--only FIGURES] [--keep]``

Runs the benchmark suite of issue 5 on a LocalStack in a temporary directory,
prints the table (Markdown) on stdout and writes every figure as JSON. It reports;
it never fails on a timing. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bigdata
from bench import figures as F
from bench.common import MIB, Figure, table
from bench.env import Environment
from bench.startup import startup

ALL = ("startup", "sessions", "transfers", "compute", "cold", "concurrency", "bigdata")

SIZES = {
    "full": {"startup": 30, "sessions": 200, "transfer": [64 * MIB, 1 << 30], "memory": 1 << 30,
             "rows": [1_000_000, 10_000_000], "cold": 10, "rooms": 20, "room_rows": 10_000,
             "bigdata": 100_000_000},
    "quick": {"startup": 10, "sessions": 50, "transfer": [64 * MIB], "memory": 64 * MIB,
              "rows": [100_000], "cold": 3, "rooms": 4, "room_rows": 10_000,
              "bigdata": 1_000_000},
}  # fmt: skip


def machine() -> dict[str, Any]:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(  # noqa: S603 - fixed tools: lscpu, free, git
                argv, capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError:
            return ""

    lscpu = {}
    for line in run(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor",
                           "L3 cache"}:  # fmt: skip
            lscpu[key.strip()] = value.strip()
    memory = run(["free", "-m"]).splitlines()
    import cleanroom

    source = Path(cleanroom.__file__).resolve().parent
    commit = run(["git", "-C", str(source), "rev-parse", "HEAD"]).strip() or None
    snapshot = source.parents[1] / "COMMIT"  # a `git archive` snapshot (docs/benchmarks.md)
    if commit is None and snapshot.is_file():
        commit = snapshot.read_text().strip() + " (snapshot)"
    dirty = run(["git", "-C", str(source), "status", "--porcelain", "--", str(source)]).strip()
    return {
        "cleanroom_source": str(source),
        "git_commit": commit,
        "git_src_modified_files": len(dirty.splitlines()) if dirty else 0,
        "cpu": lscpu,
        "memory_total_mib": int(memory[1].split()[1]) if len(memory) > 1 else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, about a minute on 2 cores (CI)"
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument(
        "--transfer-mib",
        type=int,
        action="append",
        metavar="MIB",
        help="ingest and egress at this size in MiB instead of the mode's (repeatable); "
        "the memory figures at the largest",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    sizes = dict(SIZES[mode])
    if args.transfer_mib:
        if any(mib <= 0 for mib in args.transfer_mib):
            parser.error("--transfer-mib takes a positive number of MiB")
        sizes["transfer"] = [mib * MIB for mib in args.transfer_mib]
        sizes["memory"] = max(sizes["transfer"])
    only = {item.strip() for item in args.only.split(",") if item.strip()}
    unknown = only - set(ALL)
    if unknown:
        parser.error(f"unknown figures: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="cleanroom-bench-", dir=args.workdir))
    F.say(f"{mode} run in {root}")
    results: list[Figure] = []
    errors: list[str] = []
    env = Environment(root)
    try:
        if "startup" in only:  # first, on a machine not yet busy with the servers
            try:
                results.extend(startup(root, sizes["startup"]))
            except Exception as error:  # noqa: BLE001 - report and go on with the others
                F.say(f"startup FAILED: {type(error).__name__}: {error}")
                errors.append(f"startup: {type(error).__name__}: {error}")
        env.start()
        alice = env.user("alice", "acme")
        bob = env.user("bob", "globex")
        sequential_p99 = float("nan")

        def attempt(name: str, function: Any) -> Any:
            try:
                return function()
            except Exception as error:  # noqa: BLE001 - report and go on with the others
                F.say(f"{name} FAILED: {type(error).__name__}: {error}")
                errors.append(f"{name}: {type(error).__name__}: {error}")
                return None

        if "sessions" in only:
            got = attempt("sessions", lambda: F.session_setup(env, alice, bob, sizes["sessions"]))
            if got:
                results.extend(got[0])
                sequential_p99 = got[1]
        if "transfers" in only:
            results.extend(attempt("transfers", lambda: F.transfers(
                env, alice, sizes["transfer"], sizes["memory"])) or [])  # fmt: skip
        if "compute" in only:
            for rows in sizes["rows"]:
                results.extend(
                    attempt(f"compute {rows}", lambda r=rows: F.compute(env, alice, bob, r)) or []
                )
        if "cold" in only:
            results.extend(
                attempt("cold start", lambda: F.cold_start(env, alice, sizes["cold"])) or []
            )
        if "bigdata" in only:
            results.extend(attempt("big data", lambda: bigdata.overlap(
                env, alice, bob, sizes["bigdata"])) or [])  # fmt: skip
        if "concurrency" in only:
            results.extend(attempt("concurrency", lambda: F.concurrency(
                env, sizes["rooms"], sizes["room_rows"], sequential_p99)) or [])  # fmt: skip
    finally:
        env.close()
        if args.keep:
            F.say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(f"\n## cleanroom benchmarks ({mode}, {elapsed:.0f} s)\n")
    print(table(results))
    if errors:
        print("\nfailed: " + "; ".join(errors))
    if args.json:
        document = {
            "mode": mode,
            "seconds": elapsed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "sizes": sizes,
            "figures": [figure.to_json() for figure in results],
            "errors": errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        F.say(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
