"""Per-request plumbing as one pure ASGI middleware: request id, body cap, access log, metrics, and
the rate limit's headers (api/ratelimit.py leaves them in the request's state).

The access log names the route template (`/status/email/{emailAddress}`), not the raw path,
so no email address reaches the logs unless the operator sets COMMPREFS_LOG_PII.
"""

import logging
import random
import time
import traceback
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commprefs.api.errors import error_response
from commprefs.api.ratelimit import STATE_KEY as RATE_LIMIT_HEADERS

access_log = logging.getLogger("commprefs.access")
log = logging.getLogger("commprefs.api")

REQUESTS = Counter("commprefs_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "commprefs_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class RequestMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, log_pii: bool, large_bodies: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.log_pii = log_pii
        # Paths that take files (imports) have their own, larger cap.
        self.large_bodies = large_bodies or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # Not uuid4: its os.urandom call was a tenth of a hot request's time. A request id needs to be
        # unique, not unguessable; the random module is seeded from os.urandom in each process.
        request_id = f"{random.getrandbits(128):032x}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-request-id", request_id.encode()))
                limits = state.get(RATE_LIMIT_HEADERS)
                if limits:
                    headers.extend(limits)
            await send(message)

        declared = _content_length(scope)
        limit = self.large_bodies.get(scope["path"], self.max_body_bytes)
        if declared is not None and declared > limit:
            response = error_response(None, 413, f"Request body exceeds {limit} bytes")
            await response(scope, receive, send_with_id)
        else:
            try:
                await self.app(scope, self._capped(receive, limit), send_with_id)
            except Exception as exc:
                # Starlette has already answered with our 500 body if it could; it re-raises so that
                # servers log it. Log it once here, answer if nobody did, and keep the connection.
                log_unhandled(exc, request_id, self.log_pii)
                if not started_response:
                    await error_response(None, 500, "Internal error")(scope, receive, send_with_id)
                status = 500
        self._observe(scope, request_id, status, time.perf_counter() - started)

    def _capped(self, receive: Receive, limit: int) -> Receive:
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"Request body exceeds {limit} bytes")
            return message

        return capped_receive

    def _observe(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        REQUESTS.labels(method, template, str(status)).inc()
        LATENCY.labels(method, template).observe(seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": scope["path"] if self.log_pii else template,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                },
            )


def log_unhandled(exc: Exception, request_id: str, log_pii: bool) -> None:
    """The error's type and stack; its message (which may hold an address) only with log_pii."""
    if log_pii:
        log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
        return
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled error", extra={"request_id": request_id, "error": type(exc).__name__, "stack": frames})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
