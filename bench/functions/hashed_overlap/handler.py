"""How many hashed customers two parties share: DuckDB over Parquet files of hashes.

Each input holds ``*.parquet`` files with one column ``h`` (a customer's SHA-256, 32
bytes), each party's hashes distinct. Every output receives ``overlap.json``:
``{"input_1": rows, "input_2": rows, "shared": rows of input_1 found in input_2}``.
Parameters: ``memory_gib`` (DuckDB's memory limit; it spills to /tmp past it).
"""

import json
import os
import tempfile

import duckdb

QUERY = """
SELECT (SELECT count(*) FROM read_parquet($first)) AS input_1,
       (SELECT count(*) FROM read_parquet($second)) AS input_2,
       (SELECT count(*) FROM read_parquet($first) a
               SEMI JOIN read_parquet($second) b USING (h)) AS shared
"""


def run():
    work = os.environ.get("WORK_DIR", os.getcwd())
    with open(os.path.join(work, "parameters.json")) as handle:
        parameters = json.load(handle)
    connection = duckdb.connect(
        config={
            "threads": os.cpu_count() or 1,
            "memory_limit": f"{parameters.get('memory_gib', 4)}GB",
            "temp_directory": tempfile.mkdtemp(prefix="duckdb-"),  # the sandbox's own /tmp
        }
    )
    connection.execute("SET enable_progress_bar = false")
    row = connection.execute(
        QUERY,
        {
            "first": os.path.join(work, "inputs", "input_1", "*.parquet"),
            "second": os.path.join(work, "inputs", "input_2", "*.parquet"),
        },
    ).fetchone()
    result = dict(zip(("input_1", "input_2", "shared"), row, strict=True))
    for output_id in sorted(os.listdir(os.path.join(work, "outputs"))):
        with open(os.path.join(work, "outputs", output_id, "overlap.json"), "w") as handle:
            json.dump(result, handle)
