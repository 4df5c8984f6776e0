"""The files a SQL room is deployed from: named queries (``queries.sql``) and schemas.

``queries.sql`` holds one or more named queries, each after a block of directives::

    -- query: by_segment
    -- output: output_1
    -- format: csv                     (optional: csv or parquet)
    -- parameters: skip text, since date   (optional: NAME TYPE, …)
    -- epsilon: 0.5                    (optional: ε spent under differential privacy)
    SELECT a.region, COUNT(DISTINCT a.email) AS customers
    FROM input_1 a JOIN input_2 b ON a.email = b.email
    WHERE a.region <> $skip GROUP BY a.region;

A schema file (YAML) declares one input's table::

    format: csv            # or parquet
    columns:
      - {name: email, type: varchar, nullable: false}
      - {name: spend, type: double}

The query text itself is checked by the SQL parser (the Worker's checker, run here
too before deploying); these files only carry it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cleanroom.client.access import AccessFileError

DIRECTIVES = ("query", "output", "format", "parameters", "epsilon")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccessFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AccessFileError(f"{path}: cannot be read: {error}") from error


def parse_queries(text: str, *, source: str = "queries file") -> dict[str, dict[str, Any]]:
    """The spec's ``queries`` object from a queries file; AccessFileError names the line."""
    queries: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        sql = "\n".join(body).strip().removesuffix(";").strip()
        if not sql:
            raise AccessFileError(f"{source}: query {current['name']}: no SQL text")
        name = current.pop("name")
        queries[name] = {**current, "text": sql}

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        key, _, value = stripped.removeprefix("--").strip().partition(":")
        is_directive = stripped.startswith("--") and key.strip() in DIRECTIVES and _
        if is_directive and (current is None or not "".join(body).strip() or key == "query"):
            key, value = key.strip(), value.strip()
            if key == "query":
                close()
                if value in queries:
                    raise AccessFileError(f"{source}: line {number}: query {value} twice")
                current, body = {"name": value}, []
            elif current is None:
                raise AccessFileError(f"{source}: line {number}: '-- query: NAME' first")
            elif key == "parameters":
                current["parameters"] = {}
                for item in filter(None, (part.strip() for part in value.split(","))):
                    parts = item.split()
                    if len(parts) != 2:
                        raise AccessFileError(
                            f"{source}: line {number}: a parameter is NAME TYPE, got {item!r}"
                        )
                    current["parameters"][parts[0]] = parts[1]
            elif key == "epsilon":
                try:
                    current["epsilon"] = float(value)
                except ValueError:
                    raise AccessFileError(
                        f"{source}: line {number}: epsilon must be a number, got {value!r}"
                    ) from None
            else:
                current[key] = value
            continue
        if current is None:
            if stripped and not stripped.startswith("--"):
                raise AccessFileError(f"{source}: line {number}: '-- query: NAME' first")
            continue
        body.append(line)
    close()
    if not queries:
        raise AccessFileError(f"{source}: no query (start each with '-- query: NAME')")
    return queries


def load_queries(path: Path) -> dict[str, dict[str, Any]]:
    return parse_queries(_read(path), source=str(path))


def load_schema(path: Path) -> dict[str, Any]:
    """A schema file as the spec holds it (checked with the spec: unknown types refused)."""
    try:
        document = yaml.safe_load(_read(path))
    except yaml.YAMLError as error:
        raise AccessFileError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise AccessFileError(f"{path}: must be a mapping with format and columns")
    return document


def sql_section(
    *,
    rules: dict[str, Any] | None,
    adhoc: dict[str, Any] | None,
    schemas: dict[str, dict[str, Any]],
    queries: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The spec's ``sql`` object (checked when the spec is built)."""
    section: dict[str, Any] = {
        "schemas": schemas,
        "rules": _floats(rules or {}),
        "queries": queries,
    }
    if adhoc is not None:
        section["adhoc"] = adhoc
    return section


def _floats(value: Any) -> Any:
    """YAML 1.1 reads ``1e-6`` as text: numbers in the rules become numbers."""
    if isinstance(value, dict):
        return {key: _floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_floats(item) for item in value]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if any(c in value for c in ".eE") and value.strip() == value else value
    return value
