"""A cross-tabulation of two parties' shared customers, written as the seed product's
functions are: absolute ``/work`` paths, vendored packages, ``app.log`` lines.

Inputs (CSV files, any name ending in ``.csv``):

- ``/work/inputs/input_1/``: party 1, columns ``email,region``;
- ``/work/inputs/input_2/``: party 2, columns ``email,segment``.

Emails are matched after trimming and lower-casing. Parameter
``k`` (an integer >= 1, default 10): a (region, segment) group is released only if at
least ``k`` shared customers are in it. Every output receives ``crosstab.csv``
(``region,segment,customers``) and ``app.log``.

It needs polars: from the data runtime (``python3.11-data``), or vendored into
``packages/`` (``pip install --target packages polars``) for the plain runtime.
"""

import json
import sys

sys.path.append("/work/function/packages")  # the seed product's convention

import polars as pl  # noqa: E402 - after the packages directory is on the path

INPUTS = "/work/inputs"
OUTPUTS = "/work/outputs"
OUTPUT_IDS = ("output_1", "output_2")


def log(message):
    """One line in every output's ``app.log`` (no values from the data, ever)."""
    for output_id in OUTPUT_IDS:
        try:
            with open(f"{OUTPUTS}/{output_id}/app.log", "a") as handle:
                handle.write(message + "\n")
        except FileNotFoundError:
            pass  # the spec has no such output


def customers(input_id, attribute):
    frame = pl.read_csv(f"{INPUTS}/{input_id}/*.csv", columns=["email", attribute])
    return frame.select(
        pl.col("email").str.strip_chars().str.to_lowercase().alias("customer"),
        pl.col(attribute),
    ).unique(subset="customer")


def run():
    with open("/work/parameters.json") as handle:
        k = json.load(handle).get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        log("parameter k must be an integer >= 1")
        raise SystemExit(1)
    first = customers("input_1", "region")
    second = customers("input_2", "segment")
    log(f"read {first.height} and {second.height} distinct customers")
    shared = first.join(second, on="customer", how="inner")
    table = (
        shared.group_by(["region", "segment"])
        .agg(pl.len().alias("customers"))
        .filter(pl.col("customers") >= k)
        .sort(["region", "segment"])
    )
    log(f"{shared.height} shared customers; {table.height} groups of at least {k} released")
    for output_id in OUTPUT_IDS:
        try:
            table.write_csv(f"{OUTPUTS}/{output_id}/crosstab.csv")
        except FileNotFoundError:
            pass
