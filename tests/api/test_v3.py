"""HubSpot v3 behaviour over HTTP on both stores; every response checked against HubSpot's v3 document."""

from typing import Any

import httpx
import pytest

from commprefs.domain.enums import WideScope
from tests.conftest import PortalFixture, make_portal
from tests.openapi import assert_valid

V3 = "/communication-preferences/v3"


def checked(response: httpx.Response, method: str, template: str) -> Any:
    """The JSON body, after checking it against HubSpot's v3 schema for its status code."""
    body = response.json()
    assert_valid("v3", method, f"{V3}{template}", response.status_code, body)
    return body


def statuses(api: httpx.Client, email: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    body = checked(response, "GET", "/status/email/{emailAddress}")
    return {s["name"]: s for s in body["subscriptionStatuses"]}


def post(api: httpx.Client, action: str, email: str, subscription_id: int | str, **extra: Any) -> httpx.Response:
    response = api.post(f"{V3}/{action}", json={"emailAddress": email, "subscriptionId": str(subscription_id), **extra})
    checked(response, "POST", f"/{action}")
    return response


def test_definitions_lists_hubspot_defaults(api: httpx.Client, portal: PortalFixture) -> None:
    response = api.get(f"{V3}/definitions")
    assert response.status_code == 200
    body = checked(response, "GET", "/definitions")
    names = [d["name"] for d in body["subscriptionDefinitions"]]
    assert names == ["Marketing Information", "Customer Service Communication", "One to One"]
    marketing = body["subscriptionDefinitions"][0]
    assert marketing["id"] == str(portal.marketing)
    assert marketing["isDefault"] is True and marketing["isInternal"] is False and marketing["isActive"] is True
    assert marketing["createdAt"].endswith("Z")


def test_never_seen_address_reads_not_subscribed_everywhere(api: httpx.Client) -> None:
    found = statuses(api, "nobody-yet@example.com")
    assert len(found) == 3
    assert {s["status"] for s in found.values()} == {"NOT_SUBSCRIBED"}
    assert {s["sourceOfStatus"] for s in found.values()} == {"SUBSCRIPTION_STATUS"}


def test_subscribe_then_read_back(api: httpx.Client, portal: PortalFixture) -> None:
    response = post(api, "subscribe", "ann@example.com", portal.marketing)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "SUBSCRIBED" and body["id"] == str(portal.marketing)
    assert body["sourceOfStatus"] == "SUBSCRIPTION_STATUS" and body["brandId"] == 0
    found = statuses(api, "ann@example.com")
    assert found["Marketing Information"]["status"] == "SUBSCRIBED"
    assert found["One to One"]["status"] == "NOT_SUBSCRIBED"


def test_subscription_id_may_be_a_json_number(api: httpx.Client, portal: PortalFixture) -> None:
    response = api.post(f"{V3}/subscribe", json={"emailAddress": "num@example.com", "subscriptionId": portal.marketing})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(portal.marketing)


def test_subscribe_twice_is_refused_with_hubspots_message(api: httpx.Client, portal: PortalFixture) -> None:
    assert post(api, "subscribe", "twice@example.com", portal.marketing).status_code == 200
    response = post(api, "subscribe", "twice@example.com", portal.marketing)
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"] == f"twice@example.com is already subscribed to subscription {portal.marketing}"


def test_unsubscribe_twice_is_refused_with_hubspots_message(api: httpx.Client, portal: PortalFixture) -> None:
    first = post(api, "unsubscribe", "out@example.com", portal.marketing)
    assert first.status_code == 200
    assert first.json()["status"] == "NOT_SUBSCRIBED"
    again = post(api, "unsubscribe", "out@example.com", portal.marketing)
    assert again.status_code == 400
    assert again.json()["message"] == f"out@example.com is already unsubscribed to subscription {portal.marketing}"


def test_v3_never_overrides_an_unsubscribe(api: httpx.Client, portal: PortalFixture) -> None:
    post(api, "subscribe", "gone@example.com", portal.marketing)
    post(api, "unsubscribe", "gone@example.com", portal.marketing)
    response = post(api, "subscribe", "gone@example.com", portal.marketing)
    assert response.status_code == 400
    assert response.json()["message"] == (
        f"subscription {portal.marketing} for gone@example.com cannot be updated because they have unsubscribed"
    )
    assert statuses(api, "gone@example.com")["Marketing Information"]["status"] == "NOT_SUBSCRIBED"


def test_unsubscribing_an_unknown_address_suppresses_it_before_first_contact(
    api: httpx.Client, portal: PortalFixture
) -> None:
    assert post(api, "unsubscribe", "future@example.com", portal.marketing).status_code == 200
    assert post(api, "subscribe", "future@example.com", portal.marketing).status_code == 400


def test_addresses_are_one_subscriber_whatever_their_case(api: httpx.Client, portal: PortalFixture) -> None:
    post(api, "subscribe", "  Jane.Doe+Tag@Example.COM ", portal.marketing)
    response = api.get(f"{V3}/status/email/jane.doe%2Btag@example.com")
    body = checked(response, "GET", "/status/email/{emailAddress}")
    assert body["recipient"] == "jane.doe+tag@example.com"
    assert {s["name"]: s["status"] for s in body["subscriptionStatuses"]}["Marketing Information"] == "SUBSCRIBED"
    assert [e["subscriber"] for e in portal.events()] == ["jane.doe+tag@example.com"]


def test_plus_in_the_path_is_a_plus_not_a_space(api: httpx.Client, portal: PortalFixture) -> None:
    post(api, "subscribe", "a+b@example.com", portal.marketing)
    assert statuses(api, "a+b@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"
    assert statuses(api, "a%2Bb@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"
    assert statuses(api, "a%20b@example.com".replace("%20", "%2B"))["Marketing Information"]["status"] == "SUBSCRIBED"


def test_every_change_appends_one_consent_event(api: httpx.Client, portal: PortalFixture) -> None:
    post(
        api,
        "subscribe",
        "log@example.com",
        portal.marketing,
        legalBasis="CONSENT_WITH_NOTICE",
        legalBasisExplanation="form",
    )
    post(api, "unsubscribe", "log@example.com", portal.marketing)
    post(api, "unsubscribe", "log@example.com", portal.marketing)  # refused: no event
    events = portal.events("log@example.com")
    assert [(e["old_status"], e["new_status"]) for e in events] == [
        ("NOT_SPECIFIED", "SUBSCRIBED"),
        ("SUBSCRIBED", "UNSUBSCRIBED"),
    ]
    first = events[0]
    assert first["subscription_id"] == portal.marketing
    assert first["legal_basis"] == "CONSENT_WITH_NOTICE" and first["legal_basis_explanation"] == "form"
    assert first["source"] == "Public status API"
    assert first["actor_token_id"] and first["request_id"]


def test_legal_basis_is_echoed_on_reads(api: httpx.Client, portal: PortalFixture) -> None:
    post(
        api,
        "subscribe",
        "lb@example.com",
        portal.marketing,
        legalBasis="LEGITIMATE_INTEREST_CLIENT",
        legalBasisExplanation="customer",
    )
    found = statuses(api, "lb@example.com")["Marketing Information"]
    assert found["legalBasis"] == "LEGITIMATE_INTEREST_CLIENT"
    assert found["legalBasisExplanation"] == "customer"


@pytest.fixture
def gdpr_portal(portal: PortalFixture) -> PortalFixture:
    portal.update(gdpr_enabled=True)
    return portal


def test_gdpr_portal_refuses_subscribe_without_legal_basis(gdpr_portal: PortalFixture) -> None:
    api = gdpr_portal.client()
    missing_both = post(api, "subscribe", "eu@example.com", gdpr_portal.marketing)
    assert missing_both.status_code == 400
    assert missing_both.json()["errors"][0]["in"] == "legalBasis"
    missing_explanation = post(
        api, "subscribe", "eu@example.com", gdpr_portal.marketing, legalBasis="CONSENT_WITH_NOTICE"
    )
    assert missing_explanation.status_code == 400
    assert missing_explanation.json()["errors"][0]["in"] == "legalBasisExplanation"
    assert gdpr_portal.events("eu@example.com") == []
    ok = post(
        api,
        "subscribe",
        "eu@example.com",
        gdpr_portal.marketing,
        legalBasis="CONSENT_WITH_NOTICE",
        legalBasisExplanation="signup form",
    )
    assert ok.status_code == 200


def test_gdpr_portal_records_unsubscribe_without_paperwork(gdpr_portal: PortalFixture) -> None:
    response = post(gdpr_portal.client(), "unsubscribe", "eu-out@example.com", gdpr_portal.marketing)
    assert response.status_code == 200
    assert len(gdpr_portal.events("eu-out@example.com")) == 1


def test_hubspot_strict_gdpr_portal_refuses_unsubscribe_without_paperwork(gdpr_portal: PortalFixture) -> None:
    gdpr_portal.update(hubspot_strict=True)
    api = gdpr_portal.client()
    refused = post(api, "unsubscribe", "strict@example.com", gdpr_portal.marketing)
    assert refused.status_code == 400
    assert gdpr_portal.events("strict@example.com") == []
    accepted = post(
        api,
        "unsubscribe",
        "strict@example.com",
        gdpr_portal.marketing,
        legalBasis="NON_GDPR",
        legalBasisExplanation="asked",
    )
    assert accepted.status_code == 200


def _opt_out(portal: PortalFixture, address: str, scope: WideScope, business_unit_id: int = 0) -> None:
    """Opt out of all through v4 (v3 has no such call)."""
    params: dict[str, str | int] = {"channel": "EMAIL"}
    if scope is WideScope.BUSINESS_UNIT_WIDE:
        params["businessUnitId"] = business_unit_id
    response = portal.client().post(f"/communication-preferences/v4/statuses/{address}/unsubscribe-all", params=params)
    assert response.status_code == 200, response.text


def test_portal_wide_opt_out_shows_as_portal_wide_status(api: httpx.Client, portal: PortalFixture) -> None:
    post(api, "subscribe", "wide@example.com", portal.marketing)
    _opt_out(portal, "wide@example.com", WideScope.PORTAL_WIDE)
    found = statuses(api, "wide@example.com")
    assert {s["status"] for s in found.values()} == {"NOT_SUBSCRIBED"}
    assert {s["sourceOfStatus"] for s in found.values()} == {"PORTAL_WIDE_STATUS"}
    refused = post(api, "subscribe", "wide@example.com", portal.definitions["One to One"])
    assert refused.status_code == 400
    assert "cannot be updated because they have unsubscribed" in refused.json()["message"]


def test_brand_wide_opt_out_covers_only_that_brand(api: httpx.Client, portal: PortalFixture) -> None:
    admin = portal.client()
    brand = admin.post("/commprefs/v1/business-units", json={"name": "Second brand"}).json()["id"]
    created = admin.post("/commprefs/v1/definitions", json={"name": "Brand news", "businessUnitId": brand})
    brand_definition = created.json()["id"]
    _opt_out(portal, "brand@example.com", WideScope.BUSINESS_UNIT_WIDE, brand)
    found = statuses(api, "brand@example.com")
    assert found["Brand news"]["sourceOfStatus"] == "BRAND_WIDE_STATUS"
    assert found["Brand news"]["brandId"] == brand
    assert found["Marketing Information"]["sourceOfStatus"] == "SUBSCRIPTION_STATUS"
    assert post(api, "subscribe", "brand@example.com", portal.marketing).status_code == 200
    assert post(api, "subscribe", "brand@example.com", brand_definition).status_code == 400


def test_inactive_definitions_are_not_statuses_and_cannot_be_written(api: httpx.Client, portal: PortalFixture) -> None:
    one_to_one = portal.definitions["One to One"]
    assert api.post(f"/commprefs/v1/definitions/{one_to_one}/deactivate").status_code == 200
    assert "One to One" not in statuses(api, "inactive@example.com")
    response = post(api, "subscribe", "inactive@example.com", one_to_one)
    assert response.status_code == 404
    assert response.json()["category"] == "OBJECT_NOT_FOUND"
    listed = checked(api.get(f"{V3}/definitions"), "GET", "/definitions")["subscriptionDefinitions"]
    assert [d["isActive"] for d in listed if d["name"] == "One to One"] == [False]


def test_a_token_sees_only_its_own_portal(server: Any, portal: PortalFixture) -> None:
    other = make_portal(server)
    mine, theirs = portal.client(), other.client()
    post(theirs, "subscribe", "shared@example.com", other.marketing)
    # Portal A cannot write B's subscription, and does not see B's state for the same address.
    response = post(mine, "subscribe", "shared@example.com", other.marketing)
    assert response.status_code == 404
    assert {s["status"] for s in statuses(mine, "shared@example.com").values()} == {"NOT_SUBSCRIBED"}
    ids_a = {d["id"] for d in mine.get(f"{V3}/definitions").json()["subscriptionDefinitions"]}
    ids_b = {d["id"] for d in theirs.get(f"{V3}/definitions").json()["subscriptionDefinitions"]}
    assert ids_a.isdisjoint(ids_b)
    assert portal.events("shared@example.com") == []


# -- the operations of HubSpot's v3 document of 2024-03-18 ------------------------------------------

HISTORICAL = "v3-historical-2024-03-18"


def bulk(api: httpx.Client, addresses: Any) -> httpx.Response:
    response = api.post(f"{V3}/status/email/bulk", json=addresses)
    assert_valid(HISTORICAL, "POST", f"{V3}/status/email/bulk", response.status_code, response.json())
    return response


def test_bulk_status_answers_each_address_as_given(api: httpx.Client, portal: PortalFixture) -> None:
    post(api, "subscribe", "bulk-a@example.com", portal.marketing)
    _opt_out(portal, "bulk-b@example.com", WideScope.PORTAL_WIDE)
    response = bulk(api, ["Bulk-A@Example.com", "bulk-b@example.com", "never@example.com"])
    assert response.status_code == 200, response.text
    answered = response.json()["recipientToSubscriptionStatuses"]
    assert list(answered) == ["Bulk-A@Example.com", "bulk-b@example.com", "never@example.com"]
    by_name = {s["name"]: s for s in answered["Bulk-A@Example.com"]}
    assert by_name["Marketing Information"]["status"] == "SUBSCRIBED"
    assert by_name["One to One"]["status"] == "NOT_SUBSCRIBED"
    assert {s["sourceOfStatus"] for s in answered["bulk-b@example.com"]} == {"PORTAL_WIDE_STATUS"}
    assert {s["status"] for s in answered["never@example.com"]} == {"NOT_SUBSCRIBED"}
    assert answered["never@example.com"] == statuses_list(api, "never@example.com")


def statuses_list(api: httpx.Client, email: str) -> list[dict[str, Any]]:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    return response.json()["subscriptionStatuses"]  # type: ignore[no-any-return]


def test_bulk_status_leaves_out_what_is_not_an_address_and_answers_a_repeat_once(api: httpx.Client) -> None:
    response = bulk(api, ["not an address", "twice@example.com", "TWICE@example.com", ""])
    assert response.status_code == 200, response.text
    assert list(response.json()["recipientToSubscriptionStatuses"]) == ["twice@example.com"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"inputs": ["a@example.com"]}, id="object"),
        pytest.param([1, 2], id="numbers"),
        pytest.param([f"a{n}@example.com" for n in range(1001)], id="1001"),
    ],
)
def test_bulk_status_refuses_what_is_not_a_list_of_at_most_1000_strings(api: httpx.Client, body: Any) -> None:
    response = bulk(api, body)
    assert response.status_code == 400, response.text
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_resubscribe_lifts_the_opt_out_it_needs_and_refuses_a_no_op(api: httpx.Client, portal: PortalFixture) -> None:
    _opt_out(portal, "back@example.com", WideScope.PORTAL_WIDE)
    response = api.post(
        f"{V3}/resubscribe", json={"emailAddress": "back@example.com", "subscriptionId": str(portal.marketing)}
    )
    assert_valid(HISTORICAL, "POST", f"{V3}/resubscribe", response.status_code, response.json())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SUBSCRIBED"
    found = statuses(api, "back@example.com")
    assert found["Marketing Information"]["status"] == "SUBSCRIBED"
    assert found["One to One"]["status"] == "NOT_SUBSCRIBED"  # the rest stays opted out
    again = api.post(
        f"{V3}/resubscribe", json={"emailAddress": "back@example.com", "subscriptionId": str(portal.marketing)}
    )
    assert_valid(HISTORICAL, "POST", f"{V3}/resubscribe", again.status_code, again.json())
    assert again.status_code == 400
    assert "is already subscribed" in again.json()["message"]
