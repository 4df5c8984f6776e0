"""The work spec: what a clean room is, and its Work-ID.

Every party reviews the spec (function, who may upload which input, who may read
which output, who may run, parameters, resources, a nonce) and pins its Work-ID.
The Worker computes the Work-ID itself from the spec it was given, so a swapped
spec or access map yields another Work-ID, which the client refuses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cleanroom.protocol.encoding import b64u, canonical, from_b64u, sha256
from cleanroom.protocol.errors import AccessDenied, MessageFormatError
from cleanroom.protocol.sql import SQL_HANDLER, SQL_RUNTIME, SpecRuleError, SqlSpec

WORK_SPEC_TYPE: Literal["cleanroom/work-spec/v1"] = "cleanroom/work-spec/v1"

UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")]  # b64u of 32 bytes
ObjectId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
SessionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{22}$")]  # b64u of 16 bytes
FunctionId = Annotated[str, Field(pattern=r"^fs://[A-Za-z0-9_-]{43}$")]
Scalar = str | int | float | bool | None
RUNTIME_PATTERN = r"^(python3\.[0-9]{1,2}(-[a-z][a-z0-9]{0,15})?|sql)$"


def _canonical_b64u(value: str, what: str, size: int) -> None:
    try:
        from_b64u(value, what, size=size)
    except MessageFormatError as error:
        raise ValueError(f"{what} {value!r} is not canonical b64u of {size} bytes") from error


class Resources(BaseModel):
    """What one run may use; the Worker's sandbox enforces each while the run lasts."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    memory_mib: int = Field(default=2048, ge=64, le=1 << 20)  # everything it keeps in RAM
    timeout_s: int = Field(default=3600, ge=1, le=7 * 86400)  # wall-clock time
    cpu_s: int = Field(default=4 * 3600, ge=1, le=64 * 7 * 86400)  # CPU time, all tasks
    processes: int = Field(default=256, ge=8, le=65536)  # tasks: processes and threads
    disk_mib: int = Field(default=1024, ge=1, le=1 << 20)  # outputs/ and /tmp together


class WorkSpec(BaseModel):
    """A clean room's spec. Construction checks it; a bad spec never gets a Work-ID."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    type: Literal["cleanroom/work-spec/v1"] = WORK_SPEC_TYPE
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    function: FunctionId
    # A name of the runtime catalogue (cleanroom.runtimes), e.g. python3.11-data; which
    # names a server offers is checked at deploy, by the manager and by the Worker.
    runtime: str = Field(default="python3.11", pattern=RUNTIME_PATTERN)
    handler: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
    resources: Resources = Resources()
    inputs: dict[ObjectId, UserId]
    outputs: dict[ObjectId, UserId] = Field(min_length=1)
    runners: list[UserId] = Field(min_length=1)
    logs: ObjectId | None = None
    parameters: dict[Annotated[str, Field(max_length=64)], Scalar] = {}
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{22}$")  # b64u of 16 random bytes
    # runtime "sql" only: schemas, analysis rules, queries (cleanroom.protocol.sql).
    sql: SqlSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WorkSpec:
        shared = set(self.inputs) & set(self.outputs)
        if shared:
            raise ValueError(f"ids used as both input and output: {sorted(shared)}")
        if len(set(self.runners)) != len(self.runners):
            raise ValueError("runners must not repeat")
        if self.logs is not None and self.logs not in self.outputs:
            raise ValueError(f"logs go to {self.logs!r}, which is not an output")
        # One value, one encoding: b64u with stray low bits would give two Work-IDs.
        for value in [*self.inputs.values(), *self.outputs.values(), *self.runners]:
            _canonical_b64u(value, "user_id", 32)
        _canonical_b64u(self.function.removeprefix("fs://"), "function", 32)
        _canonical_b64u(self.nonce, "nonce", 16)
        for key, parameter in self.parameters.items():
            # JCS writes 2.0**53 as 9007199254740992, which reads back as an integer no
            # JSON number can hold exactly: the spec would not survive its own Work-ID.
            if isinstance(parameter, float) and parameter.is_integer() and abs(parameter) >= 2**53:
                raise ValueError(f"parameter {key!r}: {parameter} has no exact JSON form")
        if (self.runtime == SQL_RUNTIME) != (self.sql is not None):
            raise SpecRuleError("sql-runtime", "runtime sql and the sql object go together")
        if self.sql is not None:
            if self.handler != SQL_HANDLER:
                raise SpecRuleError("sql-engine", f"a SQL room's handler is {SQL_HANDLER}")
            if self.logs is not None:
                # The engine's messages could quote values from the data.
                raise SpecRuleError("sql-logs", "a SQL room sends no log to any output")
            self.sql.check(set(self.inputs), set(self.outputs))
            for runner in self.sql.adhoc.runners if self.sql.adhoc else []:
                _canonical_b64u(runner, "user_id", 32)
        try:
            self.canonical()
        except MessageFormatError as error:  # e.g. an integer parameter beyond 2^53
            raise ValueError(f"spec has no canonical JSON form: {error.message}") from error
        return self

    @classmethod
    def parse(cls, document: Any) -> WorkSpec:
        """A spec from JSON-decoded data; MessageFormatError names what is wrong."""
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            first = error.errors()[0]
            # A location names the document's keys, which may be of any length: cut short.
            where = (".".join(str(part) for part in first["loc"]) or "spec")[:200]
            cause = first.get("ctx", {}).get("error")
            if isinstance(cause, SpecRuleError):  # a SQL part: its own check's name
                raise MessageFormatError(
                    cause.check, "a usable SQL clean room", where, str(cause)
                ) from error
            raise MessageFormatError(
                "work-spec", "a valid cleanroom/work-spec/v1", where, first["msg"]
            ) from error

    def document(self) -> dict[str, Any]:
        """The JSON object that is hashed (absent ``logs`` is omitted, not null)."""
        return self.model_dump(mode="json", exclude_none=True)

    def canonical(self) -> bytes:
        return canonical(self.document())

    @property
    def work_id(self) -> str:
        """b64u(SHA-256(JCS(spec)))."""
        return b64u(sha256(self.canonical()))


class UploadPurpose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    op: Literal["upload"]
    input: ObjectId


class DownloadPurpose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    op: Literal["download"]
    output: ObjectId
    run: Annotated[int, Field(ge=1)] | None = None  # a SQL room's query run


class RunPurpose(BaseModel):
    """A run. In a SQL room the query itself follows in the session, encrypted
    (cleanroom/query-request/v1), so the Controller can neither read nor swap it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    op: Literal["run"]


