"""The reliability report: every suite records what it measured, here, as it runs.

``record(section, case, facts)`` merges one case into ``$CLEANROOM_RELIABILITY_REPORT``,
else into ``report.json`` in this checkout's own directory of the user's cache
(``~/.cache/cleanroom/reliability/<checkout>-<hash of its path>/``: outside the source
tree, one per checkout); ``python -m tests.reliability.report`` prints it as the
markdown tables pasted into docs/reliability.md. Nothing in the report is
written by hand: a case appears only when its test ran and passed its assertions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import platformdirs

ROOT = Path(__file__).resolve().parents[2]
_CHECKOUT = f"{ROOT.name}-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}"
REPORT = Path(
    os.environ.get("CLEANROOM_RELIABILITY_REPORT")
    or platformdirs.user_cache_path("cleanroom") / "reliability" / _CHECKOUT / "report.json"
)


def record(section: str, case: str, facts: dict[str, Any]) -> None:
    """Add (or replace) one measured case; facts must be JSON."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with (REPORT.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            report = json.loads(REPORT.read_text())
        except (FileNotFoundError, ValueError):
            report = {}
        entry = report.setdefault(section, {}).setdefault(case, {})
        if section.startswith("fuzz") and facts["examples"] < entry.get("examples", 0):
            return  # keep the largest run of each target, all its facts together
        entry.update(facts)
        entry["measured"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


PATHS = "paths and links"


def record_path(surface: str, attempt: str, outcome: str) -> None:
    """One path-traversal or link case, as the test that tried it saw it handled."""
    record(PATHS, f"{surface}: {attempt}", {"outcome": outcome})


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        if {"p50 s", "p99 s"} <= set(value):
            return f"p50 {value['p50 s']} s, p99 {value['p99 s']} s (n={value.get('n')})"
        return "; ".join(f"{k}: {_cell(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for section in sorted(report):
        cases = report[section]
        columns = sorted({k for facts in cases.values() for k in facts} - {"measured"})
        lines += [f"### {section}", "", "| case | " + " | ".join(columns) + " |"]
        lines.append("|---" * (len(columns) + 1) + "|")
        for case in sorted(cases):
            facts = cases[case]
            lines.append(
                f"| {case} | " + " | ".join(_cell(facts.get(c, "")) for c in columns) + " |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else REPORT
    print(markdown(json.loads(path.read_text())))
