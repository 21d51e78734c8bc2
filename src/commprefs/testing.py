"""A pytest plugin: a real commprefs server standing in for HubSpot in other projects' tests.

Registered through the `pytest11` entry point, so installing commprefs is enough: a test asks for
`commprefs_server` and gets a fresh portal on a `commprefs serve` process started once per session.
pytest loads this module in every run of a project that has commprefs installed, so module-level
imports stay in the standard library; the service's own modules load only when a fixture is used.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    import httpx

    from commprefs.services import Services

DATABASE_URL_OPTION = "commprefs_database_url"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0
MARKETING = "Marketing Information"
V4_STATUSES = "/communication-preferences/v4/statuses"


def pytest_addoption(parser: pytest.Parser) -> None:
    help_ = (
        "Database for commprefs_server, e.g. postgresql://user@host/db: migrated, never created nor dropped "
        "(default: a new SQLite file per session)."
    )
    parser.addoption("--commprefs-database-url", dest=DATABASE_URL_OPTION, default=None, help=help_)
    parser.addini(DATABASE_URL_OPTION, help_)


class CommprefsApiError(Exception):
    """A helper's call got an unexpected answer; `body` is what the server said, for the test's output."""

    def __init__(self, method: str, path: str, status_code: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status_code}: {body}")
        self.status_code = status_code
        self.body = body


@dataclass
class CommprefsServer:
    """A fresh portal on the session's server: HubSpot's three default definitions and a token with every scope."""

    base_url: str
    token: str
    portal_id: int
    definition_ids: dict[str, int]
    _clients: list[httpx.Client] = field(default_factory=list, repr=False)
    # The helpers' own client, apart from those handed out, which a test may close early.
    _helper_client: httpx.Client | None = field(default=None, repr=False)

    @property
    def marketing_id(self) -> int:
        """HubSpot's "Marketing Information" definition, the one a new portal's contacts subscribe to."""
        return self.definition_ids[MARKETING]

    def client(self) -> httpx.Client:
        """An HTTP client on the server, authenticated as this portal; closed after the test."""
        import httpx

        client = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        self._clients.append(client)
        return client

    def create_definition(
        self, name: str, description: str = "", *, purpose: str = "", business_unit_id: int = 0, internal: bool = False
    ) -> int:
        """A new subscription definition, created over the admin API; returns its id."""
        body = {
            "name": name,
            "description": description,
            "purpose": purpose,
            "businessUnitId": business_unit_id,
            "isInternal": internal,
        }
        created = self._call("POST", "/commprefs/v1/definitions", 201, json=body)
        return int(created["id"])

    def set_status(
        self,
        email: str,
        subscription_id: int,
        status: str,
        *,
        legal_basis: str | None = None,
        legal_basis_explanation: str | None = None,
    ) -> dict[str, Any]:
        """Set one subscription's status through v4; returns the PublicStatus the server answered."""
        body: dict[str, Any] = {"channel": "EMAIL", "statusState": status, "subscriptionId": subscription_id}
        # Left out rather than null, as HubSpot's clients send them.
        if legal_basis is not None:
            body["legalBasis"] = legal_basis
        if legal_basis_explanation is not None:
            body["legalBasisExplanation"] = legal_basis_explanation
        (result,) = self._call("POST", f"{V4_STATUSES}/{quote(email, safe='@')}", 200, json=body)["results"]
        return result  # type: ignore[no-any-return]

    def statuses(self, email: str) -> dict[int, str]:
        """The address's effective v4 email status per subscription id (NOT_SPECIFIED where nothing was set)."""
        found = self._call("GET", f"{V4_STATUSES}/{quote(email, safe='@')}", 200, params={"channel": "EMAIL"})
        return {int(s["subscriptionId"]): s["status"] for s in found["results"]}

    def _call(self, method: str, path: str, expected: int, **kwargs: Any) -> Any:
        if self._helper_client is None:
            self._helper_client = self.client()
        response = self._helper_client.request(method, path, **kwargs)
        if response.status_code != expected:
            raise CommprefsApiError(method, path, response.status_code, response.text)
        return response.json()

    def _close(self) -> None:
        for client in self._clients:
            client.close()


@dataclass
class _Service:
    """The session's `commprefs serve` process and the services on its database, for creating portals."""

    base_url: str
    services: Services


@pytest.fixture(scope="session")
def _commprefs_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Service]:
    """One real server per session, on a new SQLite file or the database given by --commprefs-database-url."""
    from commprefs.services import Services

    workdir = tmp_path_factory.mktemp("commprefs")
    config = request.config
    url = (
        config.getoption(DATABASE_URL_OPTION)
        or config.getini(DATABASE_URL_OPTION)
        or f"sqlite:///{workdir / 'commprefs.db'}"
    )
    # Migrated here, before the server starts, so that portals can be created straight away.
    services = Services.open(url, migrate=True)
    try:
        with _serve(url, workdir) as base_url:
            yield _Service(base_url, services)
    finally:
        services.close()


@pytest.fixture
def commprefs_server(_commprefs_service: _Service) -> Iterator[CommprefsServer]:
    """A fresh portal per test, so tests never see each other's contacts."""
    server = _new_portal(_commprefs_service, gdpr=False)
    yield server
    server._close()


@pytest.fixture
def commprefs_gdpr_server(_commprefs_service: _Service) -> Iterator[CommprefsServer]:
    """Like `commprefs_server`, in a GDPR portal: subscribing needs a legal basis and its explanation."""
    server = _new_portal(_commprefs_service, gdpr=True)
    yield server
    server._close()


def _new_portal(service: _Service, *, gdpr: bool) -> CommprefsServer:
    from commprefs.domain.enums import Scope

    async def create(services: Services) -> tuple[int, str, dict[str, int]]:
        portal = await services.tenancy.create_portal("pytest", gdpr_enabled=gdpr)
        _, secret = await services.tenancy.create_token(portal.id, list(Scope), "pytest")
        return portal.id, secret, {d.name: d.id for d in await services.tenancy.definitions(portal.id)}

    portal_id, secret, definitions = service.services.run(create)
    return CommprefsServer(service.base_url, secret, portal_id, definitions)


@contextmanager
def _serve(database_url: str, workdir: Path) -> Iterator[str]:
    """`commprefs serve` on a free port until the block ends; yields its base URL."""
    port = _free_port()
    env = {
        **os.environ,
        "COMMPREFS_DATABASE_URL": database_url,
        "COMMPREFS_DEMO": "false",
        # Portals and tokens are created by this process, so the server must not cache their absence.
        "COMMPREFS_TOKEN_CACHE_SECONDS": "0",
        "COMMPREFS_CACHE_SECONDS": "0",
        "COMMPREFS_LOG_LEVEL": "warning",
    }
    # A file rather than a pipe: a pipe nobody reads would block the server once full.
    output = workdir / "serve.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "commprefs", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, base_url, output)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, output: Path) -> None:
    """Return once /readyz answers 200; fail the tests with the server's output if it exits or stays silent."""
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = output.read_text(errors="replace")
            pytest.fail(
                f"commprefs serve exited with code {process.returncode} before it was ready:\n{log}", pytrace=False
            )
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    log = output.read_text(errors="replace")
    pytest.fail(
        f"commprefs serve did not answer {base_url}/readyz within {START_TIMEOUT_SECONDS:.0f} s:\n{log}", pytrace=False
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
