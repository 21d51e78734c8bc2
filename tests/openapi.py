"""Validation of responses against HubSpot's official OpenAPI documents (never a copy of ours)."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource

# Verbatim copies of HubSpot's published documents; tests/test_reference.py proves them
# identical to the project's shared reference whenever that is beside the checkout.
REFERENCE = Path(__file__).resolve().parent / "reference" / "hubspot-openapi"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hubspot-openapi"


def reference_dir() -> Path:
    return REFERENCE


@cache
def document(name: str) -> dict[str, Any]:
    path = reference_dir() / f"communication-preferences-{name}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def response_schema(name: str, method: str, path: str, status: int) -> dict[str, Any]:
    """The schema HubSpot's document `name` gives for `method path` answering `status`."""
    doc = document(name)
    operation = doc["paths"][path][method.lower()]
    response = operation["responses"].get(str(status)) or operation["responses"]["default"]
    if "$ref" in response and "content" not in response:
        response = _resolve(doc, response["$ref"])
    content = response["content"]
    media = content.get("application/json") or content.get("*/*")
    return media["schema"]  # type: ignore[no-any-return]


def _resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def assert_valid(name: str, method: str, path: str, status: int, body: Any) -> None:
    """Fail with the validator's message unless `body` matches HubSpot's schema."""
    doc = document(name)
    schema = response_schema(name, method, path, status)
    registry: Registry = Registry().with_resource("", Resource.opaque(doc))  # type: ignore[call-arg]
    validator = OAS30Validator(
        {**schema, "components": doc["components"]}, registry=registry, format_checker=OAS30Validator.FORMAT_CHECKER
    )
    try:
        validator.validate(body)
    except ValidationError as exc:
        raise AssertionError(
            f"{method} {path} {status} does not match HubSpot's {name} document: {exc.message}"
        ) from exc
