"""The one request path: request id, body cap, routing (api/routing.py), HubSpot-shaped errors, metrics and the
access log, in one ASGI callable with no layers of middleware around it.

Every HTTP request comes here; lifespan events go to FastAPI. Errors are answered by the app's own exception
handlers (api/errors.py), picked by the exception's class as FastAPI would pick them; anything they do not
know is logged once and answered with HubSpot's 500 body on a connection that stays open.

The access log names the route template (`/status/email/{emailAddress}`), not the raw path, so no email
address reaches the logs unless the operator sets COMMPREFS_LOG_PII.
"""

import asyncio
import inspect
import logging
import random
import time
import traceback
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.datastructures import URL
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from commprefs.api.errors import error_response
from commprefs.api.ratelimit import STATE_KEY as RATE_LIMIT_HEADERS
from commprefs.api.routing import Router
from commprefs.logs import AccessLog

access_log = logging.getLogger("commprefs.access")
log = logging.getLogger("commprefs.api")

REQUESTS = Counter("commprefs_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "commprefs_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
_MAX_SERIES = 10_000
# Request ids: not uuid4, whose os.urandom call was a tenth of a hot request's time; an id needs to be unique,
# not unguessable. A generator of its own (seeded from os.urandom in each process) leaves the random module's
# shared state to others (Hypothesis warns when a server in the test's process draws from it).
_REQUEST_IDS = random.Random()


class Pipeline:
    def __init__(
        self, app: FastAPI, *, max_body_bytes: int, log_pii: bool, large_bodies: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.log_pii = log_pii
        # Paths that take files (imports) have their own, larger cap.
        self.large_bodies = large_bodies or {}
        self._router: Router | None = None
        self.access_log = AccessLog(access_log)
        # (method, route, status, seconds, request id, logged path) of each request answered in this turn of the
        # event loop.
        self._answered: list[tuple[str, str, int, float, str, str]] = []
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    @property
    def router(self) -> Router:
        """Built on the first request, and again if routes were added since (tests add some)."""
        routes = self.app.router.routes
        if self._router is None or self._router.index.size != len(routes):
            self._router = Router(routes)
        return self._router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = f"{_REQUEST_IDS.getrandbits(128):032x}"
        scope["app"] = self.app
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

        declared, has_body = _declared_body(scope)
        limit = self.large_bodies.get(scope["path"], self.max_body_bytes) if has_body else 0
        if declared is not None and declared > limit:
            await error_response(None, 413, f"Request body exceeds {limit} bytes")(scope, receive, send_with_id)
        else:
            try:
                await self._dispatch(scope, self._capped(receive, limit) if has_body else receive, send_with_id)
            except ClientDisconnect:
                status = 499  # the client went away before its body arrived: nobody to answer
            except Exception as exc:
                if started_response:  # too late to answer: the error is logged, once
                    log_unhandled(exc, request_id, self.log_pii)
                else:
                    await (await self._handled(scope, receive, exc))(scope, receive, send_with_id)
        self._observe(scope, request_id, status, time.perf_counter() - started)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        found = router.index.match(scope)
        if found is None:
            await self._not_found(scope, receive, send)
            return
        route, matched, child_scope = found
        scope.update(child_scope)
        operation = router.operation(route)
        if matched is Match.FULL:
            await operation(scope, receive, send)
        else:  # the path is the route's, the method is not: the route's own handler answers 405
            await operation.framework(scope, receive, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A 404, or a redirect to the same path with or without its trailing slash where that one exists."""
        path: str = scope["path"]
        if path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            if self.router.index.match(scope, other) is not None:
                await RedirectResponse(url=str(URL(scope={**scope, "path": other})))(scope, receive, send)
                return
        raise HTTPException(404)

    async def _handled(self, scope: Scope, receive: Receive, exc: Exception) -> Response:
        """The app's answer to `exc`: its exception handler's, picked as FastAPI picks it, else a logged 500."""
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = handlers.get(cls)
            if handler is not None:
                answer = handler(Request(scope, receive), exc)  # ours are all async
                assert inspect.isawaitable(answer)
                response: Response = await answer
                return response
        log_unhandled(exc, scope["state"]["request_id"], self.log_pii)
        return error_response(None, 500, "Internal error")

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
        """Keep the request's numbers for `flush`, which the end of this turn of the event loop runs."""
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        path = scope["path"] if self.log_pii else template
        if not self._answered:
            asyncio.get_running_loop().call_soon(self.flush)
        self._answered.append((scope["method"], template, status, seconds, request_id, path))

    def flush(self) -> None:
        """The metrics and access lines of the requests answered since the last call, all at once: one log
        record for their lines, one increment of each counter (per request, the standard library's record and
        prometheus_client's locks cost a fifth of a /healthz call)."""
        answered, self._answered = self._answered, []
        counts: dict[tuple[str, str, int], int] = {}
        for method, template, status, seconds, _, _ in answered:
            counts[method, template, status] = counts.get((method, template, status), 0) + 1
            self._histogram(method, template).observe(seconds)
        for (method, template, status), count in counts.items():
            self._counter(method, template, status).inc(count)
        if self.access_log.enabled():
            self.access_log.write(
                {"request_id": rid, "method": method, "path": path, "status": status, "ms": round(seconds * 1000, 2)}
                for method, _, status, seconds, rid, path in answered
            )

    def _counter(self, method: str, template: str, status: int) -> Any:
        """prometheus_client's labels() takes a lock and hashes its arguments: each series is looked up once."""
        counter = self._counters.get((method, template, status))
        if counter is None:
            if len(self._counters) >= _MAX_SERIES:
                self._counters.clear()
            counter = self._counters[(method, template, status)] = REQUESTS.labels(method, template, str(status))
        return counter

    def _histogram(self, method: str, template: str) -> Any:
        histogram = self._histograms.get((method, template))
        if histogram is None:
            if len(self._histograms) >= _MAX_SERIES:
                self._histograms.clear()
            histogram = self._histograms[(method, template)] = LATENCY.labels(method, template)
        return histogram


def log_unhandled(exc: Exception, request_id: str, log_pii: bool) -> None:
    """The error's type and stack; its message (which may hold an address) only with log_pii."""
    if log_pii:
        log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
        return
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled error", extra={"request_id": request_id, "error": type(exc).__name__, "stack": frames})


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """The body's declared length, and whether the request has a body at all: without a Content-Length or a
    Transfer-Encoding it has none (RFC 9112, 6.3), and nothing it could send is read."""
    length: int | None = None
    has_body = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            has_body = True
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            has_body = True
    return length, has_body
