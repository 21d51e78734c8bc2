"""Helpers for the page tests: generate links, submit forms as a browser would, forge old links."""

import re
import time
from typing import Any

import httpx
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.conftest import PortalFixture

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
H1_RE = re.compile(r"<h1>(.*?)</h1>", re.S)


def links_for(api: httpx.Client, email: str, **body: Any) -> dict[str, str]:
    params = {"channel": "EMAIL"}
    if "businessUnitId" in body:
        params["businessUnitId"] = body.pop("businessUnitId")
    response = api.post(
        "/communication-preferences/v4/links/generate", params=params, json={"subscriberIdString": email, **body}
    )
    assert response.status_code == 200, response.text
    links: dict[str, str] = response.json()
    return links


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1).replace("&#34;", '"')


def h1(response: httpx.Response) -> str:
    found = H1_RE.search(response.text)
    assert found, response.text
    return found.group(1).strip()


def form(pairs: list[tuple[str, str]] | dict[str, str]) -> dict[str, list[str]]:
    """Form fields with repeated names (as a browser sends checkboxes), in httpx's `data` shape."""
    fields: dict[str, list[str]] = {}
    for name, value in pairs.items() if isinstance(pairs, dict) else pairs:
        fields.setdefault(name, []).append(value)
    return fields


def submit(browser: httpx.Client, url: str, data: list[tuple[str, str]] | dict[str, str]) -> httpx.Response:
    """GET the page (taking its CSRF cookie and token), then POST the form with `data`."""
    page = browser.get(url)
    assert page.status_code == 200, page.text
    fields = form(data)
    fields["csrf_token"] = [csrf_of(page.text)]
    return browser.post(url, data=fields)


def statuses(api: httpx.Client, email: str) -> dict[int, str]:
    response = api.get(f"/communication-preferences/v4/statuses/{email}", params={"channel": "EMAIL"})
    assert response.status_code == 200, response.text
    return {r["subscriptionId"]: r["status"] for r in response.json()["results"]}


def v3_statuses(api: httpx.Client, email: str) -> dict[int, tuple[str, str]]:
    """v3's view: subscription id -> (status, sourceOfStatus)."""
    response = api.get(f"/communication-preferences/v3/status/email/{email}")
    assert response.status_code == 200, response.text
    return {int(s["id"]): (s["status"], s["sourceOfStatus"]) for s in response.json()["subscriptionStatuses"]}


def snapshot(api: httpx.Client, portal: PortalFixture, email: str) -> tuple[dict[int, str], int]:
    """Everything a page could change: the statuses and the number of consent events."""
    return statuses(api, email), len(portal.events(email))


def old_link(
    portal: PortalFixture,
    purpose: str,
    email: str,
    *,
    age_days: float,
    business_unit_id: int = 0,
    language: str | None = None,
    subscription_id: int | None = None,
) -> str:
    """A genuine link signed `age_days` ago with the portal's own secret."""
    found = portal.server.store.read(lambda tx: tx.portals.get_portal(portal.id))
    assert found is not None

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age_days * 86400)

    serializer = URLSafeTimedSerializer(found.signing_secret, salt=f"commprefs.links.{purpose}", signer=Backdated)
    token = serializer.dumps([portal.id, email, business_unit_id, language, subscription_id])
    return f"{portal.server.base_url}/preferences/{portal.id}/{purpose}/{token}"


def create_definition(api: httpx.Client, name: str, **body: Any) -> int:
    response = api.post("/commprefs/v1/definitions", json={"name": name, "description": f"About {name}", **body})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
