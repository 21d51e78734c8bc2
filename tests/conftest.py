"""Shared fixtures: a real server on a free port for each store, and a fresh portal per test.

SQLite always runs; PostgreSQL runs when COMMPREFS_TEST_DATABASE_URL is set (`.ci/run` sets
it). Each test session creates its own PostgreSQL database and drops it afterwards.
"""

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from commprefs.app import create_app
from commprefs.clock import now_ms
from commprefs.config import Settings
from commprefs.domain.enums import Scope
from commprefs.store import Store
from commprefs.tenancy import setup as tenancy
from tests.openapi import validate_exchange

pytest_plugins = ["pytester"]

PG_ENV = "COMMPREFS_TEST_DATABASE_URL"
STORES = ["sqlite", "postgresql"]
# The test servers' link expiry, so that tests can present a link signed longer ago than this.
LINK_MAX_AGE_DAYS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this run; dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set")
    url = make_url(base)
    name = f"commprefs_test_{secrets.token_hex(6)}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'commprefs.db'}"
    else:
        with postgres_database() as url:
            yield url


@dataclass
class Server:
    """A running commprefs server and the store behind it."""

    kind: str
    base_url: str
    store: Store


@contextmanager
def serve_app(app: Any, start_timeout: float = 15.0) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free port until the block ends; yields its base URL. Fails
    when it has not started within `start_timeout` seconds."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"test server did not start within {start_timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def run_server(url: str, kind: str, cache_seconds: float = 2.0, **settings_: object) -> Iterator[Server]:
    """A server on `url`; cross-process tests (the CLI changing the database) pass cache_seconds=0.
    `settings_` overrides settings (e.g. smtp_host)."""
    store = Store(url, cache_seconds)
    store.migrate()
    options: dict[str, object] = {"token_cache_seconds": 0.0, "demo": False, "link_max_age_days": LINK_MAX_AGE_DAYS}
    options.update(settings_)
    settings = Settings(database_url=url, **options)  # type: ignore[arg-type]
    try:
        with serve_app(create_app(settings, store)) as base_url:
            yield Server(kind, base_url, store)
    finally:
        store.close()


@pytest.fixture(scope="session", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server over HTTP, once on SQLite and once on PostgreSQL."""
    with (
        database_url(request.param, tmp_path_factory.mktemp(request.param)) as url,
        run_server(url, request.param) as srv,
    ):
        yield srv


def check_contract(response: httpx.Response) -> None:
    response.read()
    if response.headers.get("content-type", "").startswith("application/json"):
        validate_exchange(response.request.method, response.request.url.path, response.status_code, response.json())


@dataclass
class PortalFixture:
    """A fresh portal with HubSpot's three default definitions and a token with every scope."""

    id: int
    token: str
    server: Server
    definitions: dict[str, int] = field(default_factory=dict)
    _clients: list[httpx.Client] = field(default_factory=list)

    @property
    def marketing(self) -> int:
        return self.definitions["Marketing Information"]

    def client(self, token: str | None = None) -> httpx.Client:
        """A client whose every response is checked against HubSpot's document for its path."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        client = httpx.Client(
            base_url=self.server.base_url, headers=headers, timeout=30, event_hooks={"response": [check_contract]}
        )
        self._clients.append(client)
        return client

    def token_with(self, *scopes: Scope) -> str:
        with self.server.store.transaction() as tx:
            _, secret = tenancy.create_token(tx, self.id, scopes, "test", now_ms())
        return secret

    def events(self, address: str | None = None) -> list[dict[str, object]]:
        rows = self.server.store.read(lambda tx: tx.feed.list_events(self.id, address))
        return [dict(r._mapping) for r in rows]

    def update(self, **settings: object) -> None:
        with self.server.store.transaction() as tx:
            tenancy.update_portal(tx, self.id, **settings)  # type: ignore[arg-type]


def make_portal(server: Server, *, gdpr: bool = False) -> PortalFixture:
    with server.store.transaction() as tx:
        created = tenancy.create_portal(tx, "Test portal", gdpr_enabled=gdpr, now=now_ms())
        _, secret = tenancy.create_token(tx, created.id, list(Scope), "test", now_ms())
        definitions = {d.name: d.id for d in tx.portals.list_definitions(created.id)}
    return PortalFixture(created.id, secret, server, definitions)


@pytest.fixture
def portal(server: Server) -> Iterator[PortalFixture]:
    made = make_portal(server)
    yield made
    for client in made._clients:
        client.close()


@pytest.fixture
def api(portal: PortalFixture) -> httpx.Client:
    """An HTTP client for `portal`, authenticated with its all-scopes token."""
    return portal.client()
