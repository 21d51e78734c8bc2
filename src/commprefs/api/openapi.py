"""The served OpenAPI document: FastAPI's, with the answers commprefs actually gives.

FastAPI documents every operation as 200 or 422 (its validation error). commprefs never answers 422:
invalid input is a 400 in HubSpot's error shape, and so are 401, 403, 404, 409, 413, 429 and 503. Each
operation therefore documents 400 and a `default` response with HubSpot's `Error` schema (as HubSpot's
own documents do), and v4's batches document 207, their answer when some inputs failed.
"""

import json
from typing import Any

from fastapi import FastAPI

ERROR_REF = {"$ref": "#/components/schemas/Error"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
# HubSpot's Error and ErrorDetail, as their documents define them (tests/reference/hubspot-openapi).
ERROR_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["category", "correlationId", "message"],
        "properties": {
            "status": {"type": "string", "description": "Always `error`."},
            "message": {"type": "string", "description": "What went wrong, and what to do about it."},
            "correlationId": {"type": "string", "format": "uuid", "description": "Quote it in reports."},
            "category": {"type": "string", "description": "e.g. VALIDATION_ERROR, OBJECT_NOT_FOUND, RATE_LIMITS."},
            "subCategory": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
            "context": {"type": "object", "additionalProperties": _STRINGS},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "ErrorDetail": {
        "type": "object",
        "required": ["message"],
        "properties": {
            "message": {"type": "string"},
            "in": {"type": "string", "description": "The field or parameter at fault."},
            "code": {"type": "string"},
            "subCategory": {"type": "string"},
            "context": {"type": "object", "additionalProperties": _STRINGS},
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def with_hubspot_errors(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with FastAPI's 422 replaced by HubSpot-shaped error answers (in place; returned)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(ERROR_SCHEMAS)
    for path, item in document.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            had_validation = responses.pop("422", None) is not None
            if had_validation or operation.get("parameters") or operation.get("requestBody"):
                responses.setdefault("400", _error("Invalid input: `errors` names each field at fault."))
            responses.setdefault("default", _error("An error, in HubSpot's shape (401, 403, 404, 429, 503, ...)."))
            if "/statuses/batch/" in path and "200" in responses:
                responses.setdefault("207", {**responses["200"], "description": "Some inputs failed: see `errors`."})
    if "HTTPValidationError" not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document


def install(app: FastAPI) -> None:
    """Serve FastAPI's document with HubSpot's error answers, built once."""
    fastapi_document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_hubspot_errors(fastapi_document())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
