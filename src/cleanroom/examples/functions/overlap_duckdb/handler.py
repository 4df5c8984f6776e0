"""How many customers two parties share, in DuckDB SQL.

Inputs (CSV files, any name ending in ``.csv``, with an ``email`` column):
``inputs/input_1/`` and ``inputs/input_2/``. Emails are matched after trimming and
lower-casing, by their SHA-256. Every output receives ``overlap.json``:
``{"input_1": distinct customers, "input_2": ..., "shared": ...}``.

It needs DuckDB: the data runtime (``python3.11-data``) has it.
"""

import json
import os

import duckdb

QUERY = """
WITH
  first AS (SELECT DISTINCT sha256(lower(trim(email))) AS customer
            FROM read_csv($first, header = true, all_varchar = true)),
  second AS (SELECT DISTINCT sha256(lower(trim(email))) AS customer
             FROM read_csv($second, header = true, all_varchar = true))
SELECT (SELECT count(*) FROM first) AS input_1,
       (SELECT count(*) FROM second) AS input_2,
       (SELECT count(*) FROM first JOIN second USING (customer)) AS shared
"""


def run():
    work = os.environ.get("WORK_DIR", "/work")
    connection = duckdb.connect(config={"threads": os.cpu_count() or 1})
    row = connection.execute(
        QUERY,
        {"first": f"{work}/inputs/input_1/*.csv", "second": f"{work}/inputs/input_2/*.csv"},
    ).fetchone()
    result = dict(zip(("input_1", "input_2", "shared"), row, strict=True))
    for output_id in sorted(os.listdir(f"{work}/outputs")):
        with open(f"{work}/outputs/{output_id}/overlap.json", "w") as handle:
            json.dump(result, handle)
