"""A function room's Worker does not load the SQL rooms' query checker and privacy.

sqlglot and OpenDP were a third of every Worker's start (``python -X importtime``);
a Worker imports them only when it becomes a SQL room. That a SQL room still gets
them is what the SQL end-to-end tests show (tests/sql).
"""

from __future__ import annotations

import subprocess
import sys

SQL_ONLY = ("sqlglot", "opendp", "cleanroom.enclave.sqlroom", "cleanroom.sql.rules")


def test_the_worker_service_loads_no_sql_machinery() -> None:
    probe = (
        "import sys, cleanroom.enclave.worker_service\n"
        f"print(sorted(m for m in {SQL_ONLY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"a function room's Worker imported {loaded}"
