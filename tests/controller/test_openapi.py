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


def app_of(tmp_path: Path) -> Any:
    url = "http://127.0.0.1:8"
    settings = ControllerSettings(
        data_dir=tmp_path,
        manager_url="http://127.0.0.1:9",
        public_url=url,
        credentials=ComputeCredentials(url, "cs-" + "0" * 32, "secret"),
    )
    return create_app(settings)


def document(tmp_path: Path) -> dict[str, Any]:
    # No lifespan: the document needs no Attester.
    answer: dict[str, Any] = TestClient(app_of(tmp_path)).get("/openapi.json").json()
    return answer


def test_no_documentation_pages_are_served(tmp_path: Path) -> None:
    """Swagger UI and ReDoc pages (which load their scripts from a CDN) are not served to
    whoever reaches the listener, as the manager serves none; the document stays."""
    client = TestClient(app_of(tmp_path))
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc"):
        answer = client.get(path)
        assert answer.status_code == 404, f"GET {path}: expected 404, got {answer.status_code}"
    assert client.get("/openapi.json").status_code == 200


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
