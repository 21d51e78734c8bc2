"""Operations: health, readiness, metrics, request ids, and logs that keep addresses and tokens out."""

import logging
import time
from pathlib import Path

import httpx
import pytest

from commprefs.logs import AccessLog
from tests.conftest import PortalFixture


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ok"}


def test_metrics_count_requests_by_route_template(api: httpx.Client) -> None:
    api.get("/communication-preferences/v3/status/email/metrics@example.com")
    text = api.get("/metrics").text
    assert 'route="/communication-preferences/v3/status/email/{emailAddress:path}"' in text
    assert "metrics@example.com" not in text


def _sample(text: str, name: str, **labels: str) -> float:
    """A sample's value in a /metrics text (0 when the series does not exist yet)."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_each_request_is_counted_once_in_the_counter_and_the_latency_histogram(api: httpx.Client) -> None:
    route = "/communication-preferences/v3/status/email/{emailAddress:path}"
    before = api.get("/metrics").text
    for n in range(7):
        api.get(f"/communication-preferences/v3/status/email/count{n}@example.com")
    for _ in range(3):
        api.get("/communication-preferences/v3/status/email/not-an-address")
    after = api.get("/metrics").text
    ok = {"name": "commprefs_http_requests_total", "method": "GET", "route": route, "status": "200"}
    bad = {**ok, "status": "400"}
    timed = {"name": "commprefs_http_request_duration_seconds_count", "method": "GET", "route": route}
    assert _sample(after, **ok) - _sample(before, **ok) == 7
    assert _sample(after, **bad) - _sample(before, **bad) == 3
    assert _sample(after, **timed) - _sample(before, **timed) == 10


def test_every_response_carries_a_request_id(api: httpx.Client) -> None:
    response = api.get("/communication-preferences/v3/definitions")
    assert len(response.headers["x-request-id"]) == 32


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [line for r in caplog.records if r.name == "commprefs.access" for line in AccessLog.entries(r)]


def test_access_log_names_routes_not_addresses_or_tokens(
    api: httpx.Client, portal: PortalFixture, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="commprefs"):
        api.get("/communication-preferences/v3/status/email/secret.person@example.com")
        api.post(
            "/communication-preferences/v3/unsubscribe",
            json={"emailAddress": "secret.person@example.com", "subscriptionId": str(portal.marketing)},
        )
        api.post("/communication-preferences/v3/unsubscribe", json={"emailAddress": "bad", "subscriptionId": "x"})
        link = api.post(
            "/communication-preferences/v4/links/generate",
            params={"channel": "EMAIL"},
            json={"subscriberIdString": "secret.person@example.com"},
        ).json()["unsubscribeAllUrl"]
        httpx.get(link)
        httpx.post(link, data={"List-Unsubscribe": "One-Click"})
        # A request's access line is written when its turn of the server's event loop ends, which may be just
        # after its response reached the client.
        deadline = time.monotonic() + 5
        while len(access := _access_lines(caplog)) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(access) >= 6
    assert "/preferences/{portal_id}/unsubscribe-all/{token}" in {line["path"] for line in access}
    assert {line["path"] for line in access} >= {"/communication-preferences/v3/status/email/{emailAddress:path}"}
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "secret.person" not in logged
    assert portal.token not in logged
    assert link.rsplit("/", 1)[1] not in logged, "a link's token is as secret as the address"


def test_an_unexpected_error_is_a_hubspot_500_on_a_connection_that_stays_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from commprefs.app import create_app
    from commprefs.config import Settings
    from commprefs.store import Store

    store = Store(f"sqlite:///{tmp_path / 'boom.db'}")
    store.migrate()
    app = create_app(Settings(database_url=store.url, demo=False), store)

    @app.get("/boom/{address}")
    async def boom(address: str) -> None:
        raise RuntimeError(f"a bug, with {address} in its message")  # runtime data, as a real bug would carry

    from tests.conftest import serve_app

    try:
        with serve_app(app) as base_url, caplog.at_level(logging.ERROR), httpx.Client(base_url=base_url) as client:
            first = client.get("/boom/secret.person@example.com")
            second = client.get("/healthz")
        assert first.status_code == 500
        assert first.json()["status"] == "error" and first.json()["message"] == "Internal error"
        assert "Traceback" not in first.text and "secret.person" not in first.text
        assert second.status_code == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.getMessage() for r in errors] == ["unhandled error"]  # once, not again by the server
        assert getattr(errors[0], "error", None) == "RuntimeError"
        assert "secret.person" not in caplog.text + str(errors[0].__dict__)
    finally:
        store.close()


def sample(text: str, series: str) -> float | None:
    """The value of one series (name and labels exactly as exposed) in a /metrics text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_write_groups_and_name_the_operational_gauges(api: httpx.Client, portal: PortalFixture) -> None:
    before = sample(api.get("/metrics").text, "commprefs_write_group_size_count") or 0.0
    change = {"emailAddress": "grouped@example.com", "subscriptionId": str(portal.marketing)}
    assert api.post("/communication-preferences/v3/unsubscribe", json=change).status_code == 200
    text = api.get("/metrics").text
    assert (sample(text, "commprefs_write_group_size_count") or 0.0) >= before + 1
    assert sample(text, 'commprefs_write_group_size_bucket{le="256.0"}') == sample(
        text, "commprefs_write_group_size_count"
    )
    assert "# TYPE commprefs_webhook_backlog gauge" in text
    assert "# TYPE commprefs_rate_limited_total counter" in text


