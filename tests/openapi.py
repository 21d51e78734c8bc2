"""Validation of responses against HubSpot's official OpenAPI documents (never a copy of ours)."""

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource

# Verbatim copies of HubSpot's published documents; tests/test_reference.py proves them
# identical to the project's shared reference whenever that is beside the checkout.
REFERENCE = Path(__file__).resolve().parent / "reference" / "hubspot-openapi"
SHARED = next(
    (
        parent / "shared" / "reference" / "hubspot-openapi"
        for parent in Path(__file__).resolve().parents
        if (parent / "shared" / "reference" / "hubspot-openapi").is_dir()
    ),
    None,
)


def reference_dir() -> Path:
    return REFERENCE


@cache
def document(name: str) -> dict[str, Any]:
    path = reference_dir() / f"communication-preferences-{name}.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def response_schema(name: str, method: str, path: str, status: int) -> dict[str, Any]:
    """The schema HubSpot's document `name` gives for `method path` answering `status`.

    A 207 (partial batch failure) on an operation whose document lists no 207 is held to its 200
    schema, which carries `errors` and `numErrors`; every other status without an entry is held
    to the document's `default` (the Error body).
    """
    doc = document(name)
    operation = doc["paths"][path][method.lower()]
    responses = operation["responses"]
    response = responses.get(str(status)) or (responses.get("200") if status == 207 else None) or responses["default"]
    if "$ref" in response and "content" not in response:
        response = _resolve(doc, response["$ref"])
    content = response["content"]
    media = content.get("application/json") or content.get("*/*")
    if "schema" not in media:  # an example only (v3's 2024-03-18 edition): the error is the `default` one
        return response_schema(name, method, path, 599)
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


_VERSION = re.compile(r"^/communication-preferences/([^/]+)(/.*)$")


@cache
def _templates(name: str) -> list[tuple[re.Pattern[str], str]]:
    compiled = []
    for path in document(name)["paths"]:
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path))
        compiled.append((re.compile(f"^{pattern}$"), path))
    # Literal paths before templated ones: /statuses/batch/read is not /statuses/{subscriberIdString}.
    return sorted(compiled, key=lambda item: item[1].count("{"))


def validate_exchange(method: str, path: str, status: int, body: Any) -> bool:
    """Check a response against the document of its version; False if no document covers the path."""
    match = _VERSION.match(path)
    if not match or not (reference_dir() / f"communication-preferences-{match.group(1)}.json").exists():
        return False
    # v3's operations that only its 2024-03-18 edition lists (the bulk status read, resubscribe) are held to it.
    names = [match.group(1)] + (["v3-historical-2024-03-18"] if match.group(1) == "v3" else [])
    for name in names:
        for pattern, template in _templates(name):
            if pattern.match(path) and method.lower() in document(name)["paths"][template]:
                assert_valid(name, method, template, status, body)
                return True
    return False
