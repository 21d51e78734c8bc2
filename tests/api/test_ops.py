"""Operations: health, readiness, metrics, request ids, and logs that keep addresses and tokens out."""

import logging

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
    access = [r for r in caplog.records if r.name == "commprefs.access"]
    assert len(access) >= 3
    assert {getattr(r, "path", None) for r in access} >= {
        "/communication-preferences/v3/status/email/{emailAddress:path}"
    }
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    assert "secret.person" not in logged
    assert portal.token not in logged
