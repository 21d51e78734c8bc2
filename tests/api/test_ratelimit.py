"""Per-token rate limits: HubSpot's 429 body and headers, over real servers on both stores, shared by
separate `commprefs serve` processes on PostgreSQL, and off by default."""

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from commprefs.api.ratelimit import DAILY, TEN_SECONDLY, Limiter, Policy
from commprefs.clock import now_ms
from commprefs.domain.enums import Scope
from commprefs.domain.model import TokenInfo
from commprefs.store import Store
from commprefs.store.ratelimit import PostgresCounter
from commprefs.store.schema import rate_limit
from commprefs.tenancy import setup as tenancy
from tests.conftest import STORES, PortalFixture, Server, database_url, make_portal, postgres_database, run_server
from tests.openapi import assert_valid
from tests.procs import ServeProcess

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
DEFINITIONS = f"{V3}/definitions"
BODY_KEYS = {"status", "message", "errorType", "correlationId", "policyName", "groupName", "category", "requestId"}
LIMIT_HEADERS = (
    "x-hubspot-ratelimit-max",
    "x-hubspot-ratelimit-remaining",
    "x-hubspot-ratelimit-interval-milliseconds",
    "x-hubspot-ratelimit-daily",
    "x-hubspot-ratelimit-daily-remaining",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
)


@pytest.fixture(scope="module", params=STORES)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """5 calls per token per rolling 10 seconds."""
    with (
        database_url(request.param, tmp_path_factory.mktemp(request.param)) as url,
        run_server(url, request.param, rate_limit_per_10s=5) as srv,
    ):
        yield srv