class FatePurpose(BaseModel):
    """A runner's question about one of her run sessions, or an uploader's about one of
    her upload sessions: what became of it (:mod:`cleanroom.protocol.fate`). The Worker
    answers sealed in this session."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
    op: Literal["fate"]
    session: SessionId


SessionPurpose = UploadPurpose | DownloadPurpose | RunPurpose | FatePurpose
Purpose = Annotated[SessionPurpose, Field(discriminator="op")]


def authorize(spec: WorkSpec, user: str, purpose: SessionPurpose) -> None:
    """Is ``user`` allowed what ``purpose`` says? AccessDenied names why not."""
    if isinstance(purpose, UploadPurpose):
        if purpose.input not in spec.inputs:
            raise AccessDenied(
                "purpose",
                f"one of the inputs {sorted(spec.inputs)}",
                purpose.input,
                "no such input (outputs cannot be uploaded)",
            )
        owner = spec.inputs[purpose.input]
        if owner != user:
            raise AccessDenied(
                "input-owner", owner, user, f"only its owner may upload {purpose.input}"
            )
    elif isinstance(purpose, DownloadPurpose):
        if purpose.output not in spec.outputs:
            raise AccessDenied(
                "purpose",
                f"one of the outputs {sorted(spec.outputs)}",
                purpose.output,
                "no such output",
            )
        if (purpose.run is None) != (spec.sql is None):
            raise AccessDenied(
                "purpose",
                "a query run's number" if spec.sql is not None else "no run number",
                purpose.run,
                "a SQL room's outputs are per query run; a function room has one run",
            )
        recipient = spec.outputs[purpose.output]
        if recipient != user:
            raise AccessDenied(
                "output-recipient", recipient, user, f"only its recipient may read {purpose.output}"
            )
    elif isinstance(purpose, FatePurpose) and user in spec.inputs.values():
        # An uploader's question about one of her upload sessions (or a runner's about
        # a run session): whose session it is, the Worker checks (fate-owner).
        pass
    # A run, or a question about a run session (FatePurpose): runners only.
    elif user not in spec.runners and not (
        # Ad-hoc runners too: which query they may send is checked when it arrives.
        spec.sql is not None and spec.sql.adhoc is not None and user in spec.sql.adhoc.runners
    ):
        raise AccessDenied("runner", sorted(spec.runners), user, "only a runner may start the run")
