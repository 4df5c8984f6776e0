"""What a Worker does not load until it needs it.

A function room's Worker does not load the SQL rooms' query checker and privacy:
sqlglot and OpenDP were a third of every Worker's start (``python -X importtime``);
a Worker imports them only when it becomes a SQL room. That a SQL room still gets
them is what the SQL end-to-end tests show (tests/sql).

A Worker in a real enclave (``--tee gramine``) does not load the simulated TEE
(``cleanroom.insecure``): only the simulated backend's start imports it.
"""

from __future__ import annotations

import subprocess
import sys

SQL_ONLY = ("sqlglot", "opendp", "cleanroom.enclave.sqlroom", "cleanroom.sql.rules")


def loaded_by_the_worker_service(prefixes: tuple[str, ...]) -> str:
    """The modules starting with one of ``prefixes`` that importing the Worker's
    service loads, in a fresh interpreter."""
    probe = (
        "import sys, cleanroom.enclave.worker_service\n"
        f"print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_worker_service_loads_no_sql_machinery() -> None:
    loaded = loaded_by_the_worker_service(SQL_ONLY)
    assert loaded == "[]", f"a function room's Worker imported {loaded}"


def test_the_worker_service_loads_no_simulated_tee() -> None:
    loaded = loaded_by_the_worker_service(("cleanroom.insecure",))
    assert loaded == "[]", f"the Worker imported the simulation before choosing it: {loaded}"
