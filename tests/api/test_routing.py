"""The request path's routing: the prefix tree finds what FastAPI's own router found, and the routes that
should be called directly are."""

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from commprefs.api.routing import RouteIndex, Router, static_segments
from commprefs.app import App, create_app
from commprefs.config import Settings
from tests.conftest import Server


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    url = f"sqlite:///{tmp_path_factory.mktemp('routing') / 'routing.db'}"
    return create_app(Settings(database_url=url, demo=False))


def test_static_segments_stop_at_the_first_parameter() -> None:
    assert static_segments("/communication-preferences/v4/statuses/{subscriberIdString}") == [
        "communication-preferences",
        "v4",
        "statuses",
    ]
    assert static_segments("/a/b/x-{id}/c") == ["a", "b"]
    assert static_segments("/healthz") == ["healthz"]


def scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}


def starlette_match(routes: list[object], method: str, path: str) -> tuple[object, Match] | None:
    """What Starlette's router picks: each route in turn, the first full match, else the first partial."""
    partial = None
    for route in routes:
        matched, _ = route.matches(scope(method, path))  # type: ignore[attr-defined]
        if matched is Match.FULL:
            return route, matched
        if matched is Match.PARTIAL and partial is None:
            partial = (route, matched)
    return partial


REQUESTS = [
    ("GET", "/healthz"),
    ("GET", "/communication-preferences/v4/statuses/jane@example.com"),
    ("POST", "/communication-preferences/v4/statuses/jane@example.com"),
    ("POST", "/communication-preferences/v4/statuses/batch/read"),
    ("GET", "/communication-preferences/v4/statuses/batch/read"),  # the path matches, not the method: 405
    ("POST", "/communication-preferences/v4/statuses/jane@example.com/unsubscribe-all"),
    ("GET", "/communication-preferences/v3/status/email/a/b@example.com"),  # {emailAddress:path}
    ("GET", "/communication-preferences/2025-09/status/email/jane@example.com"),
    ("GET", "/communication-preferences/2026-03/status/email/jane@example.com"),  # 2026-03 has no v3 shape
    ("DELETE", "/commprefs/v1/webhooks/ep_1"),
    ("GET", "/preferences/1/manage/token"),
    ("GET", "/preferences/static/style.css"),
    ("GET", "/nowhere"),
    ("GET", "/communication-preferences/v9/definitions"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
def test_the_prefix_tree_picks_what_starlettes_router_picks(app: FastAPI, method: str, path: str) -> None:
    routes = list(app.router.routes)
    found = RouteIndex(routes).match(scope(method, path))
    expected = starlette_match(routes, method, path)
    assert ((found[0], found[1]) if found else None) == expected


def test_a_route_declared_earlier_wins_over_a_later_one() -> None:
    fastapi = FastAPI()

    @fastapi.get("/items/{name}")
    async def any_item(name: str) -> None: ...

    @fastapi.get("/items/special")
    async def special() -> None: ...

    found = RouteIndex(fastapi.router.routes).match(scope("GET", "/items/special"))
    assert found is not None and getattr(found[0], "name", None) == "any_item"


def test_the_api_operations_are_called_directly_and_the_pages_by_their_own_handler(app: FastAPI) -> None:
    router = Router(app.router.routes)
    lean = {
        (method, route.path_format)  # as the document names it: {emailAddress}, not {emailAddress:path}
        for route in app.router.routes
        if isinstance(route, APIRoute) and router.operation(route).lean
        for method in route.methods
    }
    for version in ("v3", "v4", "2025-09", "2026-03", "2026-09"):
        base = f"/communication-preferences/{version}"
        for method, path in [("GET", "/definitions"), ("POST", "/statuses/batch/write")]:
            if version != "v3" or path == "/definitions":
                assert (method, base + path) in lean
    assert ("GET", "/communication-preferences/v4/statuses/{subscriberIdString}") in lean
    assert ("GET", "/communication-preferences/v3/status/email/{emailAddress}") in lean
    assert ("POST", "/communication-preferences/v3/unsubscribe") in lean
    assert ("GET", "/healthz") in lean
    # A route class of its own keeps its handler (the pages answer errors with pages); a status code set
    # on the route is FastAPI's to apply.
    assert not any(path.startswith("/preferences/") for _, path in lean)
    assert ("POST", "/commprefs/v1/webhooks") not in lean
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if "201" not in operations[method]["responses"]
        and "202" not in operations[method]["responses"]
        and "204" not in operations[method]["responses"]
    }
    assert documented - lean == set(), "every documented operation without a status code of its own is lean"


def test_404_405_and_trailing_slashes_over_http(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        missing = client.get("/communication-preferences/v4/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["category"] == "OBJECT_NOT_FOUND"
        assert missing.json()["message"] == "No route for GET /communication-preferences/v4/nothing-here"
        wrong = client.get("/communication-preferences/v4/statuses/batch/read")
        assert wrong.status_code == 405
        assert wrong.json()["status"] == "error"
        # A method the path's routes do not take is a 405, never the handler of another method.
        for method, path in [("DELETE", "/communication-preferences/v4/statuses/a@example.com"), ("PUT", "/healthz")]:
            refused = client.request(method, path, headers={"Authorization": "Bearer nothing"})
            assert refused.status_code == 405, (method, path)
            assert refused.json()["category"] == "METHOD_NOT_ALLOWED"
        slash = client.get("/healthz/")
        assert slash.status_code == 307
        assert slash.headers["location"].endswith("/healthz")


def test_a_client_that_goes_away_before_its_body_gets_no_answer_and_logs_no_error(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[object] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: object) -> None:
        sent.append(message)

    request = {
        "type": "http",
        "method": "POST",
        "path": "/communication-preferences/v4/statuses/a@example.com",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")],
    }
    with caplog.at_level(logging.ERROR):
        asyncio.run(app(request, receive, send))
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
