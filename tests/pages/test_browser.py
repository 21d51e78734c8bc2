"""The contact pages in a real browser: Debian's chromium driven by Playwright, on both stores.

What only a browser shows: the forms work with the keyboard alone and show where the focus is, the
CSP lets the stylesheet in and nothing else is needed (no scripts), the pages fit a phone, and the
language comes from the link or the browser's Accept-Language. Every change is checked through the
v4 and v3 APIs and the consent events. Each page visited is saved as a full-page screenshot under
test-output/screenshots/<store>-<name>.png.
"""

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Response, sync_playwright

from commprefs.clock import now_ms
from commprefs.tenancy import setup as tenancy
from tests.client import set_status
from tests.conftest import LINK_MAX_AGE_DAYS, PortalFixture
from tests.pages.kit import links_for, old_link, statuses, v3_statuses

CHROMIUM = Path(os.environ.get("COMMPREFS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
SAVE = "button[name=action][value=save]"
MAX_TABS = 40

# Two definitions besides HubSpot's visible "Marketing Information", translated into German and French.
PRODUCT = ("Product updates", "New features, once a month.")
EVENTS = ("Events", "Invitations to webinars and meetups.")
TRANSLATIONS = {
    PRODUCT[0]: [("de", "Produktneuigkeiten", "Neue Funktionen, einmal im Monat."), ("fr", "Nouveautés produit", "")],
    EVENTS[0]: [("de", "Veranstaltungen", "Einladungen zu Webinaren."), ("fr", "Événements", "")],
}


# -- the browser ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Browsing:
    """Opens pages in fresh browser contexts, records console errors and saves screenshots."""

    browser: Browser
    portal: PortalFixture
    problems: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def page(self, **options: Any) -> Page:
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        return page

    def open(self, url: str, **options: Any) -> tuple[Page, Response]:
        page = self.page(**options)
        response = page.goto(url)
        assert response is not None, url
        return page, response

    def screenshot(self, page: Page, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{self.portal.server.kind}-{name}.png", full_page=True)

    def _console(self, message: ConsoleMessage) -> None:
        source = message.location.get("url", "")
        # Chromium asks for /favicon.ico by itself; the pages do not link one.
        if message.type in ("error", "warning") and not source.endswith("/favicon.ico"):
            self.problems.append(f"console {message.type}: {message.text} ({source})")


@pytest.fixture
def browsing(browser: Browser, portal: PortalFixture) -> Iterator[Browsing]:
    made = Browsing(browser, portal)
    yield made
    for context in made.contexts:
        context.close()


@pytest.fixture
def catalogue(api: httpx.Client, portal: PortalFixture) -> dict[str, int]:
    """The portal's visible definitions by (English) name: Marketing Information and two made here."""
    made = {"Marketing Information": portal.marketing}
    for name, description in (PRODUCT, EVENTS):
        body = {
            "name": name,
            "description": description,
            "translations": [
                {"languageCode": code, "name": local, "description": text} for code, local, text in TRANSLATIONS[name]
            ],
        }
        response = api.post("/commprefs/v1/definitions", json=body)
        assert response.status_code == 201, response.text
        made[name] = int(response.json()["id"])
    return made


# -- helpers -------------------------------------------------------------------------------------------


def h1(page: Page) -> str:
    return page.locator("h1").inner_text().strip()


def changes_listed(page: Page) -> list[str]:
    return sorted(page.locator("ul.changes li").all_inner_texts())


def focused_matches(page: Page, selector: str) -> bool:
    return bool(page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector))


def tab_to(page: Page, selector: str) -> None:
    """Press Tab until the element matching `selector` has the focus, as a keyboard user would."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if focused_matches(page, selector):
            return
    pytest.fail(f"{selector} never got the focus in {MAX_TABS} presses of Tab")


def assert_focus_visible(page: Page) -> None:
    """The focused element shows an outline that can be seen (not `none`, not zero wide)."""
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth, document.activeElement.matches(':focus-visible')]; }"
    )
    outline_style, outline_width, focus_visible = style
    assert focus_visible, "keyboard focus should match :focus-visible"
    assert outline_style != "none" and float(outline_width.removesuffix("px")) >= 2, style


def submit(page: Page, action: Callable[[], None]) -> Response:
    """Do `action` (a click or a key press) and return the answer of the navigation it causes."""
    with page.expect_navigation() as navigation:
        action()
    response = navigation.value
    assert response is not None
    return response


def tampered(url: str) -> str:
    """`url` with one character in the middle of its token's signature changed."""
    head, token = url.rsplit("/", 1)
    rest, signature = token.rsplit(".", 1)
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}/{rest}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def page_events(portal: PortalFixture, email: str, since: int = 0) -> list[dict[str, Any]]:
    return portal.events(email)[since:]


# -- 1. keyboard only ------------------------------------------------------------------------------------


def test_keyboard_only_changes_two_subscriptions(
    api: httpx.Client, portal: PortalFixture, catalogue: dict[str, int], browsing: Browsing
) -> None:
    email = "keyboard@example.com"
    marketing, product, events = catalogue["Marketing Information"], catalogue[PRODUCT[0]], catalogue[EVENTS[0]]
    set_status(api, email, marketing, "SUBSCRIBED")
    set_status(api, email, events, "SUBSCRIBED")
    before = len(portal.events(email))
    page, response = browsing.open(links_for(api, email)["managePreferencesUrl"])
    assert response.status == 200
    boxes = page.locator("input[type=checkbox][name=subscription]")
    assert boxes.count() == 3, "Marketing Information and the two new ones; the internal two are not shown"
    assert [boxes.nth(i).is_checked() for i in range(3)] == [True, False, True]
    browsing.screenshot(page, "manage-en")

    tab_to(page, f"#subscription-{marketing}")
    assert_focus_visible(page)
    page.keyboard.press("Space")
    tab_to(page, f"#subscription-{product}")
    assert_focus_visible(page)
    page.keyboard.press("Space")
    assert not page.locator(f"#subscription-{marketing}").is_checked()
    assert page.locator(f"#subscription-{product}").is_checked()
    tab_to(page, SAVE)
    assert_focus_visible(page)
    saved = submit(page, lambda: page.keyboard.press("Enter"))

    assert saved.status == 200
    assert h1(page) == "Your preferences are saved"
    assert changes_listed(page) == ["Subscribed to Product updates", "Unsubscribed from Marketing Information"]
    browsing.screenshot(page, "saved-en")

    found = statuses(api, email)
    assert (found[marketing], found[product], found[events]) == ("UNSUBSCRIBED", "SUBSCRIBED", "SUBSCRIBED")
    internal = set(found) - set(catalogue.values())
    assert len(internal) == 2 and {found[i] for i in internal} == {"NOT_SPECIFIED"}
    v3 = v3_statuses(api, email)
    assert [v3[d][0] for d in (marketing, product, events)] == ["NOT_SUBSCRIBED", "SUBSCRIBED", "SUBSCRIBED"]

    new = page_events(portal, email, before)
    assert sorted((e["subscription_id"], e["new_status"]) for e in new) == sorted(
        [(marketing, "UNSUBSCRIBED"), (product, "SUBSCRIBED")]
    )
    for event in new:
        assert event["source"] == "Preference page"
        assert "Chrome" in (event["user_agent"] or "")
        assert event["language"] == "en"
        assert event["ip"] == "127.0.0.1"
    assert browsing.problems == []


# -- 2. and 3. unsubscribe from all ------------------------------------------------------------------------


def assert_unsubscribed_everywhere(api: httpx.Client, email: str) -> None:
    found = statuses(api, email)
    assert len(found) == 5 and set(found.values()) == {"UNSUBSCRIBED"}, found
    v3 = v3_statuses(api, email)
    assert len(v3) == 5 and set(v3.values()) == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")}, v3


def test_unsubscribe_all_link_with_a_reason(
    api: httpx.Client, portal: PortalFixture, catalogue: dict[str, int], browsing: Browsing
) -> None:
    email = "leaving@example.com"
    set_status(api, email, catalogue[PRODUCT[0]], "SUBSCRIBED")
    before = len(portal.events(email))
    page, response = browsing.open(links_for(api, email)["unsubscribeAllUrl"])
    assert response.status == 200
    assert h1(page) == "Unsubscribe from all emails?"
    assert email in page.locator(".lead").inner_text()
    assert statuses(api, email)[catalogue[PRODUCT[0]]] == "SUBSCRIBED", "showing the page changes nothing"

    page.get_by_label("The emails are not relevant to me").check()  # through its <label for=...>
    assert page.locator("#reason-not_relevant").is_checked()
    page.get_by_label("Anything else you want to tell us").fill("Mostly about shoes I never buy.")
    browsing.screenshot(page, "unsubscribe-all-confirm")
    done = submit(page, lambda: page.get_by_role("button", name="Unsubscribe", exact=True).click())

    assert done.status == 200
    assert h1(page) == "You are unsubscribed"
    assert f"{email} will no longer receive marketing emails" in page.locator("[role=status]").inner_text()
    browsing.screenshot(page, "unsubscribe-all-done")
    assert_unsubscribed_everywhere(api, email)
    new = page_events(portal, email, before)
    assert new and {e["source"] for e in new} == {"Preference page"}
    assert {e["reason"] for e in new} == {"not_relevant: Mostly about shoes I never buy."}
    assert {e["language"] for e in new} == {"en"}

    # The manage page now says so, and offers to subscribe again.
    submit(page, lambda: page.get_by_role("link", name="Manage your email preferences").click())
    assert "You are unsubscribed from all emails." in page.locator(".notice").inner_text()
    assert page.locator("input[name=subscription]:checked").count() == 0
    assert browsing.problems == []


def test_unsubscribe_all_button_on_the_manage_page(
    api: httpx.Client, portal: PortalFixture, catalogue: dict[str, int], browsing: Browsing
) -> None:
    email = "button@example.com"
    set_status(api, email, catalogue["Marketing Information"], "SUBSCRIBED")
    before = len(portal.events(email))
    page, _ = browsing.open(links_for(api, email)["managePreferencesUrl"])
    done = submit(page, lambda: page.get_by_role("button", name="Unsubscribe from all").click())

    assert done.status == 200
    assert h1(page) == "You are unsubscribed"
    browsing.screenshot(page, "manage-unsubscribed-all")
    assert_unsubscribed_everywhere(api, email)
    new = page_events(portal, email, before)
    assert new and {(e["source"], e["reason"], e["language"]) for e in new} == {("Preference page", None, "en")}
    assert browsing.problems == []


# -- 4. and 5. links that do not work -----------------------------------------------------------------


def test_tampered_link_is_refused_and_changes_nothing(
    api: httpx.Client, portal: PortalFixture, catalogue: dict[str, int], browsing: Browsing
) -> None:
    email = "tamper@example.com"
    portal.update(default_language="fr")  # before any request: the server caches the portal for a moment
    set_status(api, email, catalogue["Marketing Information"], "SUBSCRIBED")
    links = links_for(api, email)
    before = (statuses(api, email), len(portal.events(email)))

    page, response = browsing.open(tampered(links["managePreferencesUrl"]))
    assert response.status == 400
    assert h1(page) == "This link is not valid"
    assert page.locator("form").count() == 0
    browsing.screenshot(page, "invalid-en")
    page, response = browsing.open(tampered(links["unsubscribeAllUrl"]), locale="de-DE")
    assert (response.status, h1(page)) == (400, "Dieser Link ist ungültig")
    assert page.locator("html").get_attribute("lang") == "de"

    # A genuine page whose form is pointed at a tampered link: refused although its CSRF pair is good.
    page, _ = browsing.open(links["managePreferencesUrl"])
    page.locator(f"#subscription-{catalogue['Marketing Information']}").uncheck()
    page.locator("form.card").first.evaluate("(form, url) => form.setAttribute('action', url)", tampered(page.url))
    refused = submit(page, lambda: page.locator(SAVE).click())
    assert refused.status == 400 and h1(page) == "This link is not valid"
    # RFC 8058 one-click needs no page and no CSRF: the signature is all that protects it.
    one_click = page.request.post(tampered(links["unsubscribeAllUrl"]), form={"List-Unsubscribe": "One-Click"})
    assert one_click.status == 400

    # A browser language we have no catalogue for: the portal's default language.
    page, response = browsing.open(tampered(links["managePreferencesUrl"]), locale="es-ES")
    assert (response.status, h1(page)) == (400, "Ce lien n’est pas valide")
    browsing.screenshot(page, "invalid-fr")
    assert (statuses(api, email), len(portal.events(email))) == before
    assert [p for p in browsing.problems if "400" not in p] == []


def test_expired_manage_link(api: httpx.Client, portal: PortalFixture, browsing: Browsing) -> None:
    email = "old@example.com"
    page, response = browsing.open(old_link(portal, "manage", email, age_days=LINK_MAX_AGE_DAYS + 1))
    assert response.status == 410
    assert h1(page) == "This link has expired"
    assert page.locator("input[name=subscription]").count() == 0
    browsing.screenshot(page, "expired")
    page, response = browsing.open(old_link(portal, "manage", email, age_days=LINK_MAX_AGE_DAYS - 1))
    assert (response.status, h1(page)) == (200, "Your email preferences"), "a link within its age still works"


# -- 6. languages -------------------------------------------------------------------------------------------


def test_german_link_and_french_browser(
    api: httpx.Client, portal: PortalFixture, catalogue: dict[str, int], browsing: Browsing
) -> None:
    email = "sprachen@example.com"
    product = catalogue[PRODUCT[0]]
    before = len(portal.events(email))
    # The link's language wins over the browser's French.
    page, response = browsing.open(links_for(api, email, language="de")["managePreferencesUrl"], locale="fr-FR")
    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "de"
    assert h1(page) == "Ihre E-Mail-Einstellungen"
    assert page.locator(SAVE).inner_text().strip() == "Einstellungen speichern"
    label = page.locator(f"label[for=subscription-{product}]")
    assert label.locator(".name").inner_text() == "Produktneuigkeiten"
    assert label.locator(".description").inner_text() == "Neue Funktionen, einmal im Monat."
    assert page.locator("label .name").all_inner_texts() == [
        "Marketing Information",  # no German translation: the definition's own name
        "Produktneuigkeiten",
        "Veranstaltungen",
    ]
    browsing.screenshot(page, "manage-de")
    label.click()  # clicking the label ticks its box
    assert page.locator(f"#subscription-{product}").is_checked()
    submit(page, lambda: page.locator(SAVE).click())
    assert h1(page) == "Ihre Einstellungen sind gespeichert"
    assert len(changes_listed(page)) == 1 and changes_listed(page)[0].endswith(" abonniert")
    browsing.screenshot(page, "saved-de")
    assert statuses(api, email)[product] == "SUBSCRIBED"
    new = page_events(portal, email, before)
    assert [(e["subscription_id"], e["language"], e["source"]) for e in new] == [(product, "de", "Preference page")]

    page, response = browsing.open(links_for(api, email)["managePreferencesUrl"], locale="fr-FR")
    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "fr"
    assert h1(page) == "Vos préférences e-mail"
    assert page.locator(SAVE).inner_text().strip() == "Enregistrer les préférences"
    assert page.locator(f"label[for=subscription-{product}] .name").inner_text() == "Nouveautés produit"
    assert page.locator(f"#subscription-{product}").is_checked()
    browsing.screenshot(page, "manage-fr")
    # The visitor's own pick on the page wins over everything.
    submit(page, lambda: page.get_by_role("link", name="English").click())
    assert page.locator("html").get_attribute("lang") == "en" and h1(page) == "Your email preferences"
    assert browsing.problems == []


def test_confirmation_names_the_translated_subscription(
    api: httpx.Client, catalogue: dict[str, int], browsing: Browsing
) -> None:
    page, _ = browsing.open(links_for(api, "bestaetigung@example.com", language="de")["managePreferencesUrl"])
    page.locator(f"#subscription-{catalogue[EVENTS[0]]}").check()
    submit(page, lambda: page.locator(SAVE).click())
    assert h1(page) == "Ihre Einstellungen sind gespeichert"
    assert changes_listed(page) == ["Veranstaltungen abonniert"]


# -- 7. and 8. no scripts, the stylesheet, a phone -----------------------------------------------------------


def test_no_scripts_and_the_stylesheet_passes_the_csp(
    api: httpx.Client, portal: PortalFixture, browsing: Browsing
) -> None:
    links = links_for(api, "styled@example.com")
    stylesheets: list[int] = []
    for url in (links["managePreferencesUrl"], links["unsubscribeAllUrl"]):
        page = browsing.page()
        page.on("response", lambda r: stylesheets.append(r.status) if r.url.endswith("/style.css") else None)
        response = page.goto(url)
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "style-src 'self'" in csp and "script-src" not in csp
        assert page.evaluate("document.scripts.length") == 0
        assert page.locator("[onclick], [onload], [onsubmit], [style]").count() == 0, "no inline code or styles"
        assert "system-ui" in page.evaluate("getComputedStyle(document.body).fontFamily")
        assert page.locator(".card").first.evaluate("e => getComputedStyle(e).borderTopLeftRadius") == "12px"
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(243, 245, 248)"
    assert stylesheets and set(stylesheets) == {200}
    assert browsing.problems == [], "console errors or CSP violations"


def test_mobile_viewport_has_no_horizontal_scroll(api: httpx.Client, portal: PortalFixture, browsing: Browsing) -> None:
    email = "a.rather.long.address.for.a.small.screen@subdomain.of-a-long-company-name.example.com"
    with portal.server.store.transaction() as tx:
        tenancy.create_definition(
            tx,
            portal.id,
            "Quarterly-customer-satisfaction-survey-invitations-and-results",
            "Surveys and what came out of them.",
            now=now_ms(),
        )
    links = links_for(api, email)
    mobile = {"viewport": {"width": 375, "height": 667}, "is_mobile": True, "has_touch": True}
    for url, name in ((links["managePreferencesUrl"], "mobile-manage"), (links["unsubscribeAllUrl"], "mobile-unsub")):
        page, response = browsing.open(url, **mobile)
        assert response.status == 200
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        button = page.locator("button.danger").last.bounding_box()
        assert button is not None and button["x"] >= 0 and button["x"] + button["width"] <= 375
        assert button["width"] > 250, "buttons take the full width on a small screen"
        browsing.screenshot(page, name)
    assert browsing.problems == []
