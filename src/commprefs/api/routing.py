"""Routing: every request finds its route through one index of the app's routes, and most routes are served
by a direct call compiled from their FastAPI declaration.

Routes are declared once, as FastAPI routes (path, parameters, body model, scope dependency, summary): that
declaration builds the OpenAPI document and is the only table of paths. At start-up it is compiled twice over:
- `RouteIndex`: a tree of the paths' static segments. A request walks it segment by segment and tries only the
  routes whose static start matches its path, in declaration order, with the route's own `matches`; the cost
  does not grow with the number of routes (FastAPI tries every route in turn: the 200th cost 600 µs).
- `Operation`: how a route is called. A route whose parameters are path and query parameters, one JSON body
  model, the request and async dependencies of the same kinds (the token and scope checks) is `lean`: its
  dependencies, parameters and body are resolved by a plan made once, with FastAPI's own validators of those
  parameters, and its endpoint is called directly. Anything else (forms, file responses, status codes set on
  the route, ...) goes through the route's own FastAPI handler. A lean route hands a request to that handler
  too when its body is not JSON or does not validate, so FastAPI words every body error as it always did.
"""

import copy
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import params
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_params_to_args
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# -- the index --------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    routes: list[tuple[int, BaseRoute]] = field(default_factory=list)
    children: dict[str, "_Node"] = field(default_factory=dict)
    # The routes of this node and of every node above it, in declaration order: a path that ends its walk
    # here may go to any of them.
    candidates: list[BaseRoute] = field(default_factory=list)


def static_segments(path: str) -> list[str]:
    """The segments of a route's path before its first parameter (`/a/b/{c}/d` -> a, b)."""
    segments = path.split("/")[1:]
    for n, segment in enumerate(segments):
        if "{" in segment:
            return segments[:n]
    return segments


