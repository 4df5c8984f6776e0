"""``cleanroom query`` and ``cleanroom budget``: a SQL room's queries and privacy budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cleanroom.cli.account import failures, verify_command
from cleanroom.cli.common import (
    EXIT_USAGE,
    check_new_directory,
    fail,
    json_output,
    spinner,
    stdout,
)
from cleanroom.cli.room import _client
from cleanroom.client.access import parse_parameters
from cleanroom.client.sqlrooms import budget as fetch_budget
from cleanroom.client.sqlrooms import query as run_query
from cleanroom.protocol.text import shown


def query(
    name: Annotated[str, typer.Argument(help="The SQL clean room.")],
    sql: Annotated[
        str | None,
        typer.Argument(
            help="An ad-hoc query, where the spec lets you send one.", show_default=False
        ),
    ] = None,
    named: Annotated[
        str | None, typer.Option("--name", help="Run the spec's query of this name instead.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="A parameter of the named query, KEY=VALUE (repeatable).", show_default=False
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(
            help="The ε to spend where differential privacy applies (default: the most allowed)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the result here (a new directory). Only its output's recipient may: "
            "anyone else is refused before the query runs (exit 2)."
        ),
    ] = None,
    save_receipt: Annotated[
        Path | None,
        typer.Option(
            help="Save the signed receipt with its detail, the spec, the quote and its "
            "collateral into this new or empty directory, for a third party to check "
            "offline (cleanroom receipt verify DIR). Only you can: the detail is sealed to you.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the signed receipt and its detail as JSON.")
    ] = False,
) -> None:
    """Run a query under every data owner's rules, and verify its signed receipt.

    The query is checked in the Worker against each owner's analysis rule; a shape
    a rule forbids is refused with the rule named, rows under a threshold are
    suppressed (and counted where every owner reports it), and ε is spent where
    differential privacy applies.
    The counts, the query's digest and its parameters come back sealed to you (the
    operator relays the receipt and sees none of them). A result not written with
    --out is downloaded later: cleanroom data cp ROOM:OUTPUT DIR --run N. With
    --save-receipt DIR the receipt and its detail are saved for an auditor.
    Exit 0: ran; 1: refused or failed; 2: unusable input.
    """
    if (sql is None) == (named is None):
        fail("give an ad-hoc query or --name NAME, not both", EXIT_USAGE)
    for option, directory in (("--out ", out), ("--save-receipt ", save_receipt)):
        if directory is not None:  # before the query runs (and spends ε)
            check_new_directory(directory, option)
    parameters: dict[str, Any] = dict(parse_parameters(param or []))
    client = _client()
    with failures(), spinner(f"query on {name}: waiting for its receipt…"):
        result = run_query(
            client, name, name=named, sql=sql, parameters=parameters or None,
            epsilon=epsilon, target=out, save=save_receipt,
        )  # fmt: skip
    receipt, detail = result.receipt, result.detail
    assert detail is not None  # the runner's, always
    if as_json or json_output():
        stdout.out(json.dumps({"receipt": receipt, "detail": detail}, indent=2))
    else:
        stdout.print(f"query run {result.run} of {name}: {shown(receipt['status'])}", markup=False)
        stdout.print(f"  query     {shown(receipt['query']['name'] or 'ad hoc')} "
                     f"sha256 {shown(detail['query']['sha256'])}", markup=False)  # fmt: skip
        for rule in receipt["rules"]:
            stdout.print(f"  rule      {shown(rule)}", markup=False)
        rows = detail["rows"]
        stdout.print(f"  rows      {rows['released']} released, "
                     f"{'not reported' if rows['suppressed'] is None else rows['suppressed']} "
                     "suppressed", markup=False)  # fmt: skip
        for input_id, entry in receipt["privacy"].items():
            left = f"{entry['left']:g} left of {entry['budget']:g}"
            stdout.print(
                f"  ε         {shown(input_id)}: spent {entry['spent']:g}, {left}", markup=False
            )
        if result.directory is not None:
            stdout.print(f"  result    {shown(str(result.directory))}", markup=False)
        elif receipt["status"] == "succeeded":
            later = f"data cp {name}:{receipt['output']['id']} DIR --run {result.run}"
            stdout.print(
                f"  result    not downloaded (no --out); its recipient runs: "
                f"{shown(client.profile.command(later))}",
                markup=False,
            )
        if save_receipt is not None:
            check = verify_command(client.profile, save_receipt)
            stdout.print(
                f"  saved     {shown(str(save_receipt))} (check it with: {check})", markup=False
            )
    if receipt["status"] != "succeeded":
        fail(f"query run {result.run} of {name} ended {shown(receipt['status'])}")


def budget(
    name: Annotated[str, typer.Argument(help="The SQL clean room.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the statement as JSON.")] = False,
) -> None:
    """Each data owner's privacy budget (ε spent, left, total), signed by the attested Worker."""
    with failures():
        statement = fetch_budget(_client(), name)
    if as_json or json_output():
        stdout.out(json.dumps(statement, indent=2))
        return
    stdout.print(f"privacy budget of {name} after {statement['runs']} queries", markup=False)
    if not statement["privacy"]:
        stdout.print("  no input is under differential privacy", markup=False)
    for input_id, entry in statement["privacy"].items():
        stdout.print(f"  {shown(input_id)}: spent {entry['spent']:g}, {entry['left']:g} left of "
                     f"{entry['budget']:g}", markup=False)  # fmt: skip
