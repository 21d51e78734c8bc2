"""The contact pages over real HTTP, without a browser: one-click, GET safety, CSRF, tampering,
replay, expiry, saving only what changed, languages, headers and the consent events."""

from collections.abc import Iterator

import httpx
import pytest

from tests.client import set_status
from tests.conftest import LINK_MAX_AGE_DAYS, PortalFixture
from tests.pages.kit import (
    create_definition,
    csrf_of,
    h1,
    links_for,
    old_link,
    snapshot,
    statuses,
    submit,
    v3_statuses,
)
from tests.pages.kit import (
    form as kit_form,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def browser(portal: PortalFixture) -> Iterator[httpx.Client]:
    """A cookie-keeping client with a browser's user agent, like a person's browser."""
    with httpx.Client(headers={"User-Agent": "Mozilla/5.0 (test browser)"}, timeout=30) as client:
        yield client


@pytest.fixture
def three(api: httpx.Client, portal: PortalFixture) -> list[int]:
    """Three subscriptions on the preference page (Marketing Information and two more)."""
    return [
        portal.marketing,
        create_definition(
            api, "Newsletter", translations=[{"languageCode": "de", "name": "Rundbrief", "description": "Monatlich"}]
        ),
        create_definition(api, "Product updates"),
    ]


# -- one-click (RFC 8058) -------------------------------------------------------------------------------


def test_one_click_unsubscribes_from_all_without_page_or_cookie(api: httpx.Client, portal: PortalFixture) -> None:
    email = "one.click@example.com"
    api.post(
        f"/communication-preferences/v4/statuses/{email}",
        json={"subscriptionId": portal.marketing, "statusState": "SUBSCRIBED", "channel": "EMAIL"},
    )
    url = links_for(api, email)["unsubscribeAllUrl"]
    response = httpx.post(url, data=ONE_CLICK, headers={"User-Agent": "Gmail one-click"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert set(statuses(api, email).values()) == {"UNSUBSCRIBED"}
    assert {status for status, _ in v3_statuses(api, email).values()} == {"NOT_SUBSCRIBED"}
    assert {source for _, source in v3_statuses(api, email).values()} == {"PORTAL_WIDE_STATUS"}
    event = portal.events(email)[-1]
    assert event["source"] == "List-unsubscribe header"
    assert event["wide_scope"] == "PORTAL_WIDE" and event["new_status"] == "UNSUBSCRIBED"
    assert event["ip"] == "127.0.0.1" and event["user_agent"] == "Gmail one-click"
    assert event["actor_token_id"] is None
    # Idempotent: a second one-click answers 200 and records nothing new.
    before = len(portal.events(email))
    assert httpx.post(url, data=ONE_CLICK).status_code == 200
    assert len(portal.events(email)) == before


def test_one_click_on_a_single_link_unsubscribes_that_subscription_only(
    api: httpx.Client, portal: PortalFixture, three: list[int]
) -> None:
    email = "single@example.com"
    for sid in three:
        set_status(api, email, sid, "SUBSCRIBED")
    url = links_for(api, email, subscriptionId=three[1])["unsubscribeSingleUrl"]
    # multipart/form-data is allowed by RFC 8058 as well as the urlencoded form.
    response = httpx.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    found = statuses(api, email)
    assert [found[sid] for sid in three] == ["SUBSCRIBED", "UNSUBSCRIBED", "SUBSCRIBED"]
    assert portal.events(email)[-1]["source"] == "List-unsubscribe header"


def test_one_click_keeps_working_after_the_link_expired(api: httpx.Client, portal: PortalFixture) -> None:
    email = "old.mail@example.com"
    url = old_link(portal, "unsubscribe-all", email, age_days=LINK_MAX_AGE_DAYS + 5)
    assert httpx.post(url, data=ONE_CLICK).status_code == 200
    assert set(statuses(api, email).values()) == {"UNSUBSCRIBED"}


def test_a_manage_link_takes_no_one_click(api: httpx.Client, portal: PortalFixture) -> None:
    email = "manage.one.click@example.com"
    url = links_for(api, email)["managePreferencesUrl"]
    before = snapshot(api, portal, email)
    assert httpx.post(url, data=ONE_CLICK).status_code == 403
    assert snapshot(api, portal, email) == before


# -- GET never changes anything -------------------------------------------------------------------------


def test_following_any_link_changes_nothing(api: httpx.Client, portal: PortalFixture, three: list[int]) -> None:
    email = "scanner@example.com"
    set_status(api, email, three[0], "SUBSCRIBED")
    generated = links_for(api, email, subscriptionId=three[0])
    before = snapshot(api, portal, email)
    for url in (generated["managePreferencesUrl"], generated["unsubscribeAllUrl"], generated["unsubscribeSingleUrl"]):
        for query in ("", "?List-Unsubscribe=One-Click", "?action=unsubscribe_all&subscription=1"):
            assert httpx.get(url + query).status_code == 200
        assert httpx.head(url).status_code in (200, 405)
    assert snapshot(api, portal, email) == before


# -- CSRF ---------------------------------------------------------------------------------------------------


def test_form_posts_need_the_csrf_token_and_cookie(
    api: httpx.Client, portal: PortalFixture, browser: httpx.Client
) -> None:
    email = "csrf@example.com"
    generated = links_for(api, email)
    url = generated["unsubscribeAllUrl"]
    before = snapshot(api, portal, email)
    page = browser.get(url)
    token = csrf_of(page.text)
    cookie = page.cookies.get("commprefs_csrf")
    assert cookie, "the page sets the CSRF cookie"
    set_cookie = page.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/preferences" in set_cookie

    # No token; a token without the cookie (a cross-site form); a token for another link; a forged token.
    other = csrf_of(browser.get(generated["managePreferencesUrl"]).text)
    attempts = [
        (browser, {}),
        (httpx.Client(), {"csrf_token": token}),
        (browser, {"csrf_token": other}),
        (browser, {"csrf_token": token[:-2] + ("AA" if not token.endswith("AA") else "BB")}),
    ]
    for client, data in attempts:
        refused = client.post(url, data=data)
        assert refused.status_code == 403, data
        assert h1(refused) == "Please try again"
    assert snapshot(api, portal, email) == before

    accepted = browser.post(url, data={"csrf_token": token, "reason": "too_many", "reason_detail": "weekly"})
    assert accepted.status_code == 200
    assert h1(accepted) == "You are unsubscribed"
    event = portal.events(email)[-1]
    assert event["source"] == "Preference page"
    assert event["reason"] == "too_many: weekly"
    assert event["language"] == "en"
    assert event["user_agent"] == "Mozilla/5.0 (test browser)"


# -- forged, replayed, expired and revoked links --------------------------------------------------------------


def _mutations(url: str) -> list[str]:
    """The URL with one character changed, at several places in the token and the portal id."""
    base, token = url.rsplit("/", 1)
    payload, stamp, signature = token.split(".")
    changed = []
    for part, index in (("payload", 3), ("payload", len(payload) // 2), ("stamp", 1), ("sig", 0), ("sig", -1)):
        value = {"payload": payload, "stamp": stamp, "sig": signature}[part]
        position = index % len(value)
        flipped = "A" if value[position] != "A" else "B"
        value = value[:position] + flipped + value[position + 1 :]
        parts = {"payload": payload, "stamp": stamp, "sig": signature} | {part: value}
        changed.append(f"{base}/{parts['payload']}.{parts['stamp']}.{parts['sig']}")
    prefix, portal_id, purpose = base.rsplit("/", 2)
    changed.append(f"{prefix}/{int(portal_id) + 1}/{purpose}/{token}")
    return changed


def test_a_link_with_one_character_changed_only_shows_an_error(api: httpx.Client, portal: PortalFixture) -> None:
    email = "tamper@example.com"
    generated = links_for(api, email, subscriptionId=portal.marketing)
    before = snapshot(api, portal, email)
    for key in ("managePreferencesUrl", "unsubscribeAllUrl", "unsubscribeSingleUrl"):
        for url in _mutations(generated[key]):
            shown = httpx.get(url)
            assert shown.status_code == 400, url
            assert h1(shown) == "This link is not valid"
            assert httpx.post(url, data=ONE_CLICK).status_code == 400
    assert snapshot(api, portal, email) == before


def test_links_cannot_be_replayed_against_another_portal_or_purpose(
    api: httpx.Client, portal: PortalFixture, server: object
) -> None:
    from tests.conftest import make_portal

    other = make_portal(portal.server)
    email = "replay@example.com"
    mine = links_for(api, email)
    token = mine["unsubscribeAllUrl"].rsplit("/", 1)[1]
    manage_token = mine["managePreferencesUrl"].rsplit("/", 1)[1]
    base = portal.server.base_url
    with other.client() as other_api:
        before = snapshot(other_api, other, email)
        attempts = [
            f"{base}/preferences/{other.id}/unsubscribe-all/{token}",  # another portal
            f"{base}/preferences/{portal.id}/unsubscribe-all/{manage_token}",  # another purpose
            f"{base}/preferences/{portal.id}/unsubscribe/{token}",
        ]
        for url in attempts:
            assert httpx.post(url, data=ONE_CLICK).status_code == 400, url
        assert snapshot(other_api, other, email) == before
    assert statuses(api, email) == {sid: "NOT_SPECIFIED" for sid in portal.definitions.values()}


def test_rotating_the_secret_invalidates_earlier_links(api: httpx.Client, portal: PortalFixture) -> None:
    email = "rotate@example.com"
    url = links_for(api, email)["unsubscribeAllUrl"]
    rotated = api.post("/commprefs/v1/portal/rotate-link-secret")
    assert rotated.status_code == 200
    assert httpx.post(url, data=ONE_CLICK).status_code == 400
    assert set(statuses(api, email).values()) == {"NOT_SPECIFIED"}
    assert httpx.post(links_for(api, email)["unsubscribeAllUrl"], data=ONE_CLICK).status_code == 200


def test_an_expired_manage_link_shows_a_localised_410(api: httpx.Client, portal: PortalFixture) -> None:
    email = "expired@example.com"
    url = old_link(portal, "manage", email, age_days=LINK_MAX_AGE_DAYS + 1, language="fr")
    response = httpx.get(url)
    assert response.status_code == 410
    assert h1(response) == "Ce lien a expiré"
    assert httpx.post(url, data={"subscription": str(portal.marketing)}).status_code == 410
    fresh = old_link(portal, "manage", email, age_days=LINK_MAX_AGE_DAYS - 1)
    assert httpx.get(fresh).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/preferences/abc/manage/x.y.z",
        "/preferences/99999999999999999999999/manage/x.y.z",
        "/preferences/1/manage/x.y.z",
        "/preferences/1/manage/" + "a" * 3000,
        "/preferences/1/unsubscribe-all/%00%ff",
        "/preferences/0/request-link",
    ],
)
def test_junk_links_get_an_error_page_never_a_500(server: object, portal: PortalFixture, path: str) -> None:
    for method in ("GET", "POST"):
        response = httpx.request(method, portal.server.base_url + path, data=ONE_CLICK if method == "POST" else None)
        assert response.status_code in (400, 404), (method, path, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
        assert "Traceback" not in response.text


def test_malformed_and_oversized_form_bodies_are_refused_cleanly(api: httpx.Client, portal: PortalFixture) -> None:
    email = "bodies@example.com"
    url = links_for(api, email)["unsubscribeAllUrl"]
    before = snapshot(api, portal, email)
    bad_multipart = httpx.post(
        url, content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert bad_multipart.status_code in (400, 403)
    too_big = httpx.post(
        url, content=b"a=" + b"x" * 1_100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert too_big.status_code == 413
    invalid_utf8 = httpx.post(
        url,
        content=b"List-Unsubscribe=One-Click%ff%fe\xff",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert invalid_utf8.status_code in (400, 403)
    assert snapshot(api, portal, email) == before


def test_a_single_link_to_an_archived_subscription_is_gone(api: httpx.Client, portal: PortalFixture) -> None:
    sid = create_definition(api, "Seasonal")
    url = links_for(api, "gone@example.com", subscriptionId=sid)["unsubscribeSingleUrl"]
    assert api.post(f"/commprefs/v1/definitions/{sid}/deactivate").status_code == 200
    response = httpx.get(url)
    assert response.status_code == 410
    assert h1(response) == "This subscription no longer exists"


# -- the preference page --------------------------------------------------------------------------------------


def test_saving_changes_only_what_the_contact_changed(
    api: httpx.Client, portal: PortalFixture, browser: httpx.Client, three: list[int]
) -> None:
    email = "saver@example.com"
    a, b, c = three
    url = links_for(api, email)["managePreferencesUrl"]
    page = browser.get(url)
    assert page.status_code == 200
    for sid in three:
        assert f'value="{sid}:0"' in page.text
    internal = portal.definitions["One to One"]
    assert f'value="{internal}:' not in page.text, "internal subscriptions are not on the page"
    # Meanwhile, through the API: b is subscribed (the page still shows it unticked).
    set_status(api, email, b, "SUBSCRIBED")
    form = [
        ("csrf_token", csrf_of(page.text)),
        ("action", "save"),
        *[("shown", f"{sid}:0") for sid in three],
        ("shown", f"{internal}:0"),  # forged: not on the page, must be ignored
        ("subscription", str(a)),
        ("subscription", str(internal)),
    ]
    saved = browser.post(url, data=kit_form(form))
    assert saved.status_code == 200
    assert h1(saved) == "Your preferences are saved"
    assert "Subscribed to Marketing Information" in saved.text
    found = statuses(api, email)
    assert found[a] == "SUBSCRIBED"
    assert found[b] == "SUBSCRIBED", "an unchanged box must not undo a change made elsewhere"
    assert found[c] == "NOT_SPECIFIED"
    assert found[internal] == "NOT_SPECIFIED"
    event = portal.events(email)[-1]
    assert (event["subscription_id"], event["source"], event["legal_basis"]) == (
        a,
        "Preference page",
        "CONSENT_WITH_NOTICE",
    )


def test_ticking_a_box_after_an_opt_out_resubscribes_only_that_one(
    api: httpx.Client, portal: PortalFixture, browser: httpx.Client, three: list[int]
) -> None:
    email = "comeback@example.com"
    generated = links_for(api, email)
    httpx.post(generated["unsubscribeAllUrl"], data=ONE_CLICK)
    page = browser.get(generated["managePreferencesUrl"])
    assert "You are unsubscribed from all emails." in page.text
    saved = submit(
        browser,
        generated["managePreferencesUrl"],
        [("action", "save"), *[("shown", f"{sid}:0") for sid in three], ("subscription", str(three[2]))],
    )
    assert saved.status_code == 200
    found = statuses(api, email)
    assert [found[sid] for sid in three] == ["UNSUBSCRIBED", "UNSUBSCRIBED", "SUBSCRIBED"]
    assert {source for _, source in v3_statuses(api, email).values()} == {"SUBSCRIPTION_STATUS"}


def test_unsubscribe_all_from_a_brand_page_opts_out_of_that_brand(
    api: httpx.Client, portal: PortalFixture, browser: httpx.Client
) -> None:
    brand = api.post("/commprefs/v1/business-units", json={"name": "Second brand"}).json()["id"]
    theirs = create_definition(api, "Brand news", businessUnitId=brand)
    email = "brand.page@example.com"
    generated = links_for(api, email, businessUnitId=brand)
    page = browser.get(generated["managePreferencesUrl"])
    assert "Second brand" in page.text and "Brand news" in page.text
    assert "Marketing Information" not in page.text, "another brand's subscriptions are not shown"
    done = submit(browser, generated["managePreferencesUrl"], {"action": "unsubscribe_all"})
    assert h1(done) == "You are unsubscribed"
    found = statuses(api, email)
    assert found[theirs] == "UNSUBSCRIBED"
    assert found[portal.marketing] == "NOT_SPECIFIED"
    assert portal.events(email)[-1]["wide_scope"] == "BUSINESS_UNIT_WIDE"


# -- languages and headers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link_language", "query", "accept", "portal_default", "expected", "title"),
    [
        ("de", "", "fr", "en", "de", "Ihre E-Mail-Einstellungen"),
        ("fr-CA", "", None, "en", "fr", "Vos préférences e-mail"),
        (None, "", "fr-CH, de;q=0.5", "en", "fr", "Vos préférences e-mail"),
        (None, "", "es, de;q=0.8", "en", "de", "Ihre E-Mail-Einstellungen"),
        (None, "", None, "de", "de", "Ihre E-Mail-Einstellungen"),
        ("es", "", None, "en", "en", "Your email preferences"),
        ("de", "?lang=fr", None, "en", "fr", "Vos préférences e-mail"),
    ],
)
def test_the_page_language(
    api: httpx.Client,
    portal: PortalFixture,
    three: list[int],
    link_language: str | None,
    query: str,
    accept: str | None,
    portal_default: str,
    expected: str,
    title: str,
) -> None:
    portal.update(default_language=portal_default)
    body = {"language": link_language} if link_language else {}
    url = links_for(api, "lang@example.com", **body)["managePreferencesUrl"] + query
    response = httpx.get(url, headers={"Accept-Language": accept} if accept else {})
    assert response.status_code == 200
    assert f'<html lang="{expected}">' in response.text
    assert h1(response) == title
    if expected == "de":
        assert "Rundbrief" in response.text, "the definition's German translation is used"


def test_every_page_answer_carries_the_security_headers(api: httpx.Client) -> None:
    generated = links_for(api, "headers@example.com")
    for response in (
        httpx.get(generated["managePreferencesUrl"]),
        httpx.get(generated["managePreferencesUrl"] + "x"),  # the error page too
        httpx.post(generated["unsubscribeAllUrl"], data=ONE_CLICK),
    ):
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"], "no script may run: default-src 'none'"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"
