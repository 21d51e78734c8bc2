"""The admin API sets a portal up over HTTP: definitions with translations, brands, settings."""

import httpx

from tests.conftest import PortalFixture
from tests.openapi import assert_valid

ADMIN = "/commprefs/v1"


def test_create_definition_with_translations_and_see_it_in_v3(api: httpx.Client) -> None:
    created = api.post(
        f"{ADMIN}/definitions",
        json={
            "name": "Product updates",
            "description": "New features, monthly.",
            "purpose": "Marketing",
            "translations": [
                {"languageCode": "de", "name": "Produktneuigkeiten", "description": "Neue Funktionen, monatlich."},
                {"languageCode": "FR", "name": "Nouveautés", "description": "Nouvelles fonctions, chaque mois."},
            ],
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "Product updates" and body["isDefault"] is False and body["isActive"] is True
    assert [t["languageCode"] for t in body["subscriptionTranslations"]] == ["de", "fr"]
    assert all(t["subscriptionId"] == int(body["id"]) for t in body["subscriptionTranslations"])
    listed = api.get("/communication-preferences/v3/definitions").json()
    assert_valid("v3", "GET", "/communication-preferences/v3/definitions", 200, listed)
    assert body["id"] in {d["id"] for d in listed["subscriptionDefinitions"]}


def test_update_rename_and_deactivate(api: httpx.Client, portal: PortalFixture) -> None:
    target = portal.marketing
    renamed = api.patch(f"{ADMIN}/definitions/{target}", json={"name": "Newsletter", "description": "Weekly."})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Newsletter"
    assert renamed.json()["updatedAt"] >= renamed.json()["createdAt"]
    translated = api.patch(
        f"{ADMIN}/definitions/{target}",
        json={"translations": [{"languageCode": "de", "name": "Rundbrief", "description": "Wöchentlich."}]},
    )
    assert [t["name"] for t in translated.json()["subscriptionTranslations"]] == ["Rundbrief"]
    removed = api.delete(f"{ADMIN}/definitions/{target}/translations/de")
    assert removed.status_code == 200 and removed.json()["subscriptionTranslations"] == []
    assert api.delete(f"{ADMIN}/definitions/{target}/translations/de").status_code == 404
    deactivated = api.post(f"{ADMIN}/definitions/{target}/deactivate")
    assert deactivated.json()["isActive"] is False
    reactivated = api.patch(f"{ADMIN}/definitions/{target}", json={"isActive": True})
    assert reactivated.json()["isActive"] is True


def test_duplicate_names_conflict_and_unknown_ids_are_404(api: httpx.Client) -> None:
    duplicate = api.post(f"{ADMIN}/definitions", json={"name": "marketing information"})
    assert duplicate.status_code == 409
    assert duplicate.json()["category"] == "CONFLICT"
    assert api.get(f"{ADMIN}/definitions/12345").status_code == 404
    assert api.patch(f"{ADMIN}/definitions/12345", json={"name": "x"}).status_code == 404


def test_definition_in_unknown_brand_is_refused(api: httpx.Client) -> None:
    response = api.post(f"{ADMIN}/definitions", json={"name": "Orphan", "businessUnitId": 77})
    assert response.status_code == 404
    assert response.json()["errors"][0]["in"] == "businessUnitId"


def test_admin_bodies_are_validated(api: httpx.Client) -> None:
    for body in ({"name": ""}, {"name": 5}, {"name": "ok", "isInternal": "yes"}, {"name": "ok", "unknownField": 1}):
        response = api.post(f"{ADMIN}/definitions", json=body)
        assert response.status_code == 400, body
        assert response.json()["category"] == "VALIDATION_ERROR"


def test_business_units(api: httpx.Client) -> None:
    assert api.get(f"{ADMIN}/business-units").json()["results"][0]["id"] == 0
    created = api.post(f"{ADMIN}/business-units", json={"name": "Outdoor"})
    assert created.status_code == 201
    unit = created.json()["id"]
    assert unit > 0
    assert api.patch(f"{ADMIN}/business-units/{unit}", json={"name": "Outdoors"}).json()["name"] == "Outdoors"
    assert api.patch(f"{ADMIN}/business-units/999", json={"name": "x"}).status_code == 404
    definition = api.post(f"{ADMIN}/definitions", json={"name": "Trail news", "businessUnitId": unit}).json()
    assert definition["businessUnitId"] == unit


def test_portal_settings(api: httpx.Client, portal: PortalFixture) -> None:
    assert api.get(f"{ADMIN}/portal").json() == {
        "id": portal.id,
        "name": "Test portal",
        "gdprEnabled": False,
        "hubspotStrict": False,
        "defaultLanguage": "en",
        "publicBaseUrl": None,
    }
    changed = api.patch(f"{ADMIN}/portal", json={"gdprEnabled": True, "publicBaseUrl": "https://prefs.example.com"})
    assert changed.json()["gdprEnabled"] is True and changed.json()["publicBaseUrl"] == "https://prefs.example.com"
    assert api.patch(f"{ADMIN}/portal", json={"publicBaseUrl": "javascript:alert(1)"}).status_code == 400
    refused = api.post(
        "/communication-preferences/v3/subscribe",
        json={"emailAddress": "g@example.com", "subscriptionId": str(portal.marketing)},
    )
    assert refused.status_code == 400
