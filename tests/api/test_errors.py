"""Bad input: the right status, HubSpot's error body, and nothing written."""

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import PortalFixture
from tests.openapi import assert_valid

V3 = "/communication-preferences/v3"


def assert_error(response: httpx.Response, status: int, category: str, template: str = "/subscribe") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == category
    assert body["message"]
    uuid.UUID(body["correlationId"])
    assert response.headers["x-hubspot-correlation-id"] == body["correlationId"]
    assert "Traceback" not in response.text
    method = "GET" if template.startswith("/status") or template == "/definitions" else "POST"
    assert_valid("v3", method, f"{V3}{template}", status, body)
    return body


def send(api: httpx.Client, content: bytes, path: str = "/subscribe", **headers: str) -> httpx.Response:
    return api.post(f"{V3}{path}", content=content, headers={"content-type": "application/json", **headers})


BAD_BODIES = [
    pytest.param(b"{bad json", "body", "INVALID_JSON", id="malformed-json"),
    pytest.param(b"", "body", None, id="empty-body"),
    pytest.param(b"[1, 2]", "body", "INVALID_TYPE", id="array-body"),
    pytest.param(b'"just a string"', "body", "INVALID_TYPE", id="string-body"),
    pytest.param(b'{"subscriptionId": "1"}', "emailAddress", "REQUIRED", id="missing-email"),
    pytest.param(b'{"email_address": "a@b.co", "subscription_id": "1"}', "emailAddress", "REQUIRED", id="snake-case"),
    pytest.param(b'{"emailAddress": 42, "subscriptionId": "1"}', "emailAddress", "INVALID_TYPE", id="email-number"),
    pytest.param(b'{"emailAddress": "a@b.co", "subscriptionId": true}', "subscriptionId", "INVALID", id="id-bool"),
    pytest.param(b'{"emailAddress": "a@b.co", "subscriptionId": "abc"}', "subscriptionId", "INVALID", id="id-letters"),
    pytest.param(b'{"emailAddress": "a@b.co", "subscriptionId": -5}', "subscriptionId", "INVALID", id="id-negative"),
    pytest.param(
        b'{"emailAddress": "a@b.co", "subscriptionId": 99999999999999999999999}',
        "subscriptionId",
        "INVALID",
        id="id-huge",
    ),
    pytest.param(
        b'{"emailAddress": "a@b.co", "subscriptionId": "1", "legalBasis": "BECAUSE"}',
        "legalBasis",
        "INVALID_ENUM",
        id="enum",
    ),
    pytest.param(
        b'{"emailAddress": "a@b.co", "subscriptionId": "1", "legalBasisExplanation": ["x"]}',
        "legalBasisExplanation",
        "INVALID_TYPE",
        id="explanation-list",
    ),
]


@pytest.mark.parametrize(("content", "field", "code"), BAD_BODIES)
@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe"])
def test_malformed_bodies_get_400_naming_the_field(
    api: httpx.Client, portal: PortalFixture, path: str, content: bytes, field: str, code: str | None
) -> None:
    body = assert_error(send(api, content, path), 400, "VALIDATION_ERROR", path)
    assert body["errors"], body
    assert body["errors"][0]["in"] == field
    if code:
        assert code in {e["code"] for e in body["errors"]}
    assert portal.events() == []


INVALID_EMAILS = [
    "plainaddress",
    "two@@example.com",
    "a@b@example.com",
    "no-dot@localhost",
    "spaces in@example.com",
    "@example.com",
    "trailing@",
    "x" * 65 + "@example.com",
    "a@" + "b" * 250 + ".com",
    "dots..twice@example.com",
    "a@-bad-.com",
    "a@example.123",
]


@pytest.mark.parametrize("email", INVALID_EMAILS)
def test_invalid_emails_are_refused_on_writes(api: httpx.Client, portal: PortalFixture, email: str) -> None:
    response = api.post(f"{V3}/unsubscribe", json={"emailAddress": email, "subscriptionId": str(portal.marketing)})
    body = assert_error(response, 400, "VALIDATION_ERROR", "/unsubscribe")
    assert body["errors"][0]["in"] == "emailAddress"
    assert portal.events() == []


@pytest.mark.parametrize("email", ["plainaddress", "a@b@example.com", "no-dot@localhost", "dots..twice@example.com"])
def test_invalid_emails_are_refused_on_reads(api: httpx.Client, email: str) -> None:
    assert_error(api.get(f"{V3}/status/email/{email}"), 400, "VALIDATION_ERROR", "/status/email/{emailAddress}")


@pytest.mark.parametrize("subscription_id", ["1", "123456789", "9223372036854775807"])
def test_unknown_subscription_ids_are_404(api: httpx.Client, portal: PortalFixture, subscription_id: str) -> None:
    response = api.post(f"{V3}/unsubscribe", json={"emailAddress": "x@example.com", "subscriptionId": subscription_id})
    body = assert_error(response, 404, "OBJECT_NOT_FOUND", "/unsubscribe")
    assert body["errors"][0]["in"] == "subscriptionId"
    assert portal.events() == []


def test_oversize_body_is_413(api: httpx.Client, portal: PortalFixture) -> None:
    padding = "x" * (1024 * 1024)
    content = f'{{"emailAddress": "big@example.com", "subscriptionId": "{portal.marketing}", "pad": "{padding}"}}'
    assert_error(send(api, content.encode()), 413, "PAYLOAD_TOO_LARGE")
    assert portal.events() == []


def test_oversize_chunked_body_without_length_is_413(api: httpx.Client, portal: PortalFixture) -> None:
    def chunks() -> Any:
        yield f'{{"emailAddress": "big@example.com", "subscriptionId": "{portal.marketing}", "pad": "'.encode()
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    response = api.post(f"{V3}/subscribe", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert portal.events() == []


def test_just_under_the_cap_is_processed(api: httpx.Client, portal: PortalFixture) -> None:
    head = f'{{"emailAddress": "under@example.com", "subscriptionId": "{portal.marketing}", "pad": "'
    content = head + "z" * (1024 * 1024 - len(head) - 2) + '"}'
    assert len(content) == 1024 * 1024
    assert send(api, content.encode()).status_code == 200


def test_unknown_routes_and_methods_get_error_bodies(api: httpx.Client) -> None:
    missing = api.get(f"{V3}/no-such-thing")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    wrong_method = api.delete(f"{V3}/subscribe")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == "error"


def test_text_plain_content_type_is_refused_without_a_write(api: httpx.Client, portal: PortalFixture) -> None:
    response = api.post(
        f"{V3}/subscribe",
        content=f'{{"emailAddress": "t@example.com", "subscriptionId": "{portal.marketing}"}}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code in (400, 415)
    assert response.json()["status"] == "error"
    assert portal.events() == []
