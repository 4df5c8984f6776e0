"""The access file, and the work spec a deployer builds from it.

The access file says, by ``user_id``, who may upload each input, who may read each
output, who may start the run and where the function's logs go::

    inputs:  {input_1: <user_id>, input_2: <user_id>}
    outputs: {output_1: <user_id>, output_2: <user_id>}
    runners: [<user_id>]        # optional; default: the deployer
    logs: output_1              # optional; default: nowhere
    rules: {input_1: {kind: aggregation, …}}   # SQL rooms: each owner's analysis rule
    adhoc: {runners: [<user_id>], output: output_1}  # SQL rooms: ad-hoc queries

It is checked as strictly as the work spec it becomes: unknown keys, duplicate
keys, malformed ids or user_ids are refused with one line that names the key. A
typo must never silently change who can read what.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cleanroom.errors import EXIT_USAGE, Error
from cleanroom.protocol.encoding import b64u, from_b64u
from cleanroom.protocol.errors import MessageFormatError
from cleanroom.protocol.spec import WORK_SPEC_TYPE, Scalar, WorkSpec

ACCESS_KEYS = ("inputs", "outputs", "runners", "logs", "rules", "adhoc")
NONCE_BYTES = 16
MAX_PARAMETER_NAME = 64

_OBJECT_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_USER_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_INTEGER = re.compile(r"^-?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(
    r"^-?(0|[1-9][0-9]*|(0|[1-9][0-9]*)?\.[0-9]+|(0|[1-9][0-9]*)\.)([eE][+-]?[0-9]+)?$"
)


class AccessFileError(Error):
    """The access file cannot be used; the message names the file, the key and the problem."""

    exit_code = EXIT_USAGE


class ParameterError(Error):
    """A ``KEY=VALUE`` parameter cannot be used."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Access:
    """Who may do what in a clean room, by ``user_id``; ``runners=None`` means the deployer."""

    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    runners: tuple[str, ...] | None = None
    logs: str | None = None
    source: str = field(default="access file", compare=False)
    # SQL rooms (docs/privacy.md): checked as part of the spec they go into.
    rules: Mapping[str, Any] | None = None
    adhoc: Mapping[str, Any] | None = None


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: construct_mapping refuses it below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


class _Refuse:
    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, key: str, problem: str) -> AccessFileError:
        return AccessFileError(f"{self.source}: {key}: {problem}")


def _check_user_id(value: object, key: str, refuse: _Refuse) -> str:
    if not isinstance(value, str):
        raise refuse(key, f"a user_id must be a string, got {type(value).__name__} {value!r}")
    if not _USER_ID.fullmatch(value):
        raise refuse(key, f"{value!r} is not a user_id (43 characters of base64url)")
    try:
        from_b64u(value, "user_id", size=32)
    except MessageFormatError:
        # Stray low bits: a second spelling of one key would give a second Work-ID.
        raise refuse(key, f"{value!r} is not a canonical user_id") from None
    return value


def _check_object_id(value: object, key: str, refuse: _Refuse) -> str:
    if not isinstance(value, str) or not _OBJECT_ID.fullmatch(value):
        raise refuse(
            key, f"{value!r} is not an id (a lowercase letter, then up to 31 of a-z, 0-9, _)"
        )
    return value


def _object_map(document: Mapping[str, Any], key: str, refuse: _Refuse) -> dict[str, str]:
    value = document.get(key)
    if key not in document:
        raise refuse(key, "missing (a mapping of id to user_id)")
    if not isinstance(value, dict):
        raise refuse(key, f"must be a mapping of id to user_id, got {type(value).__name__}")
    return {
        _check_object_id(name, f"{key}.{name}", refuse): _check_user_id(
            owner, f"{key}.{name}", refuse
        )
        for name, owner in value.items()
    }


def parse_access(document: object, *, source: str = "access file") -> Access:
    """An :class:`Access` from YAML- or JSON-decoded data; AccessFileError names the key."""
    refuse = _Refuse(source)
    if not isinstance(document, dict):
        raise AccessFileError(
            f"{source}: must be a mapping with keys {', '.join(ACCESS_KEYS)}, "
            f"got {type(document).__name__}"
        )
    for key in document:
        if key not in ACCESS_KEYS:
            raise refuse(str(key), f"unknown key (allowed: {', '.join(ACCESS_KEYS)})")
    inputs = _object_map(document, "inputs", refuse)
    outputs = _object_map(document, "outputs", refuse)
    if not outputs:
        raise refuse("outputs", "at least one output is needed")
    for name in outputs:
        if name in inputs:
            raise refuse(f"outputs.{name}", "this id is already an input")
    runners: tuple[str, ...] | None = None
    if "runners" in document:
        value = document["runners"]
        if not isinstance(value, list) or not value:
            raise refuse("runners", "must be a non-empty list of user_ids (or left out)")
        checked = [
            _check_user_id(item, f"runners[{index}]", refuse) for index, item in enumerate(value)
        ]
        for index, item in enumerate(checked):
            if item in checked[:index]:
                raise refuse(f"runners[{index}]", f"{item!r} is listed twice")
        runners = tuple(checked)
    logs: str | None = None
    if "logs" in document:
        logs = _check_object_id(document["logs"], "logs", refuse)
        if logs not in outputs:
            raise refuse("logs", f"{logs!r} is not one of the outputs {sorted(outputs)}")
    sql: dict[str, Mapping[str, Any] | None] = {"rules": None, "adhoc": None}
    for key in sql:
        if key in document:
            if not isinstance(document[key], dict):
                raise refuse(key, f"must be a mapping, got {type(document[key]).__name__}")
            sql[key] = document[key]
    return Access(
        inputs=inputs, outputs=outputs, runners=runners, logs=logs, source=source,
        rules=sql["rules"], adhoc=sql["adhoc"],
    )  # fmt: skip


