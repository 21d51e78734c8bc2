"""HubSpot-shaped error bodies, and the handlers that turn every failure into one.

Every non-2xx body is `{"status":"error","message","correlationId","category",...}`, plus
`errors[]` with `in`/`code` where a field is at fault. No failure ever shows a traceback.
"""

import logging
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from commprefs.api.responses import JSON
from commprefs.domain.errors import Conflict, DomainError, InvalidEmail, KeyReused, NotFound, RuleViolation

log = logging.getLogger("commprefs.api")

CATEGORY_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "INVALID_AUTHENTICATION",
    403: "MISSING_SCOPES",
    404: "OBJECT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE_ENTITY",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    """An error answer decided by an adapter (auth, scopes, input parsing)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        category: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category or CATEGORY_BY_STATUS.get(status, "ERROR")
        self.errors = errors
        self.extra = extra


def field_error(message: str, field: str, code: str) -> dict[str, Any]:
    return {"message": message, "in": field, "code": code}


def error_response(
    request: Request | None,
    status: int,
    message: str,
    *,
    category: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> JSON:
    correlation_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id,
        "category": category or CATEGORY_BY_STATUS.get(status, "ERROR"),
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if request_id:
        body["requestId"] = request_id
    return JSON(body, status_code=status, headers={"X-HubSpot-Correlation-Id": correlation_id})


def domain_status(exc: DomainError) -> int:
    """The HTTP status of a domain error; its category is CATEGORY_BY_STATUS of that."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, KeyReused):
        return 422
    return 400


def domain_error_response(request: Request | None, exc: DomainError) -> JSON:
    status = domain_status(exc)
    code = {
        400: "INVALID_EMAIL" if isinstance(exc, InvalidEmail) else "INVALID",
        404: "NOT_FOUND",
        409: "CONFLICT",
        422: "INVALID",
    }[status]
    if isinstance(exc, RuleViolation) and exc.field in ("legalBasis", "legalBasisExplanation"):
        code = "REQUIRED"
    errors = [field_error(exc.message, exc.field, code)] if exc.field else None
    return error_response(request, status, exc.message, errors=errors)


_CODES = {
    "missing": "REQUIRED",
    "json_invalid": "INVALID_JSON",
    "enum": "INVALID_ENUM",
    "literal_error": "INVALID_ENUM",
    "extra_forbidden": "UNKNOWN_FIELD",
}


_LOCATIONS = ("body", "query", "path", "header")


def _field_path(loc: Any) -> str:
    """Pydantic's `loc` as the field's path in the request: `inputs[3].subscriberIdString`."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def validation_errors(raw: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Pydantic's errors, as HubSpot's `errors[]` with the field in `in` and a stable `code`."""
    details = []
    for error in raw:
        path = _field_path(error.get("loc", ()))
        kind = error.get("type", "")
        where = "body" if kind == "json_invalid" or not path else path
        code = _CODES.get(kind) or ("INVALID_TYPE" if kind.endswith("_type") or "parsing" in kind else "INVALID")
        message = "Malformed JSON body" if kind == "json_invalid" else f"{where}: {error.get('msg', 'invalid')}"
        details.append(field_error(message, where, code))
    summary = "; ".join(d["message"] for d in details)
    return f"Invalid input: {summary}", details


def database_unavailable(request: Request | None) -> JSON:
    """503 for a database that is down or restarting; clients may retry after a second."""
    response = error_response(request, 503, "The database is unavailable; retry shortly.")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with a request, as the API and the pages both answer it: the status, and for the
    database's failures the driver error's name (logged, never its message)."""

    status: int
    error: Exception
    cause: str = ""
    unexpected: bool = False


def classify(exc: Exception) -> Failure:
    """The one classification of a failure: the caller's fault (400, 404, 409, 422), the database down or
    restarting (503: retry shortly), a database error (500) or a bug (500, unexpected)."""
    if isinstance(exc, DomainError):
        return Failure(domain_status(exc), exc)
    if isinstance(exc, RequestValidationError):
        return Failure(400, exc)
    if isinstance(exc, psycopg.OperationalError | sqlite3.OperationalError):
        # The driver's own error, where a statement goes to it directly (the writer's savepoints).
        return Failure(503, exc, type(exc).__name__)
    if isinstance(exc, DBAPIError):
        cause = type(exc.orig).__name__ if exc.orig else "unknown"
        # A lost connection (InterfaceError and the like) or a database that is down: retry shortly.
        return Failure(503 if isinstance(exc, OperationalError) or exc.connection_invalidated else 500, exc, cause)
    return Failure(500, exc, type(exc).__name__, unexpected=True)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSON:
        return error_response(request, exc.status, exc.message, category=exc.category, errors=exc.errors, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSON:
        return domain_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSON:
        message, details = validation_errors(list(exc.errors()))
        return error_response(request, 400, message, errors=details)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSON:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404:
            message = f"No route for {request.method} {request.url.path}"
        return error_response(request, exc.status_code, message)

    async def _database(request: Request, exc: Exception) -> JSON:
        failure = classify(exc)
        if failure.status == 503:
            log.warning("database unavailable: %s", failure.cause)
            return database_unavailable(request)
        log.error("database error: %s", failure.cause)
        return error_response(request, 500, "Internal error")

    for database_error in (DBAPIError, psycopg.OperationalError, sqlite3.OperationalError):
        app.add_exception_handler(database_error, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        # Logged once, by RequestMiddleware, which also catches the re-raise that follows this.
        return error_response(request, 500, "Internal error")
