"""The access file, the spec built from it, and typed parameters."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from cleanroom.client.access import (
    Access,
    AccessFileError,
    ParameterError,
    build_spec,
    load_access,
    parse_parameter,
    parse_parameters,
)
from cleanroom.protocol.encoding import b64u, canonical
from cleanroom.protocol.errors import MessageFormatError

FUNCTION = "fs://" + b64u(hashlib.sha256(b"bundle").digest())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "access.yaml"
    path.write_text(text)
    return path


def valid(alice: str, bob: str) -> str:
    return (
        f"inputs: {{input_1: {alice}, input_2: {bob}}}\n"
        f"outputs: {{output_1: {alice}, output_2: {bob}}}\n"
        f"runners: [{alice}]\n"
        "logs: output_1\n"
    )


def non_canonical(user_id: str) -> str:
    """The same 32 bytes spelled with stray low bits in the last character."""
    last = user_id[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spelled = user_id[:-1] + alphabet[alphabet.index(last) + 1]
    assert base64.urlsafe_b64decode(spelled + "=") == base64.urlsafe_b64decode(user_id + "=")
    return spelled


def test_valid_access_file(tmp_path: Path, alice: str, bob: str) -> None:
    access = load_access(write(tmp_path, valid(alice, bob)))
    assert access.inputs == {"input_1": alice, "input_2": bob}
    assert access.outputs == {"output_1": alice, "output_2": bob}
    assert access.runners == (alice,)
    assert access.logs == "output_1"


def test_optional_keys(tmp_path: Path, alice: str) -> None:
    access = load_access(write(tmp_path, f"inputs: {{}}\noutputs: {{result: {alice}}}\n"))
    assert access.inputs == {}
    assert access.runners is None
    assert access.logs is None


# Each case breaks exactly one thing of the valid file; the error names the key.
BAD_CASES = [
    ("unknown key", "{valid}readers: [{alice}]\n", "readers: unknown key"),
    ("inputs missing", "outputs: {{output_1: {alice}}}\n", "inputs: missing"),
    ("outputs missing", "inputs: {{input_1: {alice}}}\n", "outputs: missing"),
    ("outputs empty", "inputs: {{}}\noutputs: {{}}\n", "outputs: at least one output"),
    ("inputs a list", "inputs: [{alice}]\noutputs: {{o: {alice}}}\n", "inputs: must be a mapping"),
    ("inputs null", "inputs:\noutputs: {{o: {alice}}}\n", "inputs: must be a mapping"),
    ("bad id", "inputs: {{Input-1: {alice}}}\noutputs: {{o: {alice}}}\n", "inputs.Input-1:"),
    ("id too long", "inputs: {{}}\noutputs: {{{long}: {alice}}}\n", "outputs.{long}:"),
    ("short user_id", "inputs: {{i: abc}}\noutputs: {{o: {alice}}}\n", "inputs.i: 'abc' is not"),
    ("numeric user_id", "inputs: {{i: 12}}\noutputs: {{o: {alice}}}\n", "inputs.i: a user_id must"),
    (
        "non-canonical user_id",
        "inputs: {{}}\noutputs: {{o: {noncanonical}}}\n",
        "outputs.o: '{noncanonical}' is not a canonical user_id",
    ),
    (
        "id both input and output",
        "inputs: {{x: {alice}}}\noutputs: {{x: {bob}}}\n",
        "outputs.x: this id is already an input",
    ),
    ("runners empty", "inputs: {{}}\noutputs: {{o: {alice}}}\nrunners: []\n", "runners: must be"),
    (
        "runners a string",
        "inputs: {{}}\noutputs: {{o: {alice}}}\nrunners: {alice}\n",
        "runners: must be a non-empty list",
    ),
    (
        "runner twice",
        "inputs: {{}}\noutputs: {{o: {alice}}}\nrunners: [{alice}, {alice}]\n",
        "runners[1]: '{alice}' is listed twice",
    ),
    (
        "bad runner",
        "inputs: {{}}\noutputs: {{o: {alice}}}\nrunners: [{alice}, nobody]\n",
        "runners[1]: 'nobody' is not a user_id",
    ),
    (
        "logs not an output",
        "inputs: {{i: {bob}}}\noutputs: {{o: {alice}}}\nlogs: i\n",
        "logs: 'i' is not one of the outputs",
    ),
    ("logs not an id", "inputs: {{}}\noutputs: {{o: {alice}}}\nlogs: [o]\n", "logs: ['o'] is not"),
    (
        "duplicate top-level key",
        "inputs: {{}}\noutputs: {{o: {alice}}}\noutputs: {{o: {bob}}}\n",
        "duplicate key 'outputs'",
    ),
    (
        "duplicate nested key",
        "inputs: {{}}\noutputs:\n  o: {alice}\n  o: {bob}\n",
        "line 4: duplicate key 'o'",
    ),
    ("not YAML", "inputs: {{\n", "not valid YAML"),
    ("not a mapping", "- {alice}\n", "must be a mapping with keys inputs, outputs"),
    ("empty file", "", "must be a mapping with keys"),
    ("a YAML object tag", "!!python/object:os.system {{}}\n", "not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_access_file(
    tmp_path: Path, alice: str, bob: str, case: str, text: str, message: str
) -> None:
    values = {
        "alice": alice,
        "bob": bob,
        "valid": valid(alice, bob),
        "long": "o" * 33,
        "noncanonical": non_canonical(alice),
    }
    path = write(tmp_path, text.format(**values))
    with pytest.raises(AccessFileError) as error:
        load_access(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message.format(**values) in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_access_file(tmp_path: Path) -> None:
    with pytest.raises(AccessFileError, match=re.escape("access.yaml: no such file")):
        load_access(tmp_path / "access.yaml")


# -------------------------------------------------------------------- build_spec


def test_build_spec(alice: str, bob: str) -> None:
    access = Access(inputs={"input_1": alice}, outputs={"output_1": bob}, logs="output_1")
    nonce = bytes(range(16))
    spec = build_spec(
        name="overlap",
        function_id=FUNCTION,
        handler="handler.run",
        access=access,
        deployer_user_id=alice,
        memory_mib=1024,
        timeout_s=60,
        parameters={"k": 1, "s": "x"},
        nonce=nonce,
    )
    document = {
        "type": "cleanroom/work-spec/v1",
        "name": "overlap",
        "function": FUNCTION,
        "runtime": "python3.11",
        "handler": "handler.run",
        # Resources not given are written out with the spec's defaults.
        "resources": {
            "memory_mib": 1024,
            "timeout_s": 60,
            "cpu_s": 14400,
            "processes": 256,
            "disk_mib": 1024,
        },
        "inputs": {"input_1": alice},
        "outputs": {"output_1": bob},
        "runners": [alice],  # the deployer, by default
        "logs": "output_1",
        "parameters": {"k": 1, "s": "x"},
        "nonce": b64u(nonce),
    }
    assert spec.document() == document
    assert spec.work_id == b64u(hashlib.sha256(canonical(document)).digest())


def test_build_spec_explicit_runners_and_random_nonce(alice: str, bob: str) -> None:
    access = Access(inputs={}, outputs={"o": alice}, runners=(bob, alice))
    arguments = {
        "name": "r",
        "function_id": FUNCTION,
        "handler": "handler.run",
        "access": access,
        "deployer_user_id": alice,
    }
    first, second = build_spec(**arguments), build_spec(**arguments)  # type: ignore[arg-type]
    assert first.runners == [bob, alice]
    assert "logs" not in first.document()
    assert len(base64.urlsafe_b64decode(first.nonce + "==")) == 16
    assert first.nonce != second.nonce
    assert first.work_id != second.work_id


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"handler": "handler"}, "handler"),
        ({"name": "Overlap"}, "name"),
        ({"function_id": "fs://short"}, "function"),
        ({"runtime": "ruby"}, "runtime"),
        ({"memory_mib": 1}, "resources.memory_mib"),
        ({"timeout_s": 0}, "resources.timeout_s"),
        ({"parameters": {"big": 2**60}}, "spec"),
    ],
)
def test_build_spec_refuses_a_bad_spec(alice: str, change: dict[str, object], where: str) -> None:
    arguments: dict[str, object] = {
        "name": "overlap",
        "function_id": FUNCTION,
        "handler": "handler.run",
        "access": Access(inputs={}, outputs={"o": alice}),
        "deployer_user_id": alice,
        **change,
    }
    with pytest.raises(MessageFormatError) as error:
        build_spec(**arguments)  # type: ignore[arg-type]
    assert error.value.check == "work-spec"
    assert error.value.actual == where


def test_build_spec_refuses_a_short_nonce(alice: str) -> None:
    with pytest.raises(MessageFormatError, match="16-byte nonce"):
        build_spec(
            name="overlap",
            function_id=FUNCTION,
            handler="handler.run",
            access=Access(inputs={}, outputs={"o": alice}),
            deployer_user_id=alice,
            nonce=bytes(8),
        )


# -------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k=42", ("k", 42)),
        ("k=-7", ("k", -7)),
        ("k=0", ("k", 0)),
        ("k=007", ("k", "007")),  # no leading zeros: a string, not 7
        ("k=0.5", ("k", 0.5)),
        ("k=1e-3", ("k", 0.001)),
        ("k=-.5", ("k", -0.5)),
        ("k=1.", ("k", 1.0)),
        ("k=1e3", ("k", 1000.0)),
        ("k=00.5", ("k", "00.5")),
        ("k=true", ("k", True)),
        ("k=false", ("k", False)),
        ("k=null", ("k", None)),
        ("k=True", ("k", "True")),
        ("k=hello world", ("k", "hello world")),
        ("k=", ("k", "")),
        ("k=a=b", ("k", "a=b")),
        ('k="42"', ("k", "42")),
        ('k="true"', ("k", "true")),
        ("k=nan", ("k", "nan")),
        ("k=inf", ("k", "inf")),
    ],
)
def test_parse_parameter(text: str, expected: tuple[str, object]) -> None:
    key, value = parse_parameter(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("novalue", "is not KEY=VALUE"),
        ("=1", "has an empty key"),
        ("k" * 65 + "=1", "longer than 64"),
        ("k=1e999", "not a finite number"),
    ],
)
def test_bad_parameter(text: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        parse_parameter(text)


def test_parameter_given_twice() -> None:
    assert parse_parameters(["a=1", "b=x"]) == {"a": 1, "b": "x"}
    with pytest.raises(ParameterError, match="'a' is given twice"):
        parse_parameters(["a=1", "a=2"])
