"""Operations: health, readiness, metrics, request ids, and logs that keep addresses and tokens out."""

import logging
from pathlib import Path

import httpx
import pytest

from tests.conftest import PortalFixture


def test_health_and_readiness(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ok"}


def test_metrics_count_requests_by_route_template(api: httpx.Client) -> None:
    api.get("/communication-preferences/v3/status/email/metrics@example.com")
    text = api.get("/metrics").text
    assert 'route="/communication-preferences/v3/status/email/{emailAddress:path}"' in text
    assert "metrics@example.com" not in text


def test_every_response_carries_a_request_id(api: httpx.Client) -> None:
    response = api.get("/communication-preferences/v3/definitions")
    assert len(response.headers["x-request-id"]) == 32


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
    access = [r for r in caplog.records if r.name == "commprefs.access"]
    assert len(access) >= 6
    assert "/preferences/{portal_id}/unsubscribe-all/{token}" in {getattr(r, "path", None) for r in access}
    assert {getattr(r, "path", None) for r in access} >= {
        "/communication-preferences/v3/status/email/{emailAddress:path}"
    }
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

    import threading
    import time

    import uvicorn

    from tests.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with caplog.at_level(logging.ERROR), httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
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
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
