"""The Controller's OpenAPI document describes the errors it really sends, and its room
routes answer what docs/api.md says they answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cleanroom.controller import ControllerSettings, create_app
from cleanroom.controller.manager_link import ComputeCredentials

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def document(tmp_path: Path) -> dict[str, Any]:
    url = "http://127.0.0.1:8"
    settings = ControllerSettings(
        data_dir=tmp_path,
        manager_url="http://127.0.0.1:9",
        public_url=url,
        credentials=ComputeCredentials(url, "cs-" + "0" * 32, "secret"),
    )
    app = create_app(settings)
    # No lifespan: the document needs no Attester.
    answer: dict[str, Any] = TestClient(app).get("/openapi.json").json()
    return answer


def test_every_operation_describes_its_errors_as_problems(tmp_path: Path) -> None:
    openapi = document(tmp_path)
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    assert openapi["components"]["schemas"]["Problem"]["properties"]["detail"]["type"] == "string"
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            assert operation["responses"]["default"]["content"] == problem, (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == problem, (method, path, status)


def test_the_documented_controller_routes_are_the_routes(tmp_path: Path) -> None:
    """Every route the Controller table of docs/api.md lists exists, and no other."""
    text = API_MD.read_text()
    table = text[text.index("## Controller") : text.index("### Frame stream")]
    documented = {
        (method.lower(), path)
        for method, path in re.findall(r"^\| `(GET|PUT|POST|DELETE) (/[^`]*)`", table, re.M)
    }
    served = {
        (method, path) for path, item in document(tmp_path)["paths"].items() for method in item
    }
    assert documented == served
