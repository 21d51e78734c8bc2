"""HubSpot v4 behaviour over HTTP on both stores; every response is checked against HubSpot's v4
document by the client's response hook (see conftest.check_contract)."""

from typing import Any

import httpx
import pytest

from commprefs.domain.enums import Scope
from tests.client import EMAIL, V4, post_status
from tests.conftest import PortalFixture

V3 = "/communication-preferences/v3"


def result(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (only,) = response.json()["results"]
    return only  # type: ignore[no-any-return]


def v4_statuses(api: httpx.Client, email: str, **params: Any) -> dict[str, dict[str, Any]]:
    response = api.get(f"{V4}/statuses/{email}", params={**EMAIL, **params})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "COMPLETE"
    return {s["subscriptionName"]: s for s in response.json()["results"]}


def v3_statuses(api: httpx.Client, email: str) -> dict[str, dict[str, Any]]:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200
    return {s["name"]: s for s in response.json()["subscriptionStatuses"]}


def unsubscribe_all(api: httpx.Client, email: str, **params: Any) -> httpx.Response:
    return api.post(f"{V4}/statuses/{email}/unsubscribe-all", params={**EMAIL, **params})


def make_brand(api: httpx.Client, name: str, definition: str) -> tuple[int, int]:
    brand = api.post("/commprefs/v1/business-units", json={"name": name}).json()["id"]
    created = api.post("/commprefs/v1/definitions", json={"name": definition, "businessUnitId": brand})
    return brand, int(created.json()["id"])


# -- definitions ----------------------------------------------------------------------------------


def test_definitions_envelope_brand_filter_and_translations(api: httpx.Client) -> None:
    body = api.get(f"{V4}/definitions").json()
    assert body["status"] == "COMPLETE" and len(body["results"]) == 3
    assert "subscriptionTranslations" not in body["results"][0]
    brand, _ = make_brand(api, "Outdoor", "Trail news")
    api.patch(
        f"/commprefs/v1/definitions/{body['results'][0]['id']}",
        json={"translations": [{"languageCode": "de", "name": "Marketing-Infos", "description": "Angebote."}]},
    )
    only_brand = api.get(f"{V4}/definitions", params={"businessUnitId": brand}).json()["results"]
    assert [d["name"] for d in only_brand] == ["Trail news"]
    assert len(api.get(f"{V4}/definitions", params={"businessUnitId": 0}).json()["results"]) == 3
    translated = api.get(f"{V4}/definitions", params={"includeTranslations": "true"}).json()["results"]
    marketing = next(d for d in translated if d["name"] == "Marketing Information")
    assert [(t["languageCode"], t["name"]) for t in marketing["subscriptionTranslations"]] == [
        ("de", "Marketing-Infos")
    ]
    assert all("subscriptionTranslations" in d for d in translated)


# -- one subscriber ----------------------------------------------------------------------------------


def test_never_seen_address_is_not_specified(api: httpx.Client) -> None:
    found = v4_statuses(api, "new@example.com")
    assert {s["status"] for s in found.values()} == {"NOT_SPECIFIED"}
    assert {s["source"] for s in found.values()} == {"Not specified"}
    assert all("setStatusSuccessReason" not in s for s in found.values())
    assert all(isinstance(s["subscriptionId"], int) for s in found.values())


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({}, "channel", "REQUIRED"),
        ({"channel": "SMS"}, "channel", "INVALID_ENUM"),
        ({"channel": "EMAIL", "businessUnitId": "x"}, "businessUnitId", "INVALID_TYPE"),
    ],
)
def test_channel_is_required_and_checked(api: httpx.Client, params: dict[str, str], field: str, code: str) -> None:
    response = api.get(f"{V4}/statuses/a@example.com", params=params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["in"] == field
    assert response.json()["errors"][0]["code"] == code


def test_set_status_reasons(api: httpx.Client, portal: PortalFixture) -> None:
    first = result(post_status(api, "Reasons@Example.com", portal.marketing, "SUBSCRIBED"))
    assert first["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    assert first["status"] == "SUBSCRIBED" and first["source"] == "Public status API"
    assert first["subscriberIdString"] == "Reasons@Example.com"
    same = result(post_status(api, "reasons@example.com", portal.marketing, "SUBSCRIBED"))
    assert same["setStatusSuccessReason"] == "NO_STATUS_CHANGE"
    out = result(post_status(api, "reasons@example.com", portal.marketing, "UNSUBSCRIBED"))
    assert out["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED" and out["status"] == "UNSUBSCRIBED"
    back = result(post_status(api, "reasons@example.com", portal.marketing, "SUBSCRIBED"))
    assert back["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED" and back["status"] == "SUBSCRIBED"
    reset = result(post_status(api, "reasons@example.com", portal.marketing, "NOT_SPECIFIED"))
    assert reset["status"] == "NOT_SPECIFIED" and reset["setStatusSuccessReason"] == "REQUESTED_CHANGE_OCCURRED"
    transitions = [(e["old_status"], e["new_status"]) for e in portal.events("reasons@example.com")]
    assert transitions == [
        ("NOT_SPECIFIED", "SUBSCRIBED"),
        ("SUBSCRIBED", "UNSUBSCRIBED"),
        ("UNSUBSCRIBED", "SUBSCRIBED"),
        ("SUBSCRIBED", "NOT_SPECIFIED"),
    ]


def test_v4_and_v3_see_one_state(api: httpx.Client, portal: PortalFixture) -> None:
    post_status(api, "both@example.com", portal.marketing, "UNSUBSCRIBED")
    assert v3_statuses(api, "both@example.com")["Marketing Information"]["status"] == "NOT_SUBSCRIBED"
    api.post(
        f"{V3}/subscribe",
        json={"emailAddress": "both@example.com", "subscriptionId": str(portal.definitions["One to One"])},
    )
    assert v4_statuses(api, "both@example.com")["One to One"]["status"] == "SUBSCRIBED"
    assert v4_statuses(api, "both@example.com")["Marketing Information"]["status"] == "UNSUBSCRIBED"


def test_unknown_subscription_and_bad_bodies(api: httpx.Client, portal: PortalFixture) -> None:
    missing = post_status(api, "x@example.com", 12345, "SUBSCRIBED")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"
    for body in (
        {"statusState": "MAYBE", "subscriptionId": portal.marketing, "channel": "EMAIL"},
        {"statusState": "SUBSCRIBED", "subscriptionId": portal.marketing, "channel": "FAX"},
        {"statusState": "SUBSCRIBED", "channel": "EMAIL"},
    ):
        response = api.post(f"{V4}/statuses/x@example.com", json=body)
        assert response.status_code == 400, body
    assert post_status(api, "not-an-email", portal.marketing, "SUBSCRIBED").status_code == 400
    assert portal.events() == []


def test_gdpr_subscribe_needs_legal_basis_in_v4_too(portal: PortalFixture) -> None:
    portal.update(gdpr_enabled=True)
    api = portal.client()
    refused = post_status(api, "eu@example.com", portal.marketing, "SUBSCRIBED")
    assert refused.status_code == 400 and refused.json()["errors"][0]["in"] == "legalBasis"
    assert post_status(api, "eu@example.com", portal.marketing, "UNSUBSCRIBED").status_code == 200
    ok = post_status(
        api,
        "eu@example.com",
        portal.marketing,
        "SUBSCRIBED",
        legalBasis="CONSENT_WITH_NOTICE",
        legalBasisExplanation="form",
    )
    assert result(ok)["legalBasis"] == "CONSENT_WITH_NOTICE"


# -- opting out of all --------------------------------------------------------------------------------


def test_portal_wide_unsubscribe_all(api: httpx.Client, portal: PortalFixture) -> None:
    post_status(api, "all@example.com", portal.marketing, "SUBSCRIBED")
    assert api.get(f"{V4}/statuses/all@example.com/unsubscribe-all", params=EMAIL).json()["results"] == []
    quiet = unsubscribe_all(api, "all@example.com")
    assert quiet.status_code == 200 and quiet.json()["results"] == []
    v3 = v3_statuses(api, "all@example.com")
    assert {s["status"] for s in v3.values()} == {"NOT_SUBSCRIBED"}
    assert {s["sourceOfStatus"] for s in v3.values()} == {"PORTAL_WIDE_STATUS"}
    assert {s["status"] for s in v4_statuses(api, "all@example.com").values()} == {"UNSUBSCRIBED"}
    (wide,) = api.get(f"{V4}/statuses/all@example.com/unsubscribe-all", params=EMAIL).json()["results"]
    assert wide["wideStatusType"] == "PORTAL_WIDE" and wide["status"] == "UNSUBSCRIBED"
    again = unsubscribe_all(api, "all@example.com", verbose="true")
    assert {s["setStatusSuccessReason"] for s in again.json()["results"]} == {"NO_STATUS_CHANGE"}
    assert len(portal.events("all@example.com")) == 2  # the subscribe, then one opt-out


def test_unsubscribe_all_accepts_an_empty_json_body_and_is_verbose_on_request(
    api: httpx.Client, portal: PortalFixture
) -> None:
    response = api.post(f"{V4}/statuses/v@example.com/unsubscribe-all", params={**EMAIL, "verbose": "true"}, json={})
    assert response.status_code == 200
    reasons = {s["subscriptionName"]: s["setStatusSuccessReason"] for s in response.json()["results"]}
    assert reasons == dict.fromkeys(portal.definitions, "UNSUBSCRIBE_FROM_ALL_OCCURRED")


def test_an_opt_out_covers_definitions_created_later(api: httpx.Client) -> None:
    unsubscribe_all(api, "later@example.com")
    api.post("/commprefs/v1/definitions", json={"name": "Launched later"})
    assert v4_statuses(api, "later@example.com")["Launched later"]["status"] == "UNSUBSCRIBED"
    assert v3_statuses(api, "later@example.com")["Launched later"]["sourceOfStatus"] == "PORTAL_WIDE_STATUS"


def test_brand_wide_unsubscribe_all(api: httpx.Client, portal: PortalFixture) -> None:
    brand, _ = make_brand(api, "Outdoor", "Trail news")
    response = unsubscribe_all(api, "brand@example.com", businessUnitId=brand, verbose="true")
    assert [s["subscriptionName"] for s in response.json()["results"]] == ["Trail news"]
    v3 = v3_statuses(api, "brand@example.com")
    assert v3["Trail news"]["sourceOfStatus"] == "BRAND_WIDE_STATUS"
    assert v3["Marketing Information"]["sourceOfStatus"] == "SUBSCRIPTION_STATUS"
    (wide,) = api.get(
        f"{V4}/statuses/brand@example.com/unsubscribe-all", params={**EMAIL, "businessUnitId": brand}
    ).json()["results"]
    assert wide["wideStatusType"] == "BUSINESS_UNIT_WIDE" and wide["businessUnitId"] == brand
    assert result(post_status(api, "brand@example.com", portal.marketing, "SUBSCRIBED"))["status"] == "SUBSCRIBED"
    assert v4_statuses(api, "brand@example.com", businessUnitId=brand)["Trail news"]["status"] == "UNSUBSCRIBED"
    assert unsubscribe_all(api, "brand@example.com", businessUnitId=999).status_code == 404


def test_resubscribe_lifts_the_opt_out_and_subscribes_nothing_else(api: httpx.Client, portal: PortalFixture) -> None:
    one_to_one = portal.definitions["One to One"]
    post_status(api, "re@example.com", portal.marketing, "SUBSCRIBED")
    post_status(api, "re@example.com", one_to_one, "SUBSCRIBED")
    unsubscribe_all(api, "re@example.com")
    back = result(post_status(api, "re@example.com", portal.marketing, "SUBSCRIBED"))
    assert back["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED" and back["status"] == "SUBSCRIBED"
    after = v4_statuses(api, "re@example.com")
    assert after["Marketing Information"]["status"] == "SUBSCRIBED"
    assert after["One to One"]["status"] == "UNSUBSCRIBED"  # was SUBSCRIBED before the opt-out: not silently back
    assert after["Customer Service Communication"]["status"] == "UNSUBSCRIBED"
    (wide,) = api.get(f"{V4}/statuses/re@example.com/unsubscribe-all", params=EMAIL).json()["results"]
    assert wide["status"] == "SUBSCRIBED"
    v3 = v3_statuses(api, "re@example.com")
    assert v3["Marketing Information"] == {
        **v3["Marketing Information"],
        "status": "SUBSCRIBED",
        "sourceOfStatus": "SUBSCRIPTION_STATUS",
    }


def test_brand_resubscribe_leaves_the_portal_wide_scope_alone(api: httpx.Client, portal: PortalFixture) -> None:
    brand, brand_news = make_brand(api, "Outdoor", "Trail news")
    post_status(api, "br@example.com", portal.marketing, "SUBSCRIBED")
    unsubscribe_all(api, "br@example.com", businessUnitId=brand)
    assert (
        result(post_status(api, "br@example.com", brand_news, "SUBSCRIBED"))["setStatusSuccessReason"]
        == "RESUBSCRIBE_OCCURRED"
    )
    assert v4_statuses(api, "br@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"


# -- batches ------------------------------------------------------------------------------------------


def batch_token(portal: PortalFixture) -> httpx.Client:
    return portal.client(portal.token_with(Scope.BATCH_READ, Scope.BATCH_WRITE))


def batch_write_input(email: str, subscription_id: int | str, state: str, **extra: Any) -> dict[str, Any]:
    return {
        "subscriberIdString": email,
        "subscriptionId": subscription_id,
        "statusState": state,
        "channel": "EMAIL",
    } | extra


def test_batch_read_partial_failure_is_207(portal: PortalFixture) -> None:
    api = batch_token(portal)
    response = api.post(
        f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": ["ok@example.com", "bad", "OK@example.com"]}
    )
    assert response.status_code == 207
    body = response.json()
    assert body["numErrors"] == 1 and len(body["errors"]) == 1
    [error] = body["errors"]
    assert error["context"] == {"inputIndex": ["1"], "subscriberIdString": ["bad"]}
    assert [r["subscriberIdString"] for r in body["results"]] == ["ok@example.com"]  # duplicates answered once
    assert len(body["results"][0]["statuses"]) == 3
    clean = api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": ["a@example.com", "b@example.com"]})
    assert clean.status_code == 200 and "errors" not in clean.json()


@pytest.mark.parametrize("path", ["read", "unsubscribe-all", "unsubscribe-all/read"])
@pytest.mark.parametrize("item", [7, {"subscriberIdString": "x@example.com"}, None, True], ids=repr)
def test_batch_of_addresses_with_a_non_string_input_is_400(portal: PortalFixture, path: str, item: Any) -> None:
    """`inputs` is an array of strings: anything else fails the whole call, as HubSpot's deserializer does."""
    api = batch_token(portal)
    response = api.post(
        f"{V4}/statuses/batch/{path}", params=EMAIL, json={"inputs": ["s1@example.com", item, "s2@example.com"]}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert [(e["in"], e["code"]) for e in body["errors"]] == [("inputs[1]", "INVALID_TYPE")]
    assert portal.events() == []
    wide = api.post(f"{V4}/statuses/batch/unsubscribe-all/read", params=EMAIL, json={"inputs": ["s1@example.com"]})
    assert wide.json()["results"] == [{"subscriberIdString": "s1@example.com", "wideStatuses": []}]


def test_batch_size_limit(portal: PortalFixture) -> None:
    api = batch_token(portal)
    full = [f"n{i}@example.com" for i in range(1000)]
    assert api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": full}).status_code == 200
    over = api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": [*full, "one-more@example.com"]})
    assert over.status_code == 400 and "1000" in over.json()["message"]
    writes = [
        {"subscriberIdString": a, "subscriptionId": portal.marketing, "statusState": "SUBSCRIBED", "channel": "EMAIL"}
        for a in full
    ]
    assert api.post(f"{V4}/statuses/batch/write", json={"inputs": [*writes, writes[0]]}).status_code == 400
    assert portal.events() == []
    assert api.post(f"{V4}/statuses/batch/write", json={"inputs": writes}).status_code == 200
    assert len(portal.events()) == 1000


def test_batch_write_applies_good_inputs_and_reports_refused_ones(portal: PortalFixture) -> None:
    """Well-formed inputs that a rule refuses (an invalid address, an unknown or inactive subscription)
    are each their own error in a 207; the others are applied, in order."""
    inactive = portal.definitions["One to One"]
    assert portal.client().post(f"/commprefs/v1/definitions/{inactive}/deactivate").status_code == 200
    api = batch_token(portal)
    inputs = [
        batch_write_input("w1@example.com", portal.marketing, "SUBSCRIBED"),
        batch_write_input("not an email", portal.marketing, "SUBSCRIBED"),
        batch_write_input("w2@example.com", 4242, "SUBSCRIBED"),
        batch_write_input("w3@example.com", inactive, "UNSUBSCRIBED"),
        batch_write_input("w1@example.com", str(portal.marketing), "UNSUBSCRIBED"),  # a string id, as HubSpot takes
    ]
    response = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
    assert response.status_code == 207, response.text
    body = response.json()
    assert body["numErrors"] == 3
    refused = {
        int(e["context"]["inputIndex"][0]): (e["context"]["subscriberIdString"], e["category"], e["errors"][0]["in"])
        for e in body["errors"]
    }
    assert refused == {
        1: (["not an email"], "VALIDATION_ERROR", "subscriberIdString"),
        2: (["w2@example.com"], "OBJECT_NOT_FOUND", "subscriptionId"),
        3: (["w3@example.com"], "OBJECT_NOT_FOUND", "subscriptionId"),
    }
    # Inputs apply in order: w1 subscribed, then unsubscribed by the later input.
    assert [(r["subscriberIdString"], r["status"], r["setStatusSuccessReason"]) for r in body["results"]] == [
        ("w1@example.com", "SUBSCRIBED", "REQUESTED_CHANGE_OCCURRED"),
        ("w1@example.com", "UNSUBSCRIBED", "REQUESTED_CHANGE_OCCURRED"),
    ]
    assert [(e["subscriber"], e["old_status"], e["new_status"]) for e in portal.events()] == [
        ("w1@example.com", "NOT_SPECIFIED", "SUBSCRIBED"),
        ("w1@example.com", "SUBSCRIBED", "UNSUBSCRIBED"),
    ]


def test_batch_write_refusals_in_a_gdpr_portal_are_per_input(portal: PortalFixture) -> None:
    portal.update(gdpr_enabled=True)
    api = batch_token(portal)
    basis = {"legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "Signed up at the fair"}
    inputs = [
        batch_write_input("g1@example.com", portal.marketing, "SUBSCRIBED"),
        batch_write_input("g2@example.com", portal.marketing, "SUBSCRIBED", **basis),
    ]
    response = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
    assert response.status_code == 207, response.text
    [error] = response.json()["errors"]
    assert error["context"]["inputIndex"] == ["0"] and error["errors"][0]["in"] == "legalBasis"
    assert [r["subscriberIdString"] for r in response.json()["results"]] == ["g2@example.com"]
    assert [e["subscriber"] for e in portal.events()] == ["g2@example.com"]


def _without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


MALFORMED_INPUTS = {
    # id: (how the second input is spoiled, the field `in` names after `inputs[1]`, code)
    "missing-subscriber": (lambda i: _without(i, "subscriberIdString"), ".subscriberIdString", "REQUIRED"),
    "missing-subscription": (lambda i: _without(i, "subscriptionId"), ".subscriptionId", "REQUIRED"),
    "missing-state": (lambda i: _without(i, "statusState"), ".statusState", "REQUIRED"),
    "missing-channel": (lambda i: _without(i, "channel"), ".channel", "REQUIRED"),
    "subscriber-number": (lambda i: {**i, "subscriberIdString": 42}, ".subscriberIdString", "INVALID_TYPE"),
    "explanation-list": (lambda i: {**i, "legalBasisExplanation": ["x"]}, ".legalBasisExplanation", "INVALID_TYPE"),
    "subscription-letters": (lambda i: {**i, "subscriptionId": "abc"}, ".subscriptionId", "INVALID"),
    "subscription-bool": (lambda i: {**i, "subscriptionId": True}, ".subscriptionId", "INVALID"),
    "state-enum": (lambda i: {**i, "statusState": "WRONG"}, ".statusState", "INVALID_ENUM"),
    "channel-enum": (lambda i: {**i, "channel": "SMS"}, ".channel", "INVALID_ENUM"),
    "basis-enum": (lambda i: {**i, "legalBasis": "BECAUSE"}, ".legalBasis", "INVALID_ENUM"),
    "not-an-object": (lambda i: "not an object", "", "INVALID_TYPE"),
    "null": (lambda i: None, "", "INVALID_TYPE"),
}


@pytest.mark.parametrize(("spoil", "field", "code"), MALFORMED_INPUTS.values(), ids=MALFORMED_INPUTS.keys())
def test_batch_write_with_a_malformed_input_is_400_and_writes_nothing(
    portal: PortalFixture, spoil: Any, field: str, code: str
) -> None:
    """An input that does not match HubSpot's schema fails the whole call (its deserializer's 400),
    naming that input's field; the well-formed inputs around it are not applied either."""
    api = batch_token(portal)
    inputs = [
        batch_write_input("m1@example.com", portal.marketing, "UNSUBSCRIBED"),
        spoil(batch_write_input("m2@example.com", portal.marketing, "SUBSCRIBED")),
        batch_write_input("m3@example.com", portal.marketing, "SUBSCRIBED"),
    ]
    response = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR" and "inputs[1]" in body["message"]
    assert [(e["in"], e["code"]) for e in body["errors"]] == [(f"inputs[1]{field}", code)]
    assert portal.events() == []
    for email in ("m1@example.com", "m2@example.com", "m3@example.com"):
        assert {s["status"] for s in v4_statuses(portal.client(), email).values()} == {"NOT_SPECIFIED"}


def test_batch_write_names_every_malformed_input(portal: PortalFixture) -> None:
    api = batch_token(portal)
    good = batch_write_input("n1@example.com", portal.marketing, "SUBSCRIBED")
    inputs = [good, _without(good, "subscriberIdString"), good, {**good, "statusState": "subscribed"}]
    response = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
    assert response.status_code == 400, response.text
    assert [(e["in"], e["code"]) for e in response.json()["errors"]] == [
        ("inputs[1].subscriberIdString", "REQUIRED"),
        ("inputs[3].statusState", "INVALID_ENUM"),
    ]
    assert portal.events() == []


def test_batch_body_without_an_array_of_inputs_is_400(portal: PortalFixture) -> None:
    api = batch_token(portal)
    for path, body, where, code in [
        ("write", {}, "inputs", "REQUIRED"),
        ("write", {"inputs": {"subscriberIdString": "x@example.com"}}, "inputs", "INVALID_TYPE"),
        ("read", {"inputs": "x@example.com"}, "inputs", "INVALID_TYPE"),
    ]:
        response = api.post(f"{V4}/statuses/batch/{path}", params=EMAIL, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert [(e["in"], e["code"]) for e in response.json()["errors"]] == [(where, code)], (path, body)
    assert portal.events() == []


def test_batch_unsubscribe_all_and_its_read(portal: PortalFixture) -> None:
    api = batch_token(portal)
    quiet = api.post(f"{V4}/statuses/batch/unsubscribe-all", params=EMAIL, json={"inputs": ["b1@example.com", "nope"]})
    assert quiet.status_code == 207
    assert quiet.json()["results"] == [{"subscriberIdString": "b1@example.com"}]
    verbose = api.post(
        f"{V4}/statuses/batch/unsubscribe-all",
        params={**EMAIL, "verbose": "true"},
        json={"inputs": ["b1@example.com", "b2@example.com"]},
    )
    reasons = {
        r["subscriberIdString"]: {s["setStatusSuccessReason"] for s in r["statuses"]} for r in verbose.json()["results"]
    }
    assert reasons == {"b1@example.com": {"NO_STATUS_CHANGE"}, "b2@example.com": {"UNSUBSCRIBE_FROM_ALL_OCCURRED"}}
    read = api.post(
        f"{V4}/statuses/batch/unsubscribe-all/read", params=EMAIL, json={"inputs": ["b1@example.com", "b9@example.com"]}
    )
    assert read.status_code == 200
    found = {r["subscriberIdString"]: r["wideStatuses"] for r in read.json()["results"]}
    assert [w["wideStatusType"] for w in found["b1@example.com"]] == ["PORTAL_WIDE"]
    assert found["b9@example.com"] == []


def test_batch_endpoints_need_batch_scopes(portal: PortalFixture) -> None:
    api = portal.client(portal.token_with(Scope.READ_WRITE))
    for path in ("read", "write", "unsubscribe-all", "unsubscribe-all/read"):
        response = api.post(f"{V4}/statuses/batch/{path}", params=EMAIL, json={"inputs": []})
        assert response.status_code == 403, path
        assert response.json()["category"] == "MISSING_SCOPES"
    reader = portal.client(portal.token_with(Scope.BATCH_READ))
    assert reader.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": []}).status_code == 200
    assert reader.post(f"{V4}/statuses/batch/write", json={"inputs": []}).status_code == 403


def test_v4_scopes_and_auth(portal: PortalFixture) -> None:
    reader = portal.client(portal.token_with(Scope.READ))
    assert reader.get(f"{V4}/statuses/s@example.com", params=EMAIL).status_code == 200
    assert post_status(reader, "s@example.com", portal.marketing, "SUBSCRIBED").status_code == 403
    assert unsubscribe_all(reader, "s@example.com").status_code == 403
    anonymous = httpx.Client(base_url=portal.server.base_url)
    assert anonymous.get(f"{V4}/definitions").status_code == 401
    anonymous.close()


# -- idempotent retries ---------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(api: httpx.Client, portal: PortalFixture) -> None:
    headers = {"Idempotency-Key": "retry-1"}
    body = {"statusState": "UNSUBSCRIBED", "subscriptionId": portal.marketing, "channel": "EMAIL"}
    first = api.post(f"{V4}/statuses/idem@example.com", json=body, headers=headers)
    again = api.post(f"{V4}/statuses/idem@example.com", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(portal.events("idem@example.com")) == 1
    other = api.post(f"{V4}/statuses/idem@example.com", json={**body, "statusState": "SUBSCRIBED"}, headers=headers)
    assert other.status_code == 422
    assert len(portal.events("idem@example.com")) == 1
    fresh = api.post(
        f"{V4}/statuses/idem@example.com",
        json={**body, "statusState": "SUBSCRIBED"},
        headers={"Idempotency-Key": "retry-2"},
    )
    assert result(fresh)["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"


def test_idempotency_keys_are_per_portal(server: Any, portal: PortalFixture) -> None:
    from tests.conftest import make_portal

    other = make_portal(server)
    headers = {"Idempotency-Key": "shared-key"}
    mine = post_status(portal.client(), "p@example.com", portal.marketing, "UNSUBSCRIBED")
    assert mine.status_code == 200
    theirs = other.client().post(
        f"{V4}/statuses/p@example.com",
        json={"statusState": "UNSUBSCRIBED", "subscriptionId": other.marketing, "channel": "EMAIL"},
        headers=headers,
    )
    assert theirs.status_code == 200 and "idempotent-replayed" not in theirs.headers
    assert theirs.json()["results"][0]["subscriptionId"] == other.marketing


# -- dated versions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2026-03", "2025-09", "2026-09"])
def test_dated_versions_serve_the_v4_operations(api: httpx.Client, portal: PortalFixture, version: str) -> None:
    base = f"/communication-preferences/{version}"
    assert len(api.get(f"{base}/definitions").json()["results"]) == 3
    changed = api.post(
        f"{base}/statuses/dv@example.com",
        json={"statusState": "UNSUBSCRIBED", "subscriptionId": portal.marketing, "channel": "EMAIL"},
    )
    assert changed.status_code == 200
    assert api.get(f"{base}/statuses/dv@example.com", params=EMAIL).status_code == 200
    assert api.post(f"{base}/statuses/dv@example.com/unsubscribe-all", params=EMAIL).status_code == 200
    assert api.post(f"{base}/statuses/batch/read", params=EMAIL, json={"inputs": ["dv@example.com"]}).status_code == 200


def test_2026_03_has_no_v3_shaped_calls(api: httpx.Client, portal: PortalFixture) -> None:
    response = api.post(
        "/communication-preferences/2026-03/subscribe", json={"emailAddress": "a@example.com", "subscriptionId": "1"}
    )
    assert response.status_code == 404


@pytest.mark.parametrize("version", ["2025-09", "2026-09"])
def test_dated_v3_shaped_calls_and_resubscribe(api: httpx.Client, portal: PortalFixture, version: str) -> None:
    base = f"/communication-preferences/{version}"
    body = {"emailAddress": "dated@example.com", "subscriptionId": str(portal.marketing)}
    assert api.post(f"{base}/unsubscribe", json=body).status_code == 200
    assert api.post(f"{base}/subscribe", json=body).status_code == 400  # v3 never overrides an opt-out
    resubscribed = api.post(f"{base}/resubscribe", json=body)
    assert resubscribed.status_code == 200 and resubscribed.json()["status"] == "SUBSCRIBED"
    assert api.post(f"{base}/resubscribe", json=body).status_code == 400  # already subscribed
    statuses = api.get(f"{base}/status/email/dated@example.com").json()["subscriptionStatuses"]
    assert {s["name"]: s["status"] for s in statuses}["Marketing Information"] == "SUBSCRIBED"


def test_batches_honour_business_unit(portal: PortalFixture) -> None:
    admin = portal.client()
    brand, _ = make_brand(admin, "Outdoor", "Trail news")
    api = batch_token(portal)
    out = api.post(
        f"{V4}/statuses/batch/unsubscribe-all",
        params={**EMAIL, "businessUnitId": brand, "verbose": "true"},
        json={"inputs": ["bu@example.com"]},
    )
    assert [s["subscriptionName"] for s in out.json()["results"][0]["statuses"]] == ["Trail news"]
    read = api.post(
        f"{V4}/statuses/batch/read", params={**EMAIL, "businessUnitId": brand}, json={"inputs": ["bu@example.com"]}
    )
    assert [(s["subscriptionName"], s["status"]) for s in read.json()["results"][0]["statuses"]] == [
        ("Trail news", "UNSUBSCRIBED")
    ]
    everything = api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": ["bu@example.com"]})
    by_name = {s["subscriptionName"]: s["status"] for s in everything.json()["results"][0]["statuses"]}
    assert by_name["Marketing Information"] == "NOT_SPECIFIED" and by_name["Trail news"] == "UNSUBSCRIBED"
    wide = api.post(
        f"{V4}/statuses/batch/unsubscribe-all/read",
        params={**EMAIL, "businessUnitId": 0},
        json={"inputs": ["bu@example.com"]},
    )
    assert wide.json()["results"][0]["wideStatuses"] == []  # the brand's opt-out is not brand 0's
    missing = api.post(
        f"{V4}/statuses/batch/unsubscribe-all",
        params={**EMAIL, "businessUnitId": 999},
        json={"inputs": ["x@example.com"]},
    )
    assert missing.status_code == 404


def test_the_older_spelling_of_the_batch_opt_out_is_the_same_operation(
    api: httpx.Client, portal: PortalFixture
) -> None:
    """An earlier v4 document named it /statuses/batch/unsubscribe-all/write; integrations generated from it
    still call that path. It answers as /statuses/batch/unsubscribe-all and stays out of the served document."""
    body = {"inputs": ["old-spelling@example.com", "not an address"]}
    older = api.post(f"{V4}/statuses/batch/unsubscribe-all/write", params={**EMAIL, "verbose": "true"}, json=body)
    assert older.status_code == 207, older.text
    assert [r["subscriberIdString"] for r in older.json()["results"]] == ["old-spelling@example.com"]
    assert {s["status"] for s in older.json()["results"][0]["statuses"]} == {"UNSUBSCRIBED"}
    assert (
        older.json()["errors"][0]["context"] == {"subscriberIdString": ["not an address"]}
        or older.json()["numErrors"] == 1
    )
    read = api.get(f"{V4}/statuses/old-spelling@example.com/unsubscribe-all", params=EMAIL)
    assert [(w["wideStatusType"], w["status"]) for w in read.json()["results"]] == [("PORTAL_WIDE", "UNSUBSCRIBED")]
    served = api.get("/openapi.json").json()["paths"]
    assert f"{V4}/statuses/batch/unsubscribe-all/write" not in served