class RouteIndex:
    """The routes by the static start of their paths; `candidates` keeps their declaration order."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.root = _Node()
        self.size = 0
        routes = list(routes)
        for order, route in enumerate(routes):
            node = self.root
            for segment in static_segments(getattr(route, "path", "") or ""):
                node = node.children.setdefault(segment, _Node())
            node.routes.append((order, route))
            self.size += 1
        pending = [(self.root, list[tuple[int, BaseRoute]]())]
        while pending:
            node, above = pending.pop()
            mine = sorted(above + node.routes, key=lambda entry: entry[0])
            node.candidates = [route for _, route in mine]
            pending += ((child, mine) for child in node.children.values())
        # A path with no parameter whose route is the first candidate for it (no route declared before it
        # matches it too) goes straight to that route when the route takes the method.
        self.exact: dict[str, Route] = {}
        for path in {route.path for route in routes if isinstance(route, Route) and "{" not in route.path}:
            first = self.candidates(path)[0]
            if isinstance(first, Route) and first.path == path:
                self.exact[path] = first

    def candidates(self, path: str) -> list[BaseRoute]:
        node = self.root
        for segment in path.split("/")[1:]:
            child = node.children.get(segment)
            if child is None:
                break
            node = child
        return node.candidates

    def match(self, scope: Scope, path: str | None = None) -> tuple[BaseRoute, Match, Scope] | None:
        """The route a request goes to, as Starlette's router picks it: the first full match, else the first
        partial one (the path matches, the method does not: a 405)."""
        if path is not None:
            scope = {**scope, "path": path}
        route_path = _route_path(scope)
        exact = self.exact.get(route_path)
        if exact is not None and (exact.methods is None or scope["method"] in exact.methods):
            return exact, Match.FULL, {"endpoint": exact.endpoint, "path_params": {}, "route": exact}
        partial: tuple[BaseRoute, Match, Scope] | None = None
        for route in self.candidates(route_path):
            matched, child_scope = _matches(route, scope, route_path)
            if matched is Match.FULL:
                return route, matched, child_scope
            if matched is Match.PARTIAL and partial is None:
                partial = (route, matched, child_scope)
        return partial


def _route_path(scope: Scope) -> str:
    """The path the routes see: without the root path a proxy mounts the app under (as Starlette's routers)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


def _matches(route: BaseRoute, scope: Scope, route_path: str) -> tuple[Match, Scope]:
    """`route.matches(scope)` for an HTTP request; a plain route's regular expression is tried directly (FastAPI's
    `matches` first looks for included-router contexts, which this app's flat routes never have)."""
    if not isinstance(route, Route):
        return route.matches(scope)
    found = route.path_regex.match(route_path)
    if found is None:
        return Match.NONE, {}
    convertors = route.param_convertors
    params = {name: convertors[name].convert(value) for name, value in found.groupdict().items()}
    child_scope = {"endpoint": route.endpoint, "path_params": params, "route": route}
    if route.methods and scope["method"] not in route.methods:
        return Match.PARTIAL, child_scope
    return Match.FULL, child_scope


# -- how a route is called ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    """One async dependency of a lean route, with its own dependencies (resolved once per request)."""

    call: Callable[..., Awaitable[Any]]
    request_name: str | None
    needs: tuple[tuple[str, "Dependency"], ...]
    use_cache: bool

    async def resolve(self, request: Request, cache: dict[Any, Any]) -> Any:
        if self.use_cache and self.call in cache:
            return cache[self.call]
        kwargs = {name: await dependency.resolve(request, cache) for name, dependency in self.needs}
        if self.request_name is not None:
            kwargs[self.request_name] = request
        value = await self.call(**kwargs)
        cache[self.call] = value
        return value


def _only_request_and_dependencies(dependant: Dependant) -> bool:
    return not (
        dependant.header_params
        or dependant.cookie_params
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.security_scopes_param_name
    )


def _dependency(dependant: Dependant) -> Dependency | None:
    """The plan of a dependency that takes only the request and other such dependencies; None otherwise."""
    call = dependant.call
    if (
        call is None
        or not inspect.iscoroutinefunction(call)
        or dependant.path_params
        or dependant.query_params
        or dependant.body_params
        or not _only_request_and_dependencies(dependant)
    ):
        return None
    needs = _dependencies(dependant.dependencies)
    return None if needs is None else Dependency(call, dependant.request_param_name, needs, dependant.use_cache)


def _dependencies(dependants: Sequence[Dependant]) -> tuple[tuple[str, Dependency], ...] | None:
    planned = []
    for dependant in dependants:
        plan = _dependency(dependant)
        if plan is None or dependant.name is None:
            return None
        planned.append((dependant.name, plan))
    return tuple(planned)


_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One path or query parameter of a lean route: where it is read and FastAPI's own field for it. FastAPI
    works out, on every request, whether a field is a list; here that is known once."""

    field: ModelField
    key: str
    many: bool
    loc: tuple[str, str]
    required: bool
    default: Any

    @classmethod
    def of(cls, field: ModelField) -> "Param | None":
        info = field.field_info
        if info.validation_alias is not None or not isinstance(info, params.Param):
            return None  # alias choices and paths, or a parameter model: FastAPI's handler reads those
        return cls(
            field,
            field.alias,
            info.in_ is not params.ParamTypes.path and field_annotation_is_sequence(info.annotation),
            (info.in_.value, field.alias),
            info.is_required(),
            info.default,
        )

    def read(self, received: Any, values: dict[str, Any], errors: list[Any]) -> None:
        value = received.getlist(self.key) if self.many else received.get(self.key, _MISSING)
        if value is _MISSING or value is None or (self.many and not value):
            if self.required:
                errors.extend(request_params_to_args([self.field], {})[1])  # FastAPI's own "missing" error
                return
            if not self.field.field_info.validate_default:
                values[self.field.name] = copy.deepcopy(self.default)
                return
            value = copy.deepcopy(self.default)
        validated, problems = self.field.validate(value, values, loc=self.loc)
        if problems:
            errors.extend(problems)
        else:
            values[self.field.name] = validated


def _params(fields: Sequence[ModelField]) -> tuple[Param, ...] | None:
    planned = tuple(Param.of(field) for field in fields)
    return None if any(p is None for p in planned) else planned  # type: ignore[return-value]


class Operation:
    """A route and how it is served: `lean` (see the module's docstring) or through FastAPI's handler."""

    def __init__(self, route: BaseRoute) -> None:
        self.route = route
        # FastAPI's own handler, with the exit stack its handlers expect (files, dependencies with yield).
        self.framework: ASGIApp = AsyncExitStackMiddleware(route.handle)
        self.lean = False
        if isinstance(route, APIRoute):
            self._plan(route)

    def _plan(self, route: APIRoute) -> None:
        dependant = route.dependant
        needs = _dependencies(dependant.dependencies)
        body_model = _body_model(route)
        path_params, query_params = _params(dependant.path_params), _params(dependant.query_params)
        if (
            needs is None
            or path_params is None
            or query_params is None
            # A route class of its own (the contact pages') has its own handler: it keeps it.
            or type(route).get_route_handler is not APIRoute.get_route_handler
            or not inspect.iscoroutinefunction(route.endpoint)
            or not _only_request_and_dependencies(dependant)
            or (dependant.body_params and body_model is None)
            or route.status_code is not None
            or route.response_model not in (None, Any)
        ):
            return
        self.lean = True
        self.endpoint = route.endpoint
        # What FastAPI answers an endpoint's plain value with (no response model: its JSON as is).
        response_class = route.response_class
        self.response_class: type[Response] = (
            response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
        )
        self.needs = needs
        self.request_name = dependant.request_param_name
        self.path_params = path_params
        self.query_params = query_params
        self.body_model = body_model
        self.body_name = dependant.body_params[0].name if body_model is not None else None
        # Nothing to resolve (health checks): the endpoint is called as it is.
        self.bare = not (needs or path_params or query_params or body_model or self.request_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.lean:
            await self.framework(scope, receive, send)
            return
        if self.bare:
            await self._respond(await self.endpoint(), scope, receive, send)
            return
        request = Request(scope, receive)
        kwargs: dict[str, Any] = {}
        if self.body_model is not None:
            if not _is_json(scope):
                await self.framework(scope, receive, send)
                return
            body = await request.body()
            try:
                kwargs[self.body_name or "body"] = self.body_model.model_validate_json(body)
            except ValidationError:  # FastAPI words the error, from the same model
                await self.framework(scope, _replay(body, receive), send)
                return
        cache: dict[Any, Any] = {}
        for name, dependency in self.needs:
            kwargs[name] = await dependency.resolve(request, cache)
        if self.request_name is not None:
            kwargs[self.request_name] = request
        errors: list[Any] = []
        values: dict[str, Any] = {}
        for param in self.path_params:
            param.read(scope["path_params"], values, errors)
        if self.query_params:
            query = QueryParams(scope["query_string"])
            for param in self.query_params:
                param.read(query, values, errors)
        if errors:
            raise RequestValidationError(errors)
        kwargs.update(values)
        await self._respond(await self.endpoint(**kwargs), scope, receive, send)

    async def _respond(self, result: Any, scope: Scope, receive: Receive, send: Send) -> None:
        response = result if isinstance(result, Response) else self.response_class(jsonable_encoder(result))
        await response(scope, receive, send)


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    """The route's JSON body model, when its body is exactly one (not embedded) pydantic model."""
    body_params = route.dependant.body_params
    if len(body_params) != 1 or route.body_field is None or getattr(route.body_field.field_info, "embed", False):
        return None
    model = route.body_field.field_info.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


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


class Router:
    """The index and the operations of a route list, built again when routes are added."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.index = RouteIndex(routes)
        self.operations = {id(route): Operation(route) for route in routes}

    def operation(self, route: BaseRoute) -> Operation:
        return self.operations[id(route)]
