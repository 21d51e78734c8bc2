"""`links/generate` (v4 and the dated versions): shapes, scopes, validation, base URLs, signing."""

import string
from urllib.parse import urlsplit

import httpx
import pytest

from commprefs.consent import links
from commprefs.domain.enums import Scope
from commprefs.domain.model import Portal
from tests.conftest import PortalFixture

VERSIONS = ["v4", "2026-03", "2025-09", "2026-09"]


def generate(api: httpx.Client, body: dict[str, object], version: str = "v4", **params: object) -> httpx.Response:
    return api.post(
        f"/communication-preferences/{version}/links/generate",
        params={"channel": "EMAIL", **params},
        json=body,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_generate_returns_three_signed_links(api: httpx.Client, portal: PortalFixture, version: str) -> None:
    response = generate(
        api, {"subscriberIdString": "Jane.Doe@Example.com", "subscriptionId": portal.marketing}, version
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subscriberIdString"] == "Jane.Doe@Example.com"
    paths = {}
    for key, purpose in (
        ("managePreferencesUrl", "manage"),
        ("unsubscribeAllUrl", "unsubscribe-all"),
        ("unsubscribeSingleUrl", "unsubscribe"),
    ):
        url = urlsplit(body[key])
        assert f"{url.scheme}://{url.netloc}" == portal.server.base_url
        prefix, portal_id, kind, token = url.path.split("/")[1:]
        assert (prefix, portal_id, kind) == ("preferences", str(portal.id), purpose)
        assert len(token.split(".")) == 3, "payload.timestamp.signature"
        paths[key] = url.path
    assert len(set(paths.values())) == 3, "each purpose has its own signature"
    # The links work: each page opens.
    for url in body.values():
        if url.startswith("http"):
            assert httpx.get(url).status_code == 200


def test_single_unsubscribe_link_only_with_a_subscription(api: httpx.Client) -> None:
    body = generate(api, {"subscriberIdString": "a@example.com"}).json()
    assert set(body) == {"subscriberIdString", "managePreferencesUrl", "unsubscribeAllUrl"}


def test_links_are_built_on_the_portals_public_url(api: httpx.Client, portal: PortalFixture) -> None:
    portal.update(public_base_url="https://prefs.example.org/")
    body = generate(api, {"subscriberIdString": "a@example.com"}).json()
    assert body["managePreferencesUrl"].startswith(f"https://prefs.example.org/preferences/{portal.id}/manage/")


@pytest.mark.parametrize(
    ("body", "params", "status", "field"),
    [
        ({}, {}, 400, "subscriberIdString"),
        ({"subscriberIdString": "not-an-email"}, {}, 400, "subscriberIdString"),
        ({"subscriberIdString": "a@example.com", "language": "<script>"}, {}, 400, "language"),
        ({"subscriberIdString": "a@example.com", "subscriptionId": 999}, {}, 404, "subscriptionId"),
        ({"subscriberIdString": "a@example.com"}, {"businessUnitId": 77}, 404, "businessUnitId"),
        ({"subscriberIdString": "a@example.com"}, {"channel": "SMS"}, 400, "channel"),
    ],
)
def test_bad_requests_are_refused(
    api: httpx.Client, body: dict[str, object], params: dict[str, object], status: int, field: str
) -> None:
    response = generate(api, body, **params)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["category"] == {400: "VALIDATION_ERROR", 404: "OBJECT_NOT_FOUND"}[status]
    assert any(e["in"] == field for e in error.get("errors", [])), error


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ((Scope.READ,), False),
        ((Scope.WRITE,), False),
        ((Scope.READ, Scope.WRITE), True),
        ((Scope.READ_WRITE,), True),
    ],
)
def test_generate_needs_read_and_write_or_read_write(
    portal: PortalFixture, scopes: tuple[Scope, ...], allowed: bool
) -> None:
    client = portal.client(portal.token_with(*scopes))
    response = generate(client, {"subscriberIdString": "a@example.com"})
    assert response.status_code == (200 if allowed else 403), response.text
    if not allowed:
        assert response.json()["category"] == "MISSING_SCOPES"


def test_generating_links_changes_nothing(api: httpx.Client, portal: PortalFixture) -> None:
    generate(api, {"subscriberIdString": "quiet@example.com", "subscriptionId": portal.marketing})
    assert portal.events("quiet@example.com") == []


def test_no_one_character_edit_of_a_token_verifies() -> None:
    """Every other character, at every position, is refused: including the edits of a base64 part's
    last character that decode to the same bytes (its unused bits)."""
    portal = Portal(1, "p", False, False, "en", None, signing_secret="s" * 32)
    token = links.sign(portal, links.LinkClaims(1, "a@example.com", 0, "de", 7), links.Purpose.UNSUBSCRIBE_ONE)
    assert links.verify(portal, token, links.Purpose.UNSUBSCRIBE_ONE).subscription_id == 7
    alphabet = string.ascii_letters + string.digits + "-_."
    for position in range(len(token)):
        for replacement in alphabet:
            if replacement == token[position]:
                continue
            edited = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(links.LinkInvalid):
                links.verify(portal, edited, links.Purpose.UNSUBSCRIBE_ONE)
