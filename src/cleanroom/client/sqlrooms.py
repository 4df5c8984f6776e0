"""The user's side of a SQL room: queries, their receipts and results, the budget.

    from cleanroom.client import CleanRoomClient, Profile
    from cleanroom.client.sqlrooms import budget, query

    client = CleanRoomClient(Profile.load("alice"))
    result = query(client, "overlap", name="by_segment", parameters={"skip": "none"},
                   target=Path("by-segment"))
    print(result.detail["rows"], result.receipt["privacy"])
    print(budget(client, "overlap"))
    save_receipt(client, "overlap", result.run, Path("run-7"))  # for an auditor, offline

A query goes to the Worker encrypted under a run session (the Controller can
neither read nor swap it); its receipt is checked under the attested Worker key,
for the approved spec and this run; its detail (the query's text digest and
parameters, the rows released and suppressed) comes back sealed under the same
session and must be the one the receipt commits to; and the result is written only
if its manifest is the one the receipt signed. A run's receipt is saved for a third
party as a function room's is (:mod:`cleanroom.client.audit`): by its runner with
the detail (``query(..., save=DIR)``), by any other party without it.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cleanroom.client.compute import ComputeClient
from cleanroom.client.errors import ServerError, UntrustedAnswerError
from cleanroom.client.manager import Room
from cleanroom.client.rooms import (
    Attestation,
    BadArgumentError,
    CleanRoomClient,
    Progress,
    RoomKindError,
    SessionClosedError,
    TransferError,
    UnknownObjectError,
    VerifiedReceipt,
    _known,
)
from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import b64u, canonical, from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.handshake import SessionKeys
from cleanroom.protocol.keys import load_spki
from cleanroom.protocol.query_receipt import (
    QUERY_RECORD,
    check_detail,
    check_query,
    check_result,
    open_detail,
    open_refusal,
    query_request,
    query_sha256,
    verify_budget,
    verify_query_receipt,
)
from cleanroom.protocol.records import RecordSender
from cleanroom.protocol.spec import DownloadPurpose, RunPurpose, WorkSpec
from cleanroom.protocol.sql import SpecRuleError, SqlSpec, check_parameters
from cleanroom.protocol.text import shown

POLL_S = 0.3


@dataclass(frozen=True)
class QueryResult:
    run: int
    receipt: dict[str, Any]  # verified
    detail: dict[str, Any] | None  # opened, the one the receipt commits to (runner only)
    directory: Path | None  # where the result was written (the recipient only)
    files: dict[str, int]


def query(
    client: CleanRoomClient,
    room_name: str,
    *,
    name: str | None = None,
    sql: str | None = None,
    parameters: dict[str, Any] | None = None,
    epsilon: float | None = None,
    target: Path | None = None,
    save: Path | None = None,
    timeout_s: float = 3600.0,
) -> QueryResult:
    """Run a named query (``name``, ``parameters``) or an ad-hoc one (``sql``), wait for
    its signed receipt, and, with ``target``, download its result (recipient only);
    with ``save``, save the receipt with its detail for a third party (a new or empty
    directory, :class:`~cleanroom.client.audit.SavedReceipt`)."""
    if (name is None) == (sql is None):
        raise MessageFormatError("query", "a query name or SQL text", "both or neither", "which?")
    # Before the query runs (and spends ε), not after.
    if target is not None:
        _check_target(target)
    if save is not None:
        _check_target(save, "save-directory")
    room, spec = client.approved(room_name)
    if spec.sql is None:
        raise RoomKindError(
            "runtime",
            "a SQL room",
            spec.runtime,
            f"{room_name} runs a function, not SQL queries: only a SQL room takes a query",
            f"`{client.profile.command(f'run {room_name}')}` runs its function",
        )
    _check_query(spec.sql, room_name, name, parameters)
    if target is not None:
        _refuse_target_of_another(client, spec, room_name, name, target)
    client.permitted(room_name, spec, RunPurpose(op="run"))
    with client._compute(room) as compute:
        attestation, keys = client._open(compute, room, spec, RunPurpose(op="run"))
        request = query_request(name=name, parameters=parameters, sql=sql, epsilon=epsilon)
        frame = RecordSender(keys.client_to_worker, keys.session_id).seal(
            QUERY_RECORD, canonical(request), final=True
        )
        try:
            run = compute.query(room.name, keys.session_id, frame).get("run")
            if type(run) is not int or run < 1:
                raise TransferError("run-number", "a run number", run, "the Worker named no run")
        except (ServerError, CheckFailed) as error:
            run = _settled(client, compute, attestation, keys, error, room_name)
        deadline = time.monotonic() + timeout_s
        try:
            receipt, signature, detail = _finished(
                client, compute, attestation, keys, run, deadline
            )
        except (CheckFailed, ServerError) as error:
            # The run number is the Controller's word too: another run's (whose genuine
            # receipt then has a detail that does not open under this session) is asked
            # about as well, so that the query that did run is not asked again; and a
            # receipt withheld is not taken as a query that did not run.
            fated = _fated(client, compute, attestation, keys, error, room_name)
            try:
                if fated == run:
                    raise error
                run = fated
                receipt, signature, detail = _finished(
                    client, compute, attestation, keys, run, deadline
                )
            except (CheckFailed, ServerError) as failure:
                raise UntrustedAnswerError(
                    "query-receipt",
                    f"query run {run}'s receipt, verified",
                    str(failure),
                    f"the query ran, as run {run} (the Worker says, sealed to you), but its "
                    "receipt could not be had or checked",
                    f"`{client.profile.command(f'receipt {room_name} --run {run}')}` fetches "
                    "it again: do not ask the query again",
                ) from None
        named = spec.sql.queries.get(name) if name is not None else None
        check_query(
            receipt, detail, name=name, parameters=parameters or {},
            sha256=query_sha256(named.text if named is not None else sql or ""),
        )  # fmt: skip
        destination = (
            named.output
            if named is not None
            else spec.sql.adhoc.output
            if (spec.sql.adhoc is not None)
            else None
        )
        if receipt["output"]["id"] != destination:
            raise TransferError(
                "receipt-outputs", destination, receipt["output"]["id"], "another output"
            )
        client._remember_detail(room.name, spec.work_id, detail)
        if save is not None:
            client._saved(VerifiedReceipt(receipt, attestation, signature), detail).write(save)
        if target is None or receipt["status"] != "succeeded":
            return QueryResult(run, receipt, detail, None, {})
        output_id = receipt["output"]["id"]
        if spec.outputs[output_id] != client.profile.user_id:
            return QueryResult(run, receipt, detail, None, {})
        _check_target(target)
        keys = client._next_session(
            compute, attestation, DownloadPurpose(op="download", output=output_id, run=run)
        )
        files = client._download_checked(
            compute, room.name, keys, output_id, receipt["output"]["sha256"], target, None
        )
    return QueryResult(run, receipt, detail, target, files)


def _refuse_target_of_another(
    client: CleanRoomClient, spec: WorkSpec, room_name: str, name: str | None, target: Path
) -> None:
    """A ``target`` for a result another user receives, refused before the query runs
    (and spends ε): the query ran, its receipt was shown, and nothing said that nothing
    was written there."""
    assert spec.sql is not None, "a SQL room"
    named = spec.sql.queries.get(name) if name is not None else None
    adhoc = spec.sql.adhoc.output if spec.sql.adhoc is not None else None
    output = named.output if named is not None else adhoc
    if output is None or spec.outputs.get(output) == client.profile.user_id:
        return  # no such query: the Worker's refusal names it
    raise UnknownObjectError(
        "output-recipient",
        client.profile.user_id,
        spec.outputs.get(output),
        f"--out {shown(str(target))}: the result of "
        f"{'query ' + name if name else 'an ad-hoc query'} "
        f"goes to {output}, which another user receives: run it without --out (its "
        f"recipient downloads it: cleanroom data cp {room_name}:{output} DIR --run N)",
    )


def download_result(
    client: CleanRoomClient,
    room_name: str,
    output_id: str,
    run: int,
    target: Path,
    *,
    progress: Progress | None = None,
) -> QueryResult:
    """Download query run ``run``'s result into ``target`` (new or empty), as the
    recipient of ``output_id``: the runner who did not ask for it at once, or a
    recipient who is not the runner. It is checked against the run's signed receipt
    (signed by the Worker attested for this session, for the approved spec and this
    run, its output ``output_id``) before it appears in ``target``. The run's detail
    is sealed to its runner: ``detail`` is None here."""
    _check_run(run)
    _check_target(target)
    room, spec = _sql_room(client, room_name)
    _known(output_id, spec.outputs, "output", room_name)
    purpose = DownloadPurpose(op="download", output=output_id, run=run)
    client.permitted(room_name, spec, purpose)
    with client._compute(room) as compute:
        attestation, keys = client._open(compute, room, spec, purpose)
        document, signature, _sealed = _run_receipt(compute, attestation, run)
        receipt = _verified(client, attestation, run, document, signature)
        recorded = check_result(receipt, output_id)
        files = client._download_checked(
            compute, room.name, keys, output_id, recorded, target, progress
        )
    return QueryResult(run, receipt, None, target, files)


def receipt(client: CleanRoomClient, room_name: str, run: int) -> VerifiedReceipt:
    """Query run ``run``'s receipt, signed by the Worker attested just now, for the
    approved spec and this run (each party's own inputs exactly as it sent them). Its
    detail is sealed to the runner, who had it with :func:`query`."""
    _check_run(run)
    room, spec = _sql_room(client, room_name)
    with client._compute(room) as compute:
        attestation = client._attest(compute, room, spec)
        document, signature, _sealed = _run_receipt(compute, attestation, run)
    verified = _verified(client, attestation, run, document, signature)
    return VerifiedReceipt(verified, attestation, signature)


def save_receipt(
    client: CleanRoomClient, room_name: str, run: int, directory: Path
) -> tuple[VerifiedReceipt, Path]:
    """Query run ``run``'s receipt, verified as :func:`receipt` does, saved into
    ``directory`` (new or empty) with the spec, the claims, the quote and its
    collateral, for anyone to check offline. With its detail where this profile ran
    the query (:func:`query` kept it) and the detail is the one the receipt commits
    to; without it otherwise (``SavedReceipt.detail`` says which)."""
    _check_target(directory, "save-directory")
    verified = receipt(client, room_name, run)
    spec = verified.attestation.spec
    kept = client._own_detail(verified.attestation.room.name, spec.work_id, run)
    detail = None
    if kept is not None:
        try:
            detail = check_detail(canonical(kept), verified.receipt)
        except CheckFailed:  # a run of the same number on an earlier Worker of this Work-ID
            detail = None
    return verified, client._saved(verified, detail).write(directory)


def _check_query(
    sql: SqlSpec, room_name: str, name: str | None, parameters: dict[str, Any] | None
) -> None:
    """A named query the approved spec's ``sql`` has, with a value of its declared type
    for each of its parameters, or an ad-hoc query with none; else unusable input (exit
    code 2), before anything is sent. The Worker checks the same of the same spec (and
    its refusal was a refused query, exit code 1, after a session and a round trip)."""
    if name is None:
        if parameters:
            raise BadArgumentError(
                "sql-parameter", "no parameters", sorted(parameters),
                f"an ad-hoc query takes no parameters, got {', '.join(sorted(parameters))}: "
                "--param is for a named query (--name)",
            )  # fmt: skip
        return
    if name not in sql.queries:
        listed = ", ".join(sorted(sql.queries)) or "none"
        raise UnknownObjectError(
            "sql-query", f"one of {listed}", name,
            f"no query {name} in clean room {room_name} (it has {listed})",
        )  # fmt: skip
    query = sql.queries[name]
    try:
        check_parameters(query, name, parameters or {})
    except SpecRuleError as error:  # the query's declared types, and what was given
        typed = {key: type(value).__name__ for key, value in (parameters or {}).items()}
        raise BadArgumentError(
            "sql-parameter",
            dict(query.parameters),
            typed,
            str(error).removeprefix("sql-parameter: "),
            'KEY=VALUE is typed: 42, 0.5, true, null, else text; "…" forces text '
            "(--param 'zip=\"12345\"')",
        ) from None


def _run_receipt(
    compute: ComputeClient, attestation: Attestation, run: int
) -> tuple[Any, bytes, bytes]:
    """Query run ``run``'s receipt as relayed; a run the attested Worker signs the room
    has not had is unusable input (``run-number``, exit code 2).

    The Worker's "no such run" comes as the Controller relays it, words anyone on the
    way could write: taken alone it stays a refusal (exit code 1). Only the Worker's
    own signed count of runs, fresh for a nonce of ours (its budget statement), says
    that the number was never a run of this Worker."""
    try:
        return compute.run_receipt(attestation.room.name, run)
    except ServerError as error:
        if error.check != "run-state":
            raise
        runs = _signed_runs(compute, attestation)
        if runs is None or run <= runs:
            raise
        had = f"1 to {runs}" if runs else "none: no query has run"
        raise BadArgumentError(
            "run-number",
            f"a query run of this room ({had})",
            run,
            f"no such run {run}: the attested Worker signs that {attestation.room.name} has "
            f"had {runs} query run{'' if runs == 1 else 's'}",
        ) from None


def _signed_runs(compute: ComputeClient, attestation: Attestation) -> int | None:
    """How many query runs the attested Worker signs its room has had, fresh for a new
    nonce; None when it does not say (then nothing is concluded from it)."""
    nonce = b64u(secrets.token_bytes(24))
    try:
        document, signature = compute.budget(attestation.room.name, nonce)
        statement = verify_budget(
            document, signature, spec=attestation.spec, nonce=nonce,
            worker_key=load_spki(attestation.worker.worker_key_spki, "worker_key"),
        )  # fmt: skip
    except (ServerError, CheckFailed):
        return None
    runs = statement["runs"]
    return runs if type(runs) is int and runs >= 0 else None


def _check_run(run: object) -> None:
    if type(run) is not int or run < 1:
        raise MessageFormatError("run-number", "a query run's number (1, 2, ...)", run, "bad run")


def _sql_room(client: CleanRoomClient, room_name: str) -> tuple[Room, WorkSpec]:
    """The approved room and spec, refused unless it is a SQL room (``runtime``)."""
    room, spec = client.approved(room_name)
    if spec.sql is None:
        raise RoomKindError(
            "runtime",
            "a SQL room",
            spec.runtime,
            f"{room_name} runs a function, which has one run: no run number (--run) to give",
        )
    return room, spec


def _verified(
    client: CleanRoomClient, attestation: Attestation, run: int, document: Any, signature: bytes
) -> dict[str, Any]:
    """Query run ``run``'s receipt as relayed, verified under the Worker key ``attestation``
    names, for its approved spec, with this party's own inputs exactly as it sent them."""
    room, spec = attestation.room, attestation.spec
    return verify_query_receipt(
        document, signature, spec=spec, run=run,
        worker_key=load_spki(attestation.worker.worker_key_spki, "worker_key"),
        own_inputs=client._own_uploads(room.name, spec.work_id),
    )  # fmt: skip


def _finished(
    client: CleanRoomClient,
    compute: ComputeClient,
    attestation: Attestation,
    keys: SessionKeys,
    run: int,
    deadline: float,
) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """Query run ``run``'s receipt, once it ended, verified, and its detail, which opens
    only under the run session ``keys`` that sent the query."""
    while True:
        try:
            document, signature, sealed = compute.run_receipt(attestation.room.name, run)
            break
        except ServerError as error:
            # Only "not finished yet" is worth waiting for; a refusal is the answer.
            if error.check != "run-state" or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
    receipt = _verified(client, attestation, run, document, signature)
    return receipt, signature, open_detail(keys, sealed, receipt)


def _settled(
    client: CleanRoomClient,
    compute: ComputeClient,
    attestation: Attestation,
    keys: SessionKeys,
    answer: ServerError | CheckFailed,
    room_name: str,
) -> int:
    """The run of the query this run session sent, whose answer was ``answer``.

    The Worker's refusal of the query, opened: its facts quote the query, so the Worker
    seals them to this run session (``query-refused`` in the clear). Any other answer
    (a refusal in the clear, a 502, a cut, a bad answer) is the Controller's word: it may
    have relayed the query all the same, and the query run and spent its ε while the
    runner, told it was refused, asked again (h13's red team). So the client asks the
    Worker what became of the session: the query's run (its receipt and detail then
    checked as ever), or ``fate-closed`` (it did not run, and never will: asking again
    is safe); ``query-unconfirmed`` when that answer cannot be had either."""
    sealed = answer.problem.get("sealed") if isinstance(answer, ServerError) else None
    if isinstance(answer, ServerError) and answer.check == "query-refused":
        try:
            refusal = open_refusal(keys, from_b64u(sealed, "sealed refusal"))
        except CheckFailed:  # not the Worker's: as unconfirmed as any other answer
            refusal = None
        if refusal is not None:
            raise refusal from None
    return _fated(client, compute, attestation, keys, answer, room_name)


def _fated(
    client: CleanRoomClient,
    compute: ComputeClient,
    attestation: Attestation,
    keys: SessionKeys,
    answer: ServerError | CheckFailed,
    room_name: str,
) -> int:
    """The run the Worker says the query of run session ``keys`` is, whose answer
    ``answer`` cannot be confirmed; ``fate-closed`` if it ran none."""
    fate = client._settle(compute, attestation, keys.session_id, answer, room_name)
    if fate.ran and fate.run is not None:
        return fate.run
    raise SessionClosedError(
        "fate-closed",
        "a query run",
        "no run, and none from this query",
        f"the query did not run (the compute server answered: {answer}); the Worker says, "
        "sealed to you, that it never will, and spent no ε on it",
        "asking again is safe",
    ) from None


def _check_target(target: Path, check: str = "output-directory") -> None:
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise MessageFormatError(check, "a new or empty directory", str(target), "not empty")


def budget(client: CleanRoomClient, room_name: str) -> dict[str, Any]:
    """Every differential privacy owner's ε spent, left and total, signed by the attested
    Worker for a fresh nonce (a replayed or other room's statement is refused)."""
    room, spec = client.approved(room_name)
    if spec.sql is None:
        raise RoomKindError(
            "runtime",
            "a SQL room",
            spec.runtime,
            f"{room_name} runs a function: it has no privacy budget, only a SQL room has one",
        )
    with client._compute(room) as compute:
        attestation = client._attest(compute, room, spec)
        nonce = b64u(secrets.token_bytes(24))
        document, signature = compute.budget(room.name, nonce)
        return verify_budget(
            document, signature, spec=spec, nonce=nonce,
            worker_key=load_spki(attestation.worker.worker_key_spki, "worker_key"),
        )  # fmt: skip


__all__ = ["QueryResult", "budget", "download_result", "query"]
