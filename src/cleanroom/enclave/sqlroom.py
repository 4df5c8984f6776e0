"""A SQL clean room's data plane: schema-checked uploads, queries under every owner's
rules, differential privacy with a sealed budget, one signed receipt per query.

What runs where (docs/privacy.md, docs/threat-model.md):

- the Worker (trusted, measured) parses and checks every query against every
  owner's analysis rule (:mod:`cleanroom.sql.rules`), charges the privacy budget
  in its sealed ledger before the query runs (:mod:`cleanroom.enclave.budget`),
  adds OpenDP's noise (:mod:`cleanroom.sql.privacy`) and signs the receipt;
- DuckDB runs in the function sandbox, as the room's own uid in the data runtime,
  through the engine the spec's function ID names (``cleanroom/sql/engine``): a
  DuckDB bug that a query reaches is confined like a hostile function.

After the first query the inputs are frozen: every query of the room, and so its
budget, is about the same data.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cleanroom.enclave.budget import BudgetLedger
from cleanroom.enclave.errors import (
    RunError,
    SchemaRefusal,
    SealedRefusal,
    UploadError,
    log_failure,
)
from cleanroom.enclave.room import CleanRoom
from cleanroom.enclave.store import StoredObject, wipe
from cleanroom.enclave.supervisor import Limits
from cleanroom.enclave.uploads import MANIFEST_NAME, CompletedInput
from cleanroom.errors import CheckFailed
from cleanroom.protocol.encoding import canonical
from cleanroom.protocol.errors import AccessDenied, MessageFormatError
from cleanroom.protocol.framing import encode_frames
from cleanroom.protocol.handshake import AcceptedHandshake, SessionKeys
from cleanroom.protocol.manifest import output_salt
from cleanroom.protocol.query_receipt import (
    QUERY_RECORD,
    QUERY_REQUEST_TYPE,
    budget_statement,
    query_detail,
    query_receipt,
    seal_detail,
    seal_refusal,
    sign,
)
from cleanroom.protocol.records import RecordReceiver, RecordSender
from cleanroom.protocol.spec import DownloadPurpose, Resources, RunPurpose
from cleanroom.protocol.sql import HIDDEN_PREFIX
from cleanroom.sql.privacy import calibrated
from cleanroom.sql.rules import DpPlan, QueryPlan, check_spec_queries, plan_query

log = logging.getLogger("cleanroom.enclave")
RESULT = "result"  # the engine's one output directory (never sealed as is)
MAX_STATS = 1 << 16
DP_CHUNK_BYTES = 4 << 20  # the engine's groups the Worker releases at once (by the line bound)
MAX_RUNS = 10_000
ENGINE_THREADS = 2  # DuckDB's threads: the spec gives CPU time, not cores
ENGINE_OWN_MIB = 128  # the engine's Python, DuckDB and pyarrow loaded, and its result
ENGINE_LEAST_MIB = 64  # DuckDB's CSV reader takes a block of 30.5 MiB at once
# The sandbox's statuses of a run a limit ended: a query receipt's status, as is.
ENGINE_LIMITS = frozenset({"timeout", "cpu", "memory", "disk", "processes"})


def engine_limits(resources: Resources) -> dict[str, int]:
    """DuckDB's own limits in a run of the engine, from the run's (the sandbox's cgroup
    and tmpfs, which DuckDB does not see: it took the host's memory and cores).

    Its memory: two fifths of what the engine's own process leaves of the run's memory,
    at least 64 MiB (less, and it cannot read a CSV file; a run that small fails
    anyway). The rest holds what DuckDB does not count (the rows Python holds,
    pyarrow's table of the result) and what it spills: the spill goes to the sandbox's
    ``/tmp``, a tmpfs whose pages count against the run's memory too, so spilling holds
    less than DuckDB's in-memory operators do, not nothing. Its spill: at most half of
    the run's disk (``/tmp`` and the outputs share it)."""
    return {
        "memory_mib": max(ENGINE_LEAST_MIB, (resources.memory_mib - ENGINE_OWN_MIB) * 2 // 5),
        "spill_mib": max(1, resources.disk_mib // 2),
        "threads": ENGINE_THREADS,
    }


@dataclass
class SqlRun:
    number: int
    plan: QueryPlan
    by: str
    parameters: dict[str, Any]
    state: str = "running"  # -> done | failed
    detail: str | None = None
    # The limit that ended its engine run (memory, timeout, cpu, disk, processes), as
    # the sandbox reported it: the receipt's status. None: no limit ended it.
    limit: str | None = None
    files: list[StoredObject] = field(default_factory=list)
    receipt: tuple[dict[str, Any], bytes] | None = None
    privacy: dict[str, dict[str, float]] = field(default_factory=dict)
    salt: bytes = field(default_factory=output_salt)  # its output's manifest's
    # The run session's keys, until the detail is sealed to the runner under k_w2c.
    session: SessionKeys | None = None
    detail_salt: bytes = field(default_factory=output_salt)
    sealed_detail: bytes | None = None  # the one Worker -> runner record of that session


class SqlRoom(CleanRoom):
    """A clean room whose runtime is ``sql`` (see the module docstring)."""

    SQL = True

    def _open(self) -> None:
        spec = self.worker.spec
        assert spec.sql is not None  # CleanRoom checked the room's kind
        self.sql = spec.sql
        # A named query that could never run is refused now, before any data moves.
        check_spec_queries(spec)
        self.ledger = BudgetLedger(self._store, spec)
        self.runs: dict[int, SqlRun] = {}
        self.rows: dict[str, int] = {}
        self._checking = threading.Lock()  # queries are checked in turn, beside the room's lock

    # ------------------------------------------------------------- uploads

    def _accept_input(self, completed: CompletedInput) -> dict[str, int]:
        """The upload against its declared schema, by the engine in the sandbox."""
        schema = self.sql.schemas[completed.input_id]
        plan = {
            "mode": "check", "input": completed.input_id, "schema": schema.model_dump(),
            "limits": engine_limits(self.worker.spec.resources),
        }  # fmt: skip
        stats, _files = self._engine(plan, [completed], keep=lambda _name: False)
        refused = stats.get("refused")
        if isinstance(refused, dict):
            # The file by its place among the input's files (sorted by path, as the
            # uploader lists them), whose client names it. The refusal is sealed to the
            # uploader (SchemaRefusal): where the data broke its schema is its own.
            paths = [s.name.split("/", 1)[1] for s in completed.files]
            file = refused.get("file")
            where = {
                "file": paths.index(file) + 1 if file in paths else None,
                "files": len(paths),
                "column": refused.get("column"),
                "row": refused.get("row"),
            }
            raise SchemaRefusal(
                str(refused.get("check", "schema")), refused.get("expected"), where,
                f"{completed.input_id} does not match its schema: {refused.get('message')}"
                f" (file {where['file']} of {len(paths)}, column {where['column']}, "
                f"row {where['row']})",
            )  # fmt: skip
        rows = stats.get("rows")
        if type(rows) is not int or rows < 0:
            raise UploadError("schema", "a row count", rows, "the schema check did not finish")
        self.rows[completed.input_id] = rows
        return {"rows": rows}

    def _accepted_counts(self, input_id: str) -> dict[str, int]:
        rows = self.rows.get(input_id)
        return {} if rows is None else {"rows": rows}

    def _check_collecting(self, input_id: str) -> None:
        if self.runs:
            raise UploadError(
                "run-started", "an upload before the first query", "querying", "inputs are frozen"
            )
        super()._check_collecting(input_id)

    # ------------------------------------------------------------- queries

    def begin_run(self, session_id: str, request: bytes) -> None:
        del session_id, request
        raise RunError("run-state", "a query (SQL room)", "a function run", "send a query")

    def begin_query(self, session_id: str, frame: bytes) -> int:
        """Check the run session, open its encrypted query, check it against every rule,
        charge the budget; the run's number (execute it with :meth:`execute_query`).

        The query is checked outside the room's lock (parsing and checking a long ad-hoc
        query takes seconds, and held every other session of the room, its opening
        included, that long); checks take turns on a lock of their own. What the check
        read of the room's state is read again under its lock before the charge: the
        inputs, the uploads, the budget (the ledger refuses what no longer fits)."""
        with self._lock:
            fresh = self._fresh(session_id)
            if fresh is not None and isinstance(fresh.purpose, RunPurpose):
                # Sealed in this session, before the session is used: a frame the
                # Controller made up is refused (in the clear: its header is all it
                # quotes) and leaves the runner's session for her real query.
                RecordReceiver(fresh.keys.client_to_worker, fresh.keys.session_id).open(frame)
            session, _purpose = self._take(session_id, RunPurpose)
            self._pending[session_id] = session.user_id
        # Read back outside the room's lock (in time the queries charged take): the
        # charge, under it, reads the ledger again and refuses what no longer fits.
        spent = self.ledger.spent()
        try:
            request = self._open_request(session, frame)
            self._check_runner(session, request)
            with self._lock:
                self._check_queryable()
            with self._checking:
                plan = plan_query(
                    self.worker.spec, name=request["query"], text=request["sql"],
                    parameters=request["parameters"], epsilon=request["epsilon"], spent=spent,
                )  # fmt: skip
                if plan.dp is not None:
                    # Its noise, calibrated before ε is charged and the engine reads any
                    # data (from the plan alone): an ε too small to calibrate was charged,
                    # ran, and failed at the release (h29).
                    calibrated(plan.dp)
            with self._lock:
                return self._admit_query(session, request, plan)
        except CheckFailed as refusal:
            # Its facts quote the query (text, parameters): sealed to the runner, as
            # the one Worker -> runner record of this session (no run, no detail).
            raise SealedRefusal(seal_refusal(session.keys, refusal)) from None
        finally:
            self._settled(session_id)

    def _check_runner(self, session: AcceptedHandshake, request: dict[str, Any]) -> None:
        """Whether this session's user may send this query (the spec alone decides)."""
        if request["query"] is not None and session.user_id not in self.worker.spec.runners:
            raise AccessDenied(
                "runner", sorted(self.worker.spec.runners), session.user_id,
                "only a runner may run the spec's queries",
            )  # fmt: skip
        if request["sql"] is not None and (
            self.sql.adhoc is None or session.user_id not in self.sql.adhoc.runners
        ):
            raise AccessDenied(
                "adhoc-runner",
                [] if self.sql.adhoc is None else sorted(self.sql.adhoc.runners),
                session.user_id, "only the spec's ad-hoc runners may send a query of their own",
            )  # fmt: skip

    def _check_queryable(self) -> None:
        """Whether the room takes a query now (the caller holds the room's lock)."""
        self._alive()
        missing = sorted(set(self.worker.spec.inputs) - set(self._inputs))
        if missing:
            raise RunError("inputs-missing", "every input uploaded", missing, "inputs missing")
        if self._uploading:
            raise RunError(
                "uploads-running", "no upload in progress", sorted(self._uploading), "busy"
            )
        if len(self.runs) >= MAX_RUNS:
            raise RunError("run-state", f"at most {MAX_RUNS} queries", len(self.runs), "full")

    def _admit_query(
        self, session: AcceptedHandshake, request: dict[str, Any], plan: QueryPlan
    ) -> int:
        """A checked query, admitted if the room still takes it, and charged (the caller
        holds the room's lock)."""
        self._check_queryable()
        session_id = session.keys.session_id
        # A fate question answered "closed" while this query was being checked.
        self._check_open(session_id)
        if plan.dp is not None:
            self._dp_fits(plan.dp)
        number = len(self.runs) + 1
        run = SqlRun(
            number, plan, session.user_id, dict(request["parameters"]), session=session.keys
        )
        if plan.dp is not None:
            # Charged before the query runs: a failed run has touched the data too. The
            # ledger refuses a charge that no longer fits (another query charged since
            # the check read the budget).
            totals = self.ledger.charge(number, plan.dp.epsilon, sorted(plan.dp.owners))
            run.privacy = {
                i: {"spent": plan.dp.epsilon,
                    "left": self.ledger.left(i, totals),
                    "budget": self.ledger.budgets[i]}
                for i in sorted(plan.dp.owners)
            }  # fmt: skip
        self.runs[number] = run
        self._ran[session_id] = (session.user_id, number)
        self._state = "querying"
        return number

    def _open_request(self, session: AcceptedHandshake, frame: bytes) -> dict[str, Any]:
        receiver = RecordReceiver(session.keys.client_to_worker, session.keys.session_id)
        path, _index, final, data = receiver.open(frame)
        receiver.close()
        if path != QUERY_RECORD or not final:
            raise MessageFormatError("query-request", QUERY_RECORD, path, "not a query request")
        try:
            request = json.loads(data)
        except ValueError as error:
            raise MessageFormatError("query-request", "JSON", "bytes", str(error)) from error
        fields = {"type", "query", "parameters", "sql", "epsilon"}
        if (
            not isinstance(request, dict)
            or set(request) != fields
            or request["type"] != QUERY_REQUEST_TYPE
            or (request["query"] is None) == (request["sql"] is None)
            or not isinstance(request["parameters"], dict)
            or not (request["epsilon"] is None or type(request["epsilon"]) in (int, float))
        ):
            raise MessageFormatError(
                "query-request", QUERY_REQUEST_TYPE, str(request)[:200], "bad query request"
            )
        if request["query"] is not None and not isinstance(request["query"], str):
            raise MessageFormatError("query-request", "a query name", request["query"], "bad name")
        if request["sql"] is not None and not isinstance(request["sql"], str):
            raise MessageFormatError("query-request", "SQL text", request["sql"], "bad sql")
        return request

    def execute_query(self, number: int) -> tuple[dict[str, Any], bytes]:
        """Run a checked query in the engine and release what the rules allow."""
        run = self.runs[number]
        plan = run.plan
        started = int(self._clock())
        engine_plan = {
            "mode": "query",
            "sql": plan.sql,
            "keep": plan.thresholds,
            "groups": plan.groups_sql,
            "count_suppressed": plan.report_suppressed,
            "dp": plan.dp is not None,
            "format": plan.format,
            "inputs": {i: self.sql.schemas[i].model_dump() for i in plan.inputs},
            "limits": engine_limits(self.worker.spec.resources),
        }
        status, released, suppressed = "failed", None, None
        # Exactly the one file this plan makes: exact aggregates (DP) or the result.
        wanted = f"{RESULT}/rows.jsonl" if plan.dp is not None else f"{RESULT}/data.{plan.format}"
        try:
            stats, collected = self._engine(
                engine_plan,
                [self._inputs[i] for i in plan.inputs],
                keep=lambda name: name == wanted,
                into=f"{plan.output}/run-{number}",
                status_out=run,
            )  # fmt: skip
            if run.state == "failed":
                raise RunError("run-ended", "a query that ran", run.detail, str(run.detail))
            if plan.dp is not None:
                rows_file = next(s for s in collected if s.name.endswith("/rows.jsonl"))
                try:
                    stored, released = self._dp_release(plan, rows_file, number)
                finally:
                    self._store.discard(rows_file.name)
                run.files = [stored]
            else:
                run.files = sorted(collected, key=lambda s: s.name)
                released = stats.get("rows")
                # Withheld unless every owner whose threshold applies allowed it, whatever
                # the engine wrote: whether a group fell under a threshold tells whether
                # a person with the WHERE's values is in the data.
                suppressed = stats.get("suppressed") if plan.report_suppressed else None
            status = "succeeded"
            run.state = "done"
        except CheckFailed as error:
            # The run's state is relayed in the clear: a limit that ended the engine says
            # itself (run-ended), any other refusal its check alone. Its message can quote
            # the data ("group 1234 of the engine …": the exact groups before a DP
            # release, which the release's threshold hides) or the query (an aggregate's
            # name), neither of which the relay may read.
            run.state = "failed"
            if error.check != "run-ended":
                run.detail = f"the Worker refused the engine's result ({error.check})"
            for stored in run.files:
                self._store.discard(stored.name)
            run.files = []
        except Exception as error:  # noqa: BLE001 - logged by log_failure
            log_failure(log, f"query {number} failed", error)
            run.state, run.detail = "failed", "the engine failed"
            for stored in run.files:
                self._store.discard(stored.name)
            run.files = []
        detail = query_detail(
            run=number, salt=run.detail_salt, sha256=plan.text_sha256,
            parameters=run.parameters, rows={"released": released, "suppressed": suppressed},
        )  # fmt: skip
        receipt = query_receipt(
            self.worker.spec,
            run=number,
            query={"name": plan.name},
            by=run.by,
            inputs={i: (c.by, c.sha256) for i, c in self._inputs.items()},
            output={
                "id": plan.output,
                "format": "csv" if plan.dp is not None else plan.format,
                "sha256": self._manifest_digest(
                    plan.output, run.salt, self._named(plan.output, run)
                ) if status == "succeeded" else None,
            },
            rules=list(plan.rules),
            detail=detail,
            privacy=run.privacy,
            # A limit that ended the engine names itself (the host saw the run killed
            # anyway); any other failure is "failed", and nothing of the engine's own
            # error (its text can quote a value of the data: "Could not convert string
            # 'retail' to INT32") leaves the sandbox: the engine's log is not kept.
            status=status if run.state == "done" else run.limit or "failed",
            started=started,
            finished=max(started, int(self._clock())),
        )  # fmt: skip
        assert run.session is not None  # begin_query keeps it for exactly this
        run.sealed_detail = seal_detail(run.session, detail)
        run.session = None
        run.receipt = (receipt, self.worker.sign_receipt(receipt))
        return run.receipt

    def _named(self, output_id: str, run: SqlRun) -> list[StoredObject]:
        """The run's files as the recipient sees them: ``<output>/data.csv``."""
        return [
            StoredObject(f"{output_id}/{s.name.rsplit('/', 1)[1]}", s.size, s.sha256)
            for s in run.files
        ]

    def _dp_capacity(self) -> int:
        """The bytes of exact groups a DP query may make: half the run's disk, where the
        engine writes them, and a quarter of its memory, where DuckDB holds them (1
        million groups of one 256-byte key took it 0.76 GiB at its peak: inputs, groups,
        their order), down to a power of two. The Worker reads them chunk by chunk: its
        own memory sets no limit. With the bound's line also a power of two, a refusal is
        a matter of whether an input's rows times max_contributions pass a power of two:
        a spec's disk_mib or memory_mib cannot set the limit at an exact row count."""
        resources = self.worker.spec.resources
        most = min(resources.disk_mib << 19, resources.memory_mib << 18)
        return 1 << (most.bit_length() - 1)

    def _dp_fits(self, dp: DpPlan) -> None:
        """A DP query whose exact groups could outgrow a limit is refused before it runs
        and before any ε is charged, from a bound no data decides beyond its inputs' row
        counts (``DpPlan.most_bytes``): else how many groups a query had, which one
        person can change, decided whether it failed (DP red team 2, F4)."""
        capacity = self._dp_capacity()
        rows = {i: self.rows.get(i) for i in dp.owners}
        missing = sorted(i for i, count in rows.items() if count is None)
        if missing:
            raise RunError("dp-groups", "the row count of every input", missing, "not counted")
        most = dp.most_bytes({i: count for i, count in rows.items() if count is not None})
        if most > capacity:
            line = 1 << max(dp.line_bytes - 1, 0).bit_length()
            raise RunError(
                "dp-groups", f"<= {capacity} bytes of groups, whatever the data",
                f"{line} bytes a group, more than {capacity // line} groups possible",
                "a query under differential privacy may have more groups than the Worker "
                "takes (at most each input's rows times max_contributions): refused before "
                "it runs, no ε spent; group by fewer keys, read fewer aggregates, or give "
                "the room more disk and memory (half of resources.disk_mib and a quarter "
                "of resources.memory_mib, as a power of two, hold the groups)",
            )  # fmt: skip

    def _dp_release(
        self, plan: QueryPlan, rows_file: StoredObject, number: int
    ) -> tuple[StoredObject, int]:
        """The noisy CSV of a DP query, released chunk by chunk as the engine's groups are
        read: the Worker's memory follows a chunk, not the number of groups."""
        assert plan.dp is not None
        releaser = calibrated(plan.dp)  # calibrated and confirmed before any group is read
        name = f"{plan.output}/run-{number}/data.csv"
        target = self._store.create(name)
        released = 0
        try:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(releaser.columns)
            for chunk in self._read_rows(rows_file, plan.dp):
                writer.writerows(rows := releaser.chunk(chunk))
                released += len(rows)
                target.write(text.getvalue().encode())
                text.seek(0)
                text.truncate()
            if not plan.dp.groups and not releaser.candidates:
                writer.writerows(rows := releaser.chunk([]))  # the one total, of no rows
                released += len(rows)
            target.write(text.getvalue().encode())
            stored = target.close()
        except BaseException:
            target.abort()
            self._store.discard(name)
            raise
        self._store.record(stored)
        return stored, released

    def _read_rows(self, stored: StoredObject, dp: DpPlan) -> Iterator[list[dict[str, Any]]]:
        """The engine's exact groups, in chunks of at most DP_CHUNK_BYTES of lines (as the
        line bound counts them; all at once for a query without GROUP BY, of one line)."""
        # Never more than the bound checked before the query ran (else the engine broke it).
        most = min(dp.most_bytes(self.rows), self._dp_capacity())
        if stored.size > most:
            raise RunError(
                "dp-groups", f"<= {most} bytes of groups", stored.size,
                "the engine's exact groups outgrew their bound",
            )  # fmt: skip
        line_bound = 1 << max(dp.line_bytes - 1, 0).bit_length()
        per_chunk = max(1, DP_CHUNK_BYTES // line_bound) if dp.groups else 1 << 62
        order = _GroupOrder(len(dp.groups))
        chunk: list[dict[str, Any]] = []
        pending = b""
        for data in self._store.read(stored.name):
            lines = (pending + data).split(b"\n")
            pending = lines.pop()
            if len(pending) > line_bound:
                raise RunError(
                    "dp-groups", f"lines of <= {line_bound} bytes", "a longer line",
                    "the engine's exact groups outgrew their bound",
                )  # fmt: skip
            for line in lines:
                if line:
                    chunk.append(order.next(json.loads(line)))
                    if len(chunk) == per_chunk:
                        yield chunk
                        chunk = []
        if pending:
            chunk.append(order.next(json.loads(pending)))
        if chunk:
            yield chunk

    def _engine(
        self,
        plan: dict[str, Any],
        inputs: list[CompletedInput],
        *,
        keep: Callable[[str], bool],
        into: str | None = None,
        status_out: SqlRun | None = None,
    ) -> tuple[dict[str, Any], list[StoredObject]]:
        """One run of the engine in the sandbox; its stats, and the files it sealed."""
        self._scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="sql-", dir=self._scratch_root))
        stats: dict[str, Any] = {}
        sealed: list[StoredObject] = []

        def receive(name: str, stream: IO[bytes], size: int) -> None:
            if name == f"{RESULT}/stats.json":
                data = stream.read(MAX_STATS + 1)
                if len(data) > MAX_STATS:
                    raise RunError("run-outputs", "small stats", size, "stats too large")
                document = json.loads(data)
                if isinstance(document, dict):
                    stats.update(document)
            elif keep(name) and into is not None:
                sealed.append(self._store.ingest(f"{into}/{name.rsplit('/', 1)[1]}", stream))

        try:
            self._stage_engine(scratch, plan, inputs)
            result = self._sandbox.run(
                runtime=self._runtime,
                workspace=scratch,
                outputs=[RESULT],
                handler=self.worker.spec.handler,
                limits=Limits(**self.worker.spec.resources.model_dump()),
                receive=receive,
            )
            self.last_run = result
        except BaseException:
            for stored in sealed:
                self._store.discard(stored.name)
            raise
        finally:
            wipe(scratch)
        if result.status != "succeeded" or result.outputs_withheld:
            for stored in sealed:
                self._store.discard(stored.name)
            reason = "outputs over the disk limit" if result.outputs_withheld else result.status
            if status_out is not None:
                status_out.state, status_out.detail = "failed", f"the engine ended: {reason}"
                status_out.limit = result.status if result.status in ENGINE_LIMITS else None
                return stats, []
            raise RunError("engine", "an engine run that succeeded", reason, "the engine failed")
        return stats, sealed

    def _stage_engine(
        self, scratch: Path, plan: dict[str, Any], inputs: list[CompletedInput]
    ) -> None:
        self._stage_function(scratch)
        (scratch / "parameters.json").write_bytes(canonical(plan))
        (scratch / "inputs").mkdir()
        for completed in inputs:
            for stored in completed.files:
                target = scratch / "inputs" / stored.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as handle:
                    for chunk in self._store.read(stored.name):
                        handle.write(chunk)

    # ------------------------------------------------------------ downloads

    def download(self, session_id: str) -> Iterator[bytes]:
        with self._lock:
            self._alive()
            opened = self._fresh(session_id)
            early = opened.purpose if opened is not None else None
            if isinstance(early, DownloadPurpose) and early.run in self.runs:
                state = self.runs[early.run].state
                if state != "done":  # before the session is used: it can ask again
                    raise RunError("run-state", "a finished query", state, "no output yet")
            session, purpose = self._take(session_id, DownloadPurpose)
            run = self.runs.get(purpose.run or 0)
            if purpose.run is None or run is None:
                raise RunError("run-number", sorted(self.runs), purpose.run, "no such query run")
            if run.plan.output != purpose.output:
                raise RunError("run-output", run.plan.output, purpose.output, "another output")
            if run.state != "done":
                raise RunError("run-state", "a finished query", run.state, "no output yet")
            files = list(run.files)
        return self._run_frames(session, purpose.output, run, files)

    def download_stream(self, session_id: str) -> Iterator[bytes | bytearray]:
        """The same as a frame stream (each frame length-prefixed), as the Worker serves
        it: checked now, like :meth:`download`, framed as the frames are sealed."""
        return encode_frames(self.download(session_id))

    def _run_frames(
        self, session: AcceptedHandshake, output_id: str, run: SqlRun, files: list[StoredObject]
    ) -> Iterator[bytes]:
        sender = RecordSender(session.keys.worker_to_client, session.keys.session_id)
        for stored, shown in zip(files, self._named(output_id, run), strict=True):
            chunks = self._store.read(stored.name)
            previous = next(chunks, b"")
            for chunk in chunks:
                yield sender.seal(shown.name, previous, final=False)
                previous = chunk
            yield sender.seal(shown.name, previous, final=True)
        manifest = canonical(self._manifest(output_id, run.salt, self._named(output_id, run)))
        yield sender.seal(f"{output_id}/{MANIFEST_NAME}", manifest, final=True)

    # ------------------------------------------------------------- receipts

    def run_receipt(self, number: int) -> tuple[dict[str, Any], bytes, bytes]:
        """A finished run's signed receipt, and its detail sealed to its runner."""
        run = self.runs.get(number)
        if run is None:  # not a run still going: the room has had no such run
            runs = f"1 to {len(self.runs)}" if self.runs else "none, no query has run"
            raise RunError("run-state", f"a query run of this room ({runs})", number, "no such run")
        if run.receipt is None or run.sealed_detail is None:
            raise RunError("run-state", "a finished query run", number, "no receipt yet")
        return (*run.receipt, run.sealed_detail)

    def budget(self, nonce: str) -> tuple[dict[str, Any], bytes]:
        """Every DP owner's ε spent and left, from the verified ledger, fresh for ``nonce``."""
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise MessageFormatError("nonce", "16 to 64 characters", nonce, "bad nonce")
        statement = budget_statement(
            self.worker.spec, nonce=nonce, runs=len(self.runs), privacy=self.ledger.status()
        )
        return statement, self.worker.sign_receipt(statement)


class _GroupOrder:
    """The engine's exact DP groups, checked to come in strictly increasing order of
    their keys, as the engine orders them (``ORDER BY`` each key ``ASC NULLS LAST``;
    every key is text, which DuckDB orders by its UTF-8 bytes, as Python orders ``str``
    by code points). The Worker releases the groups chunk by chunk and keys the rows it
    adds up within one chunk only: a group the engine wrote twice, or out of order,
    could land in two chunks and be released twice, under noise calibrated for one
    (``dp-order``). A query without GROUP BY has one line, of no keys."""

    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.previous: tuple[tuple[int, str], ...] | None = None
        self.lines = 0

    def next(self, row: Any) -> dict[str, Any]:
        """``row``, if it is a group of text keys that comes after the last one."""
        self.lines += 1
        if not isinstance(row, dict):
            raise RunError("dp-order", "a JSON object a group", type(row).__name__, "bad group")
        key: list[tuple[int, str]] = []
        for index in range(self.keys):
            value = row.get(f"{HIDDEN_PREFIX}_g{index}")
            if value is None:
                key.append((1, ""))  # NULL last
            elif isinstance(value, str):
                key.append((0, value))
            else:
                raise RunError(
                    "dp-order", "group keys of text or NULL", type(value).__name__,
                    f"group {self.lines} of the engine has a key that is not text",
                )  # fmt: skip
        ordered = tuple(key)
        if self.previous is not None and not self.previous < ordered:
            # The keys themselves are data: the refusal names where, not what.
            raise RunError(
                "dp-order", "groups in strictly increasing order of their keys",
                f"group {self.lines} not after group {self.lines - 1}",
                "the engine's exact groups are out of order or repeated",
            )  # fmt: skip
        self.previous = ordered
        return row


def run_states(room: SqlRoom) -> dict[str, Any]:
    """Each query run's state, for the (untrusted, informational) state endpoint."""
    return {str(n): {"state": r.state, "detail": r.detail} for n, r in room.runs.items()}


__all__ = ["SqlRoom", "engine_limits", "run_states", "sign"]
