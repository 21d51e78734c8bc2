"""HubSpot's official Python SDK (hubspot-api-client) against a real server, on both stores."""

import json
from datetime import datetime
from typing import Any

import hubspot
import pytest
from hubspot.communication_preferences.exceptions import (
    ApiException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)
from hubspot.communication_preferences.models import (
    PublicSubscriptionStatus,
    PublicSubscriptionStatusesResponse,
    PublicUpdateSubscriptionStatusRequest,
    SubscriptionDefinition,
    SubscriptionDefinitionsResponse,
)

from commprefs.domain.enums import Scope
from tests.conftest import PortalFixture

DEFAULT_NAMES = ["Marketing Information", "Customer Service Communication", "One to One"]


def sdk(portal: PortalFixture, token: str | None = None) -> Any:
    """The SDK's communication-preferences API group, pointed at the test server."""
    return hubspot.Client.create(
        access_token=token or portal.token, host=portal.server.base_url
    ).communication_preferences


def request(email: str, subscription_id: int | str, **extra: str) -> PublicUpdateSubscriptionStatusRequest:
    return PublicUpdateSubscriptionStatusRequest(email_address=email, subscription_id=str(subscription_id), **extra)


def by_id(response: PublicSubscriptionStatusesResponse) -> dict[str, PublicSubscriptionStatus]:
    return {s.id: s for s in response.subscription_statuses}


def error_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["status"] == "error" and body["correlationId"] and body["message"]
    return body


def test_definitions_get_page(portal: PortalFixture) -> None:
    page = sdk(portal).definition_api.get_page()
    assert isinstance(page, SubscriptionDefinitionsResponse)
    definitions = page.subscription_definitions
    assert all(isinstance(d, SubscriptionDefinition) for d in definitions)
    assert [d.name for d in definitions] == DEFAULT_NAMES
    marketing = definitions[0]
    assert marketing.id == str(portal.marketing) and marketing.description == "Marketing offers and updates."
    assert marketing.purpose == "Marketing" and marketing.communication_method == "Email"
    assert marketing.is_active is True and marketing.is_default is True and marketing.is_internal is False
    assert marketing.business_unit_id == 0
    assert isinstance(marketing.created_at, datetime) and marketing.created_at.tzinfo is not None
    assert marketing.updated_at >= marketing.created_at
    assert [d.is_internal for d in definitions] == [False, True, True]


def test_get_email_status_of_a_never_seen_address(portal: PortalFixture) -> None:
    response = sdk(portal).status_api.get_email_status(email_address="never-seen@example.com")
    assert isinstance(response, PublicSubscriptionStatusesResponse)
    assert response.recipient == "never-seen@example.com"
    statuses = by_id(response)
    assert set(statuses) == {str(i) for i in portal.definitions.values()}
    assert {s.status for s in statuses.values()} == {"NOT_SUBSCRIBED"}
    assert {s.source_of_status for s in statuses.values()} == {"SUBSCRIPTION_STATUS"}
    assert statuses[str(portal.marketing)].name == "Marketing Information"
    assert statuses[str(portal.marketing)].brand_id == 0


def test_subscribe_read_unsubscribe_read(portal: PortalFixture) -> None:
    api = sdk(portal).status_api
    email = "sdk-flow@example.com"
    subscribed = api.subscribe(public_update_subscription_status_request=request(email, portal.marketing))
    assert isinstance(subscribed, PublicSubscriptionStatus)
    assert subscribed.id == str(portal.marketing) and subscribed.status == "SUBSCRIBED"
    assert subscribed.source_of_status == "SUBSCRIPTION_STATUS" and subscribed.name == "Marketing Information"

    read = by_id(api.get_email_status(email_address=email))
    assert read[str(portal.marketing)].status == "SUBSCRIBED"
    others = [s.status for key, s in read.items() if key != str(portal.marketing)]
    assert others == ["NOT_SUBSCRIBED", "NOT_SUBSCRIBED"]

    unsubscribed = api.unsubscribe(public_update_subscription_status_request=request(email, portal.marketing))
    assert isinstance(unsubscribed, PublicSubscriptionStatus)
    assert unsubscribed.id == str(portal.marketing) and unsubscribed.status == "NOT_SUBSCRIBED"
    assert by_id(api.get_email_status(email_address=email))[str(portal.marketing)].status == "NOT_SUBSCRIBED"
    assert [(e["old_status"], e["new_status"]) for e in portal.events(email)] == [
        ("NOT_SPECIFIED", "SUBSCRIBED"),
        ("SUBSCRIBED", "UNSUBSCRIBED"),
    ]