@pytest.fixture(scope="module", params=STORES)
def quick(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """3 calls per rolling second (the window shortened for the test), 5 a day."""
    with (
        database_url(request.param, tmp_path_factory.mktemp(request.param)) as url,
        run_server(url, request.param, rate_limit_per_10s=3, rate_limit_interval_ms=1000, rate_limit_per_day=5) as srv,
    ):
        yield srv


@pytest.fixture
def fresh(limited: Server) -> Iterator[PortalFixture]:
    made = make_portal(limited)
    yield made
    for client in made._clients:
        client.close()


def assert_rate_limited(response: httpx.Response, policy: str) -> dict[str, object]:
    """HubSpot's rate-limit answer: 429, its body (with our category and request id), Retry-After."""
    assert response.status_code == 429, response.text
    body: dict[str, object] = response.json()
    assert set(body) == BODY_KEYS, body
    assert body["status"] == "error"
    assert body["errorType"] == "RATE_LIMIT"
    assert body["category"] == "RATE_LIMITS"
    assert body["policyName"] == policy
    assert body["message"] == f"You have reached your {policy.lower()} limit."
    assert str(body["groupName"]).startswith("commprefs:token:")
    assert response.headers["x-hubspot-correlation-id"] == str(uuid.UUID(str(body["correlationId"])))
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"
    return body


def metric(base_url: str, line_start: str) -> float:
    for line in httpx.get(f"{base_url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_sixth_call_within_ten_seconds_is_hubspots_429(fresh: PortalFixture) -> None:
    api = fresh.client()  # every answer is checked against HubSpot's document of its path
    rejected_before = metric(fresh.server.base_url, 'commprefs_rate_limited_total{policy="TEN_SECONDLY_ROLLING"}')
    remaining = []
    for _ in range(5):
        response = api.get(DEFINITIONS)
        assert response.status_code == 200, response.text
        assert response.headers["x-hubspot-ratelimit-max"] == "5"
        assert response.headers["x-hubspot-ratelimit-interval-milliseconds"] == "10000"
        assert response.headers["ratelimit-limit"] == "5"
        assert response.headers["ratelimit-policy"] == "5;w=10"
        assert 1 <= int(response.headers["ratelimit-reset"]) <= 10
        assert response.headers["ratelimit-remaining"] == response.headers["x-hubspot-ratelimit-remaining"]
        assert "retry-after" not in response.headers
        assert "x-hubspot-ratelimit-daily" not in response.headers  # the daily policy is off
        remaining.append(int(response.headers["x-hubspot-ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    refused = api.get(DEFINITIONS)
    body = assert_rate_limited(refused, TEN_SECONDLY)
    assert_valid("v3", "GET", DEFINITIONS, 429, body)  # HubSpot's Error schema (the document's default answer)
    assert refused.headers["x-hubspot-ratelimit-remaining"] == "0"
    # All five calls were in the last few milliseconds: the window has to slide out first.
    assert 2 <= int(refused.headers["retry-after"]) <= 12
    after = metric(fresh.server.base_url, 'commprefs_rate_limited_total{policy="TEN_SECONDLY_ROLLING"}')
    assert after == rejected_before + 1


def test_refused_calls_are_not_counted(fresh: PortalFixture) -> None:
    api = fresh.client()
    for _ in range(5):
        assert api.get(DEFINITIONS).status_code == 200
    first = api.get(DEFINITIONS)
    assert_rate_limited(first, TEN_SECONDLY)
    for _ in range(20):
        assert api.get(DEFINITIONS).status_code == 429
    last = api.get(DEFINITIONS)
    # Counted, 25 refused calls would push the wait to ~8 s past the window's end; not counted, it only shrinks.
    assert int(last.headers["retry-after"]) <= int(first.headers["retry-after"])
    if fresh.server.kind == "postgresql":
        rows = fresh.server.store.read(lambda tx: tx.conn.execute(rate_limit.select()).all())
        # The five calls may straddle two windows; the 21 refused ones are in neither.
        assert sum(row.count for row in rows if row.portal_id == fresh.id) == 5


def test_each_token_has_its_own_budget(fresh: PortalFixture) -> None:
    api = fresh.client()
    for _ in range(5):
        assert api.get(DEFINITIONS).status_code == 200
    assert_rate_limited(api.get(DEFINITIONS), TEN_SECONDLY)

    other_token = fresh.client(fresh.token_with(Scope.READ)).get(DEFINITIONS)
    assert other_token.status_code == 200
    assert other_token.headers["x-hubspot-ratelimit-remaining"] == "4"
    other_portal = make_portal(fresh.server)
    elsewhere = other_portal.client().get(DEFINITIONS)
    assert elsewhere.status_code == 200 and elsewhere.headers["x-hubspot-ratelimit-remaining"] == "4"


def test_every_token_api_draws_on_one_budget_once_per_call(fresh: PortalFixture) -> None:
    api = fresh.client()
    address = "budget@example.com"
    calls = [
        lambda: api.get(f"{V4}/statuses/{address}", params={"channel": "EMAIL"}),  # the fast path
        lambda: api.get("/communication-preferences/2026-03/definitions"),
        lambda: api.get("/commprefs/v1/portal"),
        lambda: api.get("/commprefs/v1/events"),
        # Not the canonical shape: the fast path hands it to FastAPI, which authenticates again.
        lambda: api.post(f"{V3}/subscribe", json={"emailAddress": address}),
    ]
    answers = [call() for call in calls]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 400]
    assert [r.headers["x-hubspot-ratelimit-remaining"] for r in answers] == ["4", "3", "2", "1", "0"]
    assert_rate_limited(api.get(f"{V4}/definitions"), TEN_SECONDLY)
    assert_rate_limited(api.get(f"{V3}/status/email/{address}"), TEN_SECONDLY)


def test_a_refused_write_writes_nothing(fresh: PortalFixture) -> None:
    api = fresh.client()
    for _ in range(5):
        assert api.get(DEFINITIONS).status_code == 200
    refused = api.post(
        f"{V3}/unsubscribe", json={"emailAddress": "refused@example.com", "subscriptionId": str(fresh.marketing)}
    )
    assert_rate_limited(refused, TEN_SECONDLY)
    assert fresh.events("refused@example.com") == []


def test_health_metrics_pages_and_unknown_tokens_are_not_limited(fresh: PortalFixture) -> None:
    api = fresh.client()
    link = api.post(
        f"{V4}/links/generate", params={"channel": "EMAIL"}, json={"subscriberIdString": "pages@example.com"}
    ).json()["managePreferencesUrl"]
    for _ in range(4):
        assert api.get(DEFINITIONS).status_code == 200
    assert_rate_limited(api.get(DEFINITIONS), TEN_SECONDLY)

    base = fresh.server.base_url
    for response in (httpx.get(f"{base}/healthz"), httpx.get(f"{base}/readyz"), httpx.get(f"{base}/metrics")):
        assert response.status_code == 200
        assert not set(LIMIT_HEADERS) & set(response.headers)
    page = httpx.get(link)
    assert page.status_code == 200 and "pages@example.com" in page.text
    assert not set(LIMIT_HEADERS) & set(page.headers)
    for _ in range(8):
        unknown = httpx.get(f"{base}{DEFINITIONS}", headers={"Authorization": "Bearer cp_nobody"})
        assert unknown.status_code == 401
        assert not set(LIMIT_HEADERS) & set(unknown.headers)


def test_concurrent_calls_never_exceed_the_limit(fresh: PortalFixture) -> None:
    headers = {"Authorization": f"Bearer {fresh.token}"}
    with httpx.Client(base_url=fresh.server.base_url, headers=headers, timeout=30) as client:

        def call(_: int) -> int:
            return client.get(DEFINITIONS).status_code

        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(call, range(30)))
    assert sorted(statuses) == [200] * 5 + [429] * 25


def test_a_client_that_waits_as_told_is_let_in_again_until_the_daily_limit(quick: Server) -> None:
    portal = make_portal(quick)
    api = portal.client()
    admitted, waited = 0, 0.0
    while True:
        response = api.get(DEFINITIONS)
        if response.status_code == 200:
            admitted += 1
            assert response.headers["x-hubspot-ratelimit-daily"] == "5"
            assert response.headers["x-hubspot-ratelimit-daily-remaining"] == str(5 - admitted)
            assert response.headers["ratelimit-policy"] == "3;w=1, 5;w=86400"
            continue
        if response.json()["policyName"] == DAILY:
            break
        assert_rate_limited(response, TEN_SECONDLY)
        wait = int(response.headers["retry-after"])
        assert wait <= 2  # a 1-second window slides out within two
        time.sleep(wait)
        waited += wait
        assert waited < 10, "never let in again"
    assert admitted == 5
    assert waited >= 1  # the 1-second policy refused at least once on the way
    body = assert_rate_limited(response, DAILY)
    assert_valid("v3", "GET", DEFINITIONS, 429, body)
    assert response.headers["x-hubspot-ratelimit-daily-remaining"] == "0"
    midnight = (now_ms() // 86_400_000 + 1) * 86_400_000
    assert abs(int(response.headers["retry-after"]) - math.ceil((midnight - now_ms()) / 1000)) <= 2
    # The day is used up: the rolling window's room does not help.
    time.sleep(1.1)
    assert_rate_limited(api.get(DEFINITIONS), DAILY)


def test_limits_are_off_by_default(portal: PortalFixture) -> None:
    api = portal.client()
    for _ in range(40):
        response = api.get(DEFINITIONS)
        assert response.status_code == 200
        assert not set(LIMIT_HEADERS) & set(response.headers)


def test_separate_processes_share_one_budget_on_postgresql(tmp_path: Path) -> None:
    with postgres_database() as url:
        store = Store(url)
        store.migrate()
        with store.transaction() as tx:
            portal = tenancy.create_portal(tx, "Shared", gdpr_enabled=False, now=now_ms())
            _, token = tenancy.create_token(tx, portal.id, list(Scope), "shared", now_ms())
        store.close()
        env = {"COMMPREFS_RATE_LIMIT_PER_10S": "6"}
        servers = [
            ServeProcess(url, tmp_path, "one", **env),
            ServeProcess(url, tmp_path, "two", **env),
        ]
        try:
            for server in servers:
                server.wait_ready()
            headers = {"Authorization": f"Bearer {token}"}
            answers = [httpx.get(f"{servers[n % 2].base_url}{DEFINITIONS}", headers=headers) for n in range(6)]
            assert [r.status_code for r in answers] == [200] * 6
            assert [r.headers["x-hubspot-ratelimit-remaining"] for r in answers] == ["5", "4", "3", "2", "1", "0"]
            for server in servers:
                assert_rate_limited(httpx.get(f"{server.base_url}{DEFINITIONS}", headers=headers), TEN_SECONDLY)
        finally:
            for server in servers:
                server.kill()


CALLER = TokenInfo("caller", "test", 1, frozenset())


def test_old_windows_are_purged_on_postgresql() -> None:
    with postgres_database() as url:
        store = Store(url)
        store.migrate()
        now = now_ms()
        old = {"portal_id": 1, "token_id": "old", "interval_ms": 10_000, "window_start": now - 60_000, "count": 3}
        recent = {**old, "token_id": "recent", "window_start": now - now % 10_000 - 10_000}
        with store.transaction() as tx:
            tx.conn.execute(rate_limit.insert(), [old, recent])

        async def count_once(limiter: Limiter) -> None:
            await limiter.check(Request({"type": "http", "state": {}}), CALLER)
            await limiter.aclose()  # waits for the purge the first call started

        policies = [Policy(TEN_SECONDLY, 5, 10_000, True)]
        asyncio.run(count_once(Limiter(policies, PostgresCounter(policies, url))))
        left = store.read(lambda tx: {row.token_id for row in tx.conn.execute(rate_limit.select())})
        store.close()
        assert left == {"recent", "caller"}


def test_an_unreachable_database_lets_calls_through() -> None:
    policies = [Policy(TEN_SECONDLY, 1, 10_000, True)]
    unreachable = Limiter(policies, PostgresCounter(policies, "postgresql://nobody@127.0.0.1:1/none"))
    request = Request({"type": "http", "state": {}})
    asyncio.run(unreachable.check(request, CALLER))  # no 429, no exception
    assert request.scope["state"]["rate_limit_headers"] == []