def load_access(path: Path) -> Access:
    """Read and check the access file at ``path`` (YAML); AccessFileError on any problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccessFileError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AccessFileError(f"{source}: cannot be read: {error}") from error
    try:
        # A SafeLoader (no arbitrary objects) that also refuses duplicate keys.
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except yaml.YAMLError as error:
        raise AccessFileError(f"{source}: not valid YAML: {_yaml_error(error)}") from error
    return parse_access(document, source=source)


def build_spec(
    *,
    name: str,
    function_id: str,
    handler: str,
    access: Access,
    deployer_user_id: str,
    runtime: str = "python3.11",
    memory_mib: int = 2048,
    timeout_s: int = 3600,
    cpu_s: int | None = None,
    processes: int | None = None,
    disk_mib: int | None = None,
    parameters: Mapping[str, Scalar] | None = None,
    nonce: bytes | None = None,
    sql: Mapping[str, Any] | None = None,
) -> WorkSpec:
    """The work spec of a new clean room, with a fresh random nonce unless one is given.

    ``runners`` default to the deployer; resources not given take the spec's defaults
    (:class:`~cleanroom.protocol.spec.Resources`), written out in full. Raises
    :class:`~cleanroom.protocol.errors.MessageFormatError` naming the field when the
    spec is not valid (the same checks the manager and the Worker apply).
    """
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise MessageFormatError(
            "work-spec", f"a {NONCE_BYTES}-byte nonce", f"{len(nonce)} bytes", "bad nonce"
        )
    resources = {"memory_mib": memory_mib, "timeout_s": timeout_s}
    optional = {"cpu_s": cpu_s, "processes": processes, "disk_mib": disk_mib}
    resources.update({key: value for key, value in optional.items() if value is not None})
    document: dict[str, Any] = {
        "type": WORK_SPEC_TYPE,
        "name": name,
        "function": function_id,
        "runtime": runtime,
        "handler": handler,
        "resources": resources,
        "inputs": dict(access.inputs),
        "outputs": dict(access.outputs),
        "runners": list(access.runners) if access.runners is not None else [deployer_user_id],
        "parameters": dict(parameters or {}),
        "nonce": b64u(nonce),
    }
    if access.logs is not None:
        document["logs"] = access.logs
    if sql is not None:
        document["sql"] = dict(sql)
    return WorkSpec.parse(document)


def parse_parameter(text: str) -> tuple[str, Scalar]:
    """``KEY=VALUE`` as a typed parameter.

    VALUE becomes an integer (``42``, ``-7``), a float (``0.5``, ``1e-3``; finite),
    ``true``/``false``, ``null``, or else the string itself. Numbers have no leading
    zeros: ``007`` stays a string.
    Double quotes force a string: ``id="007"`` is the string ``007``.
    """
    key, separator, value = text.partition("=")
    if not separator:
        raise ParameterError(f"parameter {text!r} is not KEY=VALUE")
    if not key:
        raise ParameterError(f"parameter {text!r} has an empty key")
    if len(key) > MAX_PARAMETER_NAME:
        raise ParameterError(f"parameter key {key[:20]!r}… is longer than {MAX_PARAMETER_NAME}")
    return key, _scalar(value)


def _scalar(value: str) -> Scalar:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    if value in ("true", "false"):
        return value == "true"
    if value == "null":
        return None
    if _INTEGER.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        number = float(value)
        if not math.isfinite(number):
            raise ParameterError(f"parameter value {value!r} is not a finite number")
        return number
    return value


def parse_parameters(texts: list[str]) -> dict[str, Scalar]:
    """Several ``KEY=VALUE`` parameters; a key given twice is refused."""
    parameters: dict[str, Scalar] = {}
    for text in texts:
        key, value = parse_parameter(text)
        if key in parameters:
            raise ParameterError(f"parameter {key!r} is given twice")
        parameters[key] = value
    return parameters


__all__ = [
    "Access",
    "AccessFileError",
    "ParameterError",
    "build_spec",
    "load_access",
    "parse_access",
    "parse_parameter",
    "parse_parameters",
]