def test_metrics_add_up_every_worker_and_measure_the_webhook_backlog(tmp_path: Path) -> None:
    import time

    from tests.procs import ServeProcess

    definitions = "/communication-preferences/v3/definitions"
    server = ServeProcess(
        f"sqlite:///{tmp_path / 'workers.db'}",
        tmp_path,
        "workers",
        "--workers",
        "2",
        COMMPREFS_RATE_LIMIT_PER_10S="5",
        COMMPREFS_LOG_LEVEL="info",
    )
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while server.errors().count("Application startup complete.") < 2:  # both workers serve
            assert time.monotonic() < deadline, server.errors()
            time.sleep(0.1)
        _, token = server.demo()
        assert "Rate limits on SQLite are counted by each of the 2 processes" in server.output()
        # A connection per call, so that calls and scrapes land on either worker.
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(
            base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, limits=fresh, timeout=30
        ) as api:
            found = api.get(definitions).json()["subscriptionDefinitions"]
            sid = next(d["id"] for d in found if d["name"] == "Marketing Information")
            # Sending is refused (localhost is a private address), so its events stay pending.
            assert api.post("/commprefs/v1/webhooks", json={"url": "http://localhost:1/hook"}).status_code == 201
            for n in range(3):
                change = {"emailAddress": f"backlog{n}@example.com", "subscriptionId": sid}
                assert api.post("/communication-preferences/v3/unsubscribe", json=change).status_code == 200
            # Five calls so far: within each worker's own limit. Now past it: each worker counts its own
            # (SQLite), so both refuse some, and let some in (both answered calls).
            statuses = [api.get(definitions).status_code for _ in range(20)]
            refused = statuses.count(429)
            assert 10 <= refused < 20 and statuses.count(200) == 20 - refused

            deadline = time.monotonic() + 20
            while sample(api.get("/metrics").text, "commprefs_webhook_backlog") != 3.0:
                assert time.monotonic() < deadline, api.get("/metrics").text
                time.sleep(0.2)
            for _ in range(8):  # whichever worker answers, it reports both
                text = api.get("/metrics").text
                route = f'commprefs_http_requests_total{{method="GET",route="{definitions}"'
                assert sample(text, f'{route},status="200"}}') == 21 - refused
                assert sample(text, f'{route},status="429"}}') == refused
                assert sample(text, 'commprefs_rate_limited_total{policy="TEN_SECONDLY_ROLLING"}') == refused
                assert (sample(text, "commprefs_write_group_size_count") or 0) >= 4
                assert sample(text, "commprefs_webhook_backlog") == 3.0
    finally:
        server.kill()