def test_legal_basis_round_trips(portal: PortalFixture) -> None:
    api = sdk(portal).status_api
    email = "sdk-basis@example.com"
    body = request(
        email, portal.marketing, legal_basis="LEGITIMATE_INTEREST_CLIENT", legal_basis_explanation="Existing customer"
    )
    subscribed = api.subscribe(public_update_subscription_status_request=body)
    assert subscribed.legal_basis == "LEGITIMATE_INTEREST_CLIENT"
    assert subscribed.legal_basis_explanation == "Existing customer"
    read = by_id(api.get_email_status(email_address=email))[str(portal.marketing)]
    assert (read.status, read.legal_basis, read.legal_basis_explanation) == (
        "SUBSCRIBED",
        "LEGITIMATE_INTEREST_CLIENT",
        "Existing customer",
    )


def test_address_with_plus_and_capitals(portal: PortalFixture) -> None:
    """The SDK percent-encodes the path ('+' as %2B, '@' as %40); the server must read the same address."""
    api = sdk(portal).status_api
    api.subscribe(public_update_subscription_status_request=request("Ann+News@Example.com", portal.marketing))
    response = api.get_email_status(email_address="Ann+News@Example.com")
    assert response.recipient == "Ann+News@Example.com"
    assert by_id(response)[str(portal.marketing)].status == "SUBSCRIBED"
    assert by_id(api.get_email_status(email_address="ann+news@example.com"))[str(portal.marketing)].status == (
        "SUBSCRIBED"
    )
    assert by_id(api.get_email_status(email_address="ann@example.com"))[str(portal.marketing)].status == (
        "NOT_SUBSCRIBED"
    )


@pytest.mark.parametrize("token", ["cp_not-a-real-token", ""], ids=["unknown", "empty"])
def test_bad_token_is_401(portal: PortalFixture, token: str) -> None:
    client = hubspot.Client.create(access_token=token or None, host=portal.server.base_url).communication_preferences
    with pytest.raises(UnauthorizedException) as raised:
        client.definition_api.get_page()
    assert raised.value.status == 401
    assert error_body(raised.value)["category"] == "INVALID_AUTHENTICATION"
    with pytest.raises(ApiException) as raised_write:
        client.status_api.unsubscribe(public_update_subscription_status_request=request("x@example.com", 1))
    assert raised_write.value.status == 401
    assert portal.events("x@example.com") == []


def test_read_only_token_cannot_write(portal: PortalFixture) -> None:
    api = sdk(portal, portal.token_with(Scope.READ)).status_api
    assert api.get_email_status(email_address="ro@example.com").recipient == "ro@example.com"
    with pytest.raises(ForbiddenException) as raised:
        api.subscribe(public_update_subscription_status_request=request("ro@example.com", portal.marketing))
    assert raised.value.status == 403
    assert error_body(raised.value)["category"] == "MISSING_SCOPES"
    assert portal.events("ro@example.com") == []


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
def test_unknown_subscription_id_is_404(portal: PortalFixture, action: str) -> None:
    api = sdk(portal).status_api
    unknown = max(portal.definitions.values()) + 1
    with pytest.raises(NotFoundException) as raised:
        getattr(api, action)(public_update_subscription_status_request=request("nf@example.com", unknown))
    assert raised.value.status == 404
    body = error_body(raised.value)
    assert body["category"] == "OBJECT_NOT_FOUND"
    assert str(unknown) in body["message"]
    assert portal.events("nf@example.com") == []


def test_unsubscribing_twice_is_400(portal: PortalFixture) -> None:
    api = sdk(portal).status_api
    email = "twice@example.com"
    api.unsubscribe(public_update_subscription_status_request=request(email, portal.marketing))
    with pytest.raises(ApiException) as raised:
        api.unsubscribe(public_update_subscription_status_request=request(email, portal.marketing))
    assert raised.value.status == 400
    body = error_body(raised.value)
    assert body["category"] == "VALIDATION_ERROR" and "already unsubscribed" in body["message"]
    assert len(portal.events(email)) == 1


def test_subscribing_after_unsubscribe_cannot_be_updated(portal: PortalFixture) -> None:
    api = sdk(portal).status_api
    email = "opted-out@example.com"
    api.unsubscribe(public_update_subscription_status_request=request(email, portal.marketing))
    with pytest.raises(ApiException) as raised:
        api.subscribe(public_update_subscription_status_request=request(email, portal.marketing))
    assert raised.value.status == 400
    body = error_body(raised.value)
    assert body["category"] == "VALIDATION_ERROR" and "cannot be updated" in body["message"]
    assert by_id(api.get_email_status(email_address=email))[str(portal.marketing)].status == "NOT_SUBSCRIBED"
    assert [e["new_status"] for e in portal.events(email)] == ["UNSUBSCRIBED"]


def test_subscribing_twice_is_400(portal: PortalFixture) -> None:
    api = sdk(portal).status_api
    email = "already@example.com"
    api.subscribe(public_update_subscription_status_request=request(email, portal.marketing))
    with pytest.raises(ApiException) as raised:
        api.subscribe(public_update_subscription_status_request=request(email, portal.marketing))
    assert raised.value.status == 400
    body = error_body(raised.value)
    assert body["category"] == "VALIDATION_ERROR" and "already subscribed" in body["message"]
