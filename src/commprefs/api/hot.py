"""The hot operations, dispatched without the framework's per-request routing and dependency solving.

FastAPI tries a request against each of its ~200 routes in turn and resolves every dependency of the
route it finds, on each call: for a single-status read that was most of the request's cost (see the
README's benchmarks). The busiest operations (single-status reads and writes of v3, v4 and the dated
versions) are found here with one dictionary lookup on the path's shape and call the very endpoint
functions FastAPI registered, with the same token, scope and body checks, the same exception handlers
and the same route object (so metrics and logs name the route as before).

Only the canonical shape of each call is taken: a request with anything else (a query parameter the
fast path does not parse, a body that is not valid JSON for the model, another content type) goes to
FastAPI as it came, its body replayed, and gets exactly the answer it always got.
"""

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commprefs.api.auth import authenticate
from commprefs.api.wire import INT64_MAX
from commprefs.domain.enums import Channel
from commprefs.domain.model import TokenInfo

BASE = "/communication-preferences/"
CHANNELS = frozenset(c.value for c in Channel)

ScopeCheck = Callable[[TokenInfo], Awaitable[TokenInfo]]


class Delegate(Exception):
    """The request is not in the canonical shape: let FastAPI answer it."""


@dataclass(frozen=True)
class Hot:
    """One registered route the fast path serves, and how to call its endpoint."""

    route: APIRoute
    check: ScopeCheck
    body: type[BaseModel] | None
    param: str | None  # the path parameter's name, when the route ends in one
    query: Callable[[str], dict[str, Any]]

    async def call(self, request: Request, value: str | None, body: bytes | None) -> Response:
        kwargs = self.query(request.scope["query_string"].decode("latin-1"))
        caller = await self.check(await authenticate(request))
        if self.param is not None:
            kwargs[self.param] = value
        if self.body is not None:
            try:
                kwargs["body"] = self.body.model_validate_json(body or b"")
            except ValidationError:
                raise Delegate from None  # FastAPI words the error, from the same model
        response: Response = await self.route.endpoint(
            request=request, caller=caller, store=request.app.state.store, **kwargs
        )
        return response


def no_query(query: str) -> dict[str, Any]:
    if query:
        raise Delegate
    return {}


def status_query(query: str) -> dict[str, Any]:
    """v4's `channel` (required) and `businessUnitId` (optional), each given once and well-formed."""
    pairs = parse_qsl(query, keep_blank_values=True)
    values = dict(pairs)
    if (
        len(values) != len(pairs)
        or values.keys() - {"channel", "businessUnitId"}
        or values.get("channel") not in CHANNELS
    ):
        raise Delegate
    unit = values.get("businessUnitId")
    if unit is not None and not (unit.isascii() and unit.isdigit() and int(unit) <= INT64_MAX):
        raise Delegate
    return {"channel": Channel(values["channel"]), "businessUnitId": None if unit is None else int(unit)}


# (method, the route's path after its version) -> how its query string is read.
SHAPES: dict[tuple[str, str], Callable[[str], dict[str, Any]]] = {
    ("GET", "status/email/{emailAddress:path}"): no_query,
    ("POST", "subscribe"): no_query,
    ("POST", "unsubscribe"): no_query,
    ("POST", "resubscribe"): no_query,
    ("GET", "statuses/{subscriberIdString}"): status_query,
    ("POST", "statuses/{subscriberIdString}"): no_query,
}


def hot_routes(app: FastAPI) -> dict[tuple[str, str, str], Hot]:
    """(method, version, static path) -> the route, for every registered route of a hot shape."""
    table: dict[tuple[str, str, str], Hot] = {}
    for route in _api_routes(app.routes):
        if not route.path.startswith(BASE):
            continue
        version, _, rest = route.path[len(BASE) :].partition("/")
        for method in route.methods or ():
            query = SHAPES.get((method, rest))
            if query is None:
                continue
            static, _, param = rest.partition("{")
            checks = [d.call for d in route.dependant.dependencies if d.name == "caller"]
            assert len(checks) == 1 and checks[0] is not None, f"{route.path}: no scope check"
            body = route.body_field.field_info.annotation if route.body_field is not None else None
            assert body is None or (isinstance(body, type) and issubclass(body, BaseModel)), route.path
            table[(method, version, static)] = Hot(
                route=route,
                check=checks[0],
                body=body,
                param=param.partition("}")[0].partition(":")[0] or None,
                query=query,
            )
    return table


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, inside included routers too (FastAPI 0.12x flattens them; newer ones keep them
    as `_IncludedRouter(original_router=...)`, their routes carrying the full path all the same)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        else:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                yield from _api_routes(inner.routes)


class HotPaths:
    """ASGI middleware: serves the hot routes itself and hands every other request to `app`."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi
        self.routes = hot_routes(fastapi)

    def match(self, scope: Scope) -> tuple[Hot, str | None] | None:
        if scope["type"] != "http" or not scope["path"].startswith(BASE):
            return None
        path: str = scope["path"]
        version, _, rest = path[len(BASE) :].partition("/")
        method = scope["method"]
        hot = self.routes.get((method, version, rest))
        if hot is not None:
            return hot, None
        for static in ("status/email/", "statuses/"):
            if rest.startswith(static) and len(rest) > len(static):
                hot = self.routes.get((method, version, static))
                value = rest[len(static) :]
                if hot is not None and (static == "status/email/" or "/" not in value):
                    return hot, value
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.match(scope)
        if found is None or (found[0].body is not None and not _is_json(scope)):
            await self.app(scope, receive, send)
            return
        hot, value = found
        scope["route"] = hot.route
        request = Request(scope, receive)
        body: bytes | None = None
        try:
            if hot.body is not None:
                body = await request.body()
            response = await hot.call(request, value, body)
        except ClientDisconnect:
            return  # nobody to answer
        except Delegate:
            await self.app(scope, _replay(body, receive) if body is not None else receive, send)
            return
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)  # ours are all async
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[[Request, Any], Any] | None:
        """The app's own handler for `exc`, as FastAPI's exception middleware would pick it; None for
        errors only the generic handler knows (the server error middleware outside answers those)."""
        handlers = self.fastapi.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body, already read, handed out again first."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
