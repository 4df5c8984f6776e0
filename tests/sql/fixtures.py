"""A SQL clean room's spec and data, shared by the rule tests and the room tests."""

from __future__ import annotations

import copy
from typing import Any

from cleanroom.protocol.spec import WorkSpec
from cleanroom.sql import engine_function_id
from tests.protocol.fixtures import ALICE_ID, BOB_ID, SPEC_DOCUMENT

SCHEMAS: dict[str, Any] = {
    "input_1": {
        "format": "csv",
        "columns": [
            {"name": "email", "type": "varchar", "nullable": False},
            {"name": "region", "type": "varchar"},
            {"name": "zip", "type": "varchar"},
            {"name": "spend", "type": "double"},
        ],
    },
    "input_2": {
        "format": "csv",
        "columns": [
            {"name": "email", "type": "varchar", "nullable": False},
            {"name": "segment", "type": "varchar"},
        ],
    },
}
AGGREGATION_RULE: dict[str, Any] = {
    "kind": "aggregation",
    "join_columns": ["email"],
    "dimension_columns": ["region", "zip"],
    "aggregate_columns": {"email": ["count", "count_distinct"], "spend": ["sum", "avg"]},
    "threshold": {"column": "email", "minimum": 3},
}
LIST_RULE: dict[str, Any] = {"kind": "list", "join_columns": ["email"], "list_columns": ["segment"]}
DP: dict[str, Any] = {
    "identity": "email",
    "epsilon": 1.0,
    "budget": 2.0,
    "delta": 1e-6,
    "bounds": {"spend": [0.0, 100.0]},
}
BY_SEGMENT = (
    "SELECT a.region, b.segment, COUNT(DISTINCT a.email) AS customers "
    "FROM input_1 a JOIN input_2 b ON a.email = b.email "
    "WHERE a.region <> $skip GROUP BY a.region, b.segment ORDER BY a.region, b.segment"
)


def both_under_dp(identity_2: str = "email", max_contributions: int = 1) -> dict[str, Any]:
    """Both inputs' rules under differential privacy: input_1's identity is ``email``,
    input_2's ``identity_2``."""
    rules = {"input_1": copy.deepcopy(AGGREGATION_RULE), "input_2": copy.deepcopy(AGGREGATION_RULE)}
    rules["input_1"]["dimension_columns"] = ["region"]
    rules["input_2"].update(
        dimension_columns=["segment"], aggregate_columns={"email": ["count", "count_distinct"]}
    )
    rules["input_1"]["differential_privacy"] = {
        **copy.deepcopy(DP),
        "max_contributions": max_contributions,
    }
    rules["input_2"]["differential_privacy"] = {
        **copy.deepcopy(DP), "bounds": {}, "identity": identity_2,
        "max_contributions": max_contributions,
    }  # fmt: skip
    return rules


def sql_document(
    *, dp: bool = False, report_suppressed: bool = False, **changes: Any
) -> dict[str, Any]:
    """The spec of the SQL tests; with ``report_suppressed``, input_1's owner lets the
    runner learn how many groups fell under its threshold (withheld otherwise)."""
    rules = {"input_1": copy.deepcopy(AGGREGATION_RULE), "input_2": copy.deepcopy(LIST_RULE)}
    if dp:
        rules["input_1"]["differential_privacy"] = copy.deepcopy(DP)
    if report_suppressed:
        rules["input_1"]["report_suppressed"] = True
    sql: dict[str, Any] = {
        "schemas": copy.deepcopy(SCHEMAS),
        "rules": rules,
        "queries": {
            "by_segment": {
                "text": BY_SEGMENT,
                "parameters": {"skip": "text"},
                "output": "output_1",
            }
        }
        if not dp
        else {},
        "adhoc": {"runners": [ALICE_ID], "output": "output_1"},
    }
    sql.update(changes)
    return {
        **SPEC_DOCUMENT,
        "runtime": "sql",
        "handler": "handler.run",
        "function": engine_function_id(),
        "inputs": {"input_1": ALICE_ID, "input_2": BOB_ID},
        "outputs": {"output_1": ALICE_ID},
        "runners": [ALICE_ID],
        "sql": sql,
    }


def sql_spec(*, dp: bool = False, report_suppressed: bool = False, **changes: Any) -> WorkSpec:
    return WorkSpec.parse(sql_document(dp=dp, report_suppressed=report_suppressed, **changes))


def alice_csv() -> bytes:
    """40 customers: 30 east, 9 north, and one alone in region "tiny" (zip codes unique)."""
    lines = ["email,region,zip,spend"]
    for n in range(40):
        region = "east" if n < 30 else "north" if n < 39 else "tiny"
        lines.append(f"c{n}@x,{region},{10000 + n},{n % 7 * 10}.5")
    return ("\n".join(lines) + "\n").encode()


def bob_csv() -> bytes:
    """Alice's east customers c0..c29, north c35..c38, the one tiny c39, and 5 others;
    segments alternate retail (odd) and business (even)."""
    lines = ["email,segment"]
    for n in [*range(30), 35, 36, 37, 38, 39, *range(100, 105)]:
        lines.append(f"c{n}@x,{'retail' if n % 2 else 'business'}")
    return ("\n".join(lines) + "\n").encode()
