"""The example access file is one the client accepts, once its placeholders are filled."""

from __future__ import annotations

import hashlib

import yaml

from cleanroom.client.access import parse_access
from cleanroom.protocol.encoding import b64u
from tests.examples.harness import EXAMPLES


def test_the_overlap_access_example_parses() -> None:
    text = (EXAMPLES / "overlap" / "access.yaml.example").read_text(encoding="utf-8")
    party_1, party_2 = (b64u(hashlib.sha256(name).digest()) for name in (b"p1", b"p2"))
    text = text.replace("<user_id of party 1>", party_1).replace("<user_id of party 2>", party_2)
    access = parse_access(yaml.safe_load(text), source="access.yaml.example")
    assert dict(access.inputs) == {"input_1": party_1, "input_2": party_2}
    assert dict(access.outputs) == {"output_1": party_1, "output_2": party_2}
    assert access.runners == (party_1,)
    assert access.logs is None
