"""The contact-facing pages, served under /preferences.

GET never changes anything (mail scanners follow links). Changes are form POSTs with a CSRF token,
except RFC 8058 one-click: a POST of `List-Unsubscribe=One-Click` to an unsubscribe link, which needs
no page and no cookie. Every change goes through the consent rules with the page as its actor.
"""

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.responses import HTMLResponse, Response

from commprefs.api.errors import Failure, classify
from commprefs.api.pipeline import log_unhandled
from commprefs.consent import Consent, Effective, links
from commprefs.consent.links import LinkClaims, LinkExpired, LinkInvalid, Purpose
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Source, Status
from commprefs.domain.errors import InvalidEmail, NotFound
from commprefs.domain.model import Actor, Definition, Portal
from commprefs.pages import i18n, security
from commprefs.pages.mailer import Mailer
from commprefs.pages.ratelimit import SlidingWindow
from commprefs.services import Services

log = logging.getLogger("commprefs.pages")
HERE = Path(__file__).parent
REQUEST_LINK = "request-link"
PortalId = Annotated[int, PathParam(ge=1, le=2**53)]
Token = Annotated[str, PathParam(max_length=2000)]
REASONS = ("too_many", "not_relevant", "never_signed_up", "other")
MAX_REASON_CHARS = 500


# -- rendering --------------------------------------------------------------------------------------


@cache
def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(disabled_extensions=("txt",), default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.globals["LANGUAGES"] = i18n.LANGUAGES
    return env


def render(template: str, language: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = environment(language).get_template(template).render(language=language, **context)
    return HTMLResponse(html, status_code=status)


def translate(language: str, message: str, **values: Any) -> str:
    text = i18n.translations(language).gettext(message)
    return text % values if values else text


# -- what every page needs ----------------------------------------------------------------------------


class PageError(Exception):
    """Ends a page request with an error page."""

    def __init__(self, status: int, template: str, **context: Any) -> None:
        super().__init__(template)
        self.status = status
        self.template = template
        self.context = context


@dataclass(frozen=True, slots=True)
class Opened:
    """A verified link: its portal, what it claims, and the language the page is shown in."""

    portal: Portal
    claims: LinkClaims
    token: str
    language: str


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _consent(request: Request) -> Consent:
    return _services(request).consent


def _mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


def _chosen_language(request: Request) -> str | None:
    return request.query_params.get("lang")


def _fallback_language(request: Request, portal: Portal | None = None, link: str | None = None) -> str:
    return i18n.choose(
        chosen=_chosen_language(request),
        link=link,
        header=request.headers.get("accept-language"),
        portal_default=portal.default_language if portal else None,
    )


async def _portal(request: Request, portal_id: int) -> Portal | None:
    return await _services(request).tenancy.portal(portal_id)


async def open_link(request: Request, portal_id: int, token: str, purpose: Purpose) -> Opened:
    portal = await _portal(request, portal_id)
    if portal is None:
        raise PageError(400, "invalid.html", language=_fallback_language(request))
    days = request.app.state.settings.link_max_age_days
    try:
        claims = links.verify(portal, token, purpose, round(days * 86400) if days > 0 else None)
    except LinkExpired as exc:
        if purpose is not Purpose.MANAGE:
            # An unsubscribe link keeps working for as long as its signature is genuine: it can only
            # reduce mail, and a sender must honour unsubscribes from old emails (CAN-SPAM, RFC 8058).
            claims = exc.claims
            return Opened(portal, claims, token, _fallback_language(request, portal, claims.language))
        language = _fallback_language(request, portal, exc.claims.language)
        raise PageError(
            410,
            "expired.html",
            language=language,
            portal=portal,
            mail_enabled=_mailer(request).enabled,
            expired_token=token,
            purpose=purpose.value,
            csrf=_csrf(request, portal, REQUEST_LINK),
        ) from exc
    except LinkInvalid as exc:
        raise PageError(400, "invalid.html", language=_fallback_language(request, portal), portal=portal) from exc
    return Opened(portal, claims, token, _fallback_language(request, portal, claims.language))


def _csrf(request: Request, portal: Portal, bound_to: str) -> str:
    nonce = request.state.csrf_nonce = request.cookies.get(security.CSRF_COOKIE) or security.new_nonce()
    return security.csrf_token(portal, nonce, bound_to)


async def _form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=2000)
    except (MultiPartException, ValueError) as exc:  # a malformed body is the sender's error, not ours
        raise RequestValidationError([{"type": "form", "msg": str(exc)}]) from exc


def _check_csrf(request: Request, form: FormData, portal: Portal, bound_to: str, language: str) -> None:
    submitted = form.get(security.CSRF_FIELD)
    try:
        security.check_csrf(
            portal,
            request.cookies.get(security.CSRF_COOKIE),
            submitted if isinstance(submitted, str) else None,
            bound_to,
        )
    except security.CsrfFailed as exc:
        raise PageError(403, "forbidden.html", language=language) from exc


def _actor(request: Request, source: Source, language: str | None, reason: str | None = None) -> Actor:
    return Actor(
        source=source,
        request_id=getattr(request.state, "request_id", None),
        ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
        language=language,
        reason=reason,
    )


def _reason(form: FormData) -> str | None:
    code = form.get("reason")
    detail = form.get("reason_detail")
    parts = [code if isinstance(code, str) and code in REASONS else None]
    if isinstance(detail, str) and detail.strip():
        parts.append(detail.replace("\x00", "").strip())  # a stray NUL never stops an unsubscribe
    text = ": ".join(p for p in parts if p)
    return text[:MAX_REASON_CHARS] or None


def _is_one_click(form: FormData) -> bool:
    return form.get("List-Unsubscribe") == "One-Click"


def _other_links(opened: Opened) -> dict[str, str]:
    """Relative URLs of the manage and unsubscribe-all pages for the same contact."""
    return {
        purpose.value: f"{links.PAGES_PREFIX}/{opened.portal.id}/{purpose.value}/"
        + links.sign(opened.portal, opened.claims, purpose)
        for purpose in (Purpose.MANAGE, Purpose.UNSUBSCRIBE_ALL)
    }


# -- the preference page ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    name: str
    description: str
    subscribed: bool
    highlighted: bool


def _rows(definitions: list[Definition], states: list[Effective], opened: Opened) -> list[Row]:
    status = {s.definition.id: s.status for s in states}
    rows = []
    for definition in definitions:
        if definition.id not in status:
            continue
        name, description = i18n.localized(definition, opened.language)
        rows.append(
            Row(
                definition.id,
                name,
                description,
                status[definition.id] is Status.SUBSCRIBED,
                definition.id == opened.claims.subscription_id,
            )
        )
    return rows


async def manage_page(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened = await open_link(request, portal_id, token, Purpose.MANAGE)
    claims = opened.claims
    state = await _consent(request).preference_page(opened.portal.id, claims.subscriber, claims.business_unit_id)
    return render(
        "manage.html",
        opened.language,
        brand=state.brand,
        email=claims.subscriber,
        rows=_rows(state.definitions, state.states, opened),
        opted_out=state.opted_out,
        csrf=_csrf(request, opened.portal, token),
        links=_other_links(opened),
    )


async def save_preferences(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened = await open_link(request, portal_id, token, Purpose.MANAGE)
    form = await _form(request)
    _check_csrf(request, form, opened.portal, token, opened.language)
    claims = opened.claims
    unsubscribe_all = form.get("action") == "unsubscribe_all"
    actor = _actor(request, Source.PREFERENCE_PAGE, opened.language, _reason(form) if unsubscribe_all else None)
    shown = _shown(form)
    wanted = {int(v) for v in form.getlist("subscription") if isinstance(v, str) and v.isdigit()}

    brand, affected = await _consent(request).save_preferences(
        opened.portal.id,
        actor,
        claims.subscriber,
        claims.business_unit_id,
        shown,
        wanted,
        opt_out_from_all=unsubscribe_all,
    )
    changed = [(i18n.localized(definition, opened.language)[0], subscribed) for definition, subscribed in affected]
    if unsubscribe_all:
        return _unsubscribed(opened, brand)
    return render(
        "saved.html",
        opened.language,
        brand=brand,
        email=claims.subscriber,
        changed=changed,
        back=f"{links.PAGES_PREFIX}/{portal_id}/{Purpose.MANAGE.value}/{token}",
    )


def _shown(form: FormData) -> dict[int, bool]:
    """What the page showed for each subscription: `id:1` subscribed, `id:0` not."""
    shown = {}
    for value in form.getlist("shown"):
        if isinstance(value, str):
            sid, _, was = value.partition(":")
            if sid.isdigit() and was in ("0", "1"):
                shown[int(sid)] = was == "1"
    return shown


# -- unsubscribe pages and one-click ------------------------------------------------------------------


def _unsubscribed(opened: Opened, brand: str, subscription: str | None = None) -> HTMLResponse:
    """The confirmation of an unsubscribe: from everything, or from the named subscription."""
    return render(
        "unsubscribed.html",
        opened.language,
        brand=brand,
        email=opened.claims.subscriber,
        everything=subscription is None,
        subscription=subscription,
        links=_other_links(opened),
    )


def _confirm_unsubscribe(request: Request, opened: Opened, brand: str, subscription: str | None) -> HTMLResponse:
    """The page an unsubscribe link opens: what will happen, a reason to give, a button."""
    return render(
        "unsubscribe.html",
        opened.language,
        brand=brand,
        email=opened.claims.subscriber,
        subscription=subscription,
        reasons=REASONS,
        csrf=_csrf(request, opened.portal, opened.token),
        links=_other_links(opened),
    )


async def _unsubscribe_request(request: Request, portal_id: int, token: str, purpose: Purpose) -> tuple[Opened, Actor]:
    """A POST to an unsubscribe link: RFC 8058 one-click (no page, no cookie) or the confirm form
    (CSRF-checked, with the page's language and the reason given)."""
    opened = await open_link(request, portal_id, token, purpose)
    form = await _form(request)
    if _is_one_click(form):
        return opened, _actor(request, Source.ONE_CLICK, None)
    _check_csrf(request, form, opened.portal, token, opened.language)
    return opened, _actor(request, Source.PREFERENCE_PAGE, opened.language, _reason(form))


async def unsubscribe_all_page(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened = await open_link(request, portal_id, token, Purpose.UNSUBSCRIBE_ALL)
    brand = await _consent(request).brand(opened.portal.id, opened.claims.business_unit_id)
    return _confirm_unsubscribe(request, opened, brand, None)


async def unsubscribe_all(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened, actor = await _unsubscribe_request(request, portal_id, token, Purpose.UNSUBSCRIBE_ALL)
    claims = opened.claims
    brand = await _consent(request).opt_out_from_page(
        opened.portal.id, actor, claims.subscriber, claims.business_unit_id
    )
    return _unsubscribed(opened, brand)


async def _single(request: Request, opened: Opened) -> tuple[str, Definition]:
    try:
        return await _consent(request).single_subscription(opened.portal.id, opened.claims.subscription_id)
    except NotFound as exc:
        raise PageError(410, "gone.html", language=opened.language, links=_other_links(opened)) from exc


async def unsubscribe_one_page(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened = await open_link(request, portal_id, token, Purpose.UNSUBSCRIBE_ONE)
    brand, definition = await _single(request, opened)
    return _confirm_unsubscribe(request, opened, brand, i18n.localized(definition, opened.language)[0])


async def unsubscribe_one(request: Request, portal_id: PortalId, token: Token) -> Response:
    opened, actor = await _unsubscribe_request(request, portal_id, token, Purpose.UNSUBSCRIBE_ONE)
    brand, definition = await _single(request, opened)
    await _consent(request).unsubscribe_one(opened.portal.id, actor, opened.claims.subscriber, definition.id)
    return _unsubscribed(opened, brand, i18n.localized(definition, opened.language)[0])


# -- "email me a link" ----------------------------------------------------------------------------------


async def request_link_page(request: Request, portal_id: PortalId) -> Response:
    portal = await _portal(request, portal_id)
    if portal is None:
        raise PageError(404, "invalid.html", language=_fallback_language(request))
    language = _fallback_language(request, portal)
    return render(
        "request_link.html",
        language,
        portal=portal,
        mail_enabled=_mailer(request).enabled,
        csrf=_csrf(request, portal, REQUEST_LINK),
        error=None,
        email="",
    )


async def request_link(request: Request, portal_id: PortalId) -> Response:
    """Mail a fresh manage link. The page reads the same whether or not the address is known, and the
    mail goes out after the answer, so neither its words nor its timing tell."""
    portal = await _portal(request, portal_id)
    if portal is None:
        raise PageError(404, "invalid.html", language=_fallback_language(request))
    language = _fallback_language(request, portal)
    form = await _form(request)
    _check_csrf(request, form, portal, REQUEST_LINK, language)
    mailer = _mailer(request)
    if not mailer.enabled:
        raise PageError(404, "request_link.html", language=language, portal=portal, mail_enabled=False)
    limits: dict[str, SlidingWindow] = request.app.state.link_request_limits
    if not limits["ip"].allow(request.client.host if request.client else "-"):
        raise PageError(429, "too_many.html", language=language)

    claims, verified = await _requested_claims(request, portal, form, language)
    known = verified or await _consent(request).is_known(portal.id, claims.subscriber)
    task = None
    if known and limits["address"].allow(f"{portal.id}:{claims.subscriber}"):
        base_url = links.base_url_for(portal, request.app.state.settings.public_url, str(request.base_url))
        url = links.link_url(base_url, portal, Purpose.MANAGE, claims)
        task = BackgroundTask(_send_link, mailer, portal, claims.subscriber, url, language)
    response = render("link_sent.html", language, portal=portal)
    response.background = task
    return response


async def _requested_claims(request: Request, portal: Portal, form: FormData, language: str) -> tuple[LinkClaims, bool]:
    """The address to mail: from an expired link's genuine signature, or as typed (then unverified)."""
    expired, purpose = form.get("expired_token"), form.get("purpose")
    if isinstance(expired, str) and isinstance(purpose, str) and purpose in {p.value for p in Purpose}:
        try:
            old = links.verify(portal, expired, Purpose(purpose))
        except LinkInvalid as exc:
            raise PageError(400, "invalid.html", language=language) from exc
        return LinkClaims(portal.id, old.subscriber, old.business_unit_id, language), True
    typed = form.get("email")
    try:
        address = normalize_email(typed if isinstance(typed, str) else "")
    except InvalidEmail as exc:
        raise PageError(
            400,
            "request_link.html",
            language=language,
            portal=portal,
            mail_enabled=True,
            csrf=_csrf(request, portal, REQUEST_LINK),
            error=translate(language, "Please enter a valid email address."),
            email=typed if isinstance(typed, str) else "",
        ) from exc
    return LinkClaims(portal.id, address, 0, language), False


async def _send_link(mailer: Mailer, portal: Portal, address: str, url: str, language: str) -> None:
    subject = translate(language, "Your link to manage your email preferences")
    body = environment(language).get_template("link_mail.txt").render(portal=portal, url=url, language=language)
    try:
        await anyio.to_thread.run_sync(mailer.send, address, subject, body, language)
    except Exception as exc:  # a mail that cannot be sent must not surface to the visitor
        log.warning("could not send a preference link: %s", type(exc).__name__)


# -- routing ---------------------------------------------------------------------------------------------


class PageRoute(APIRoute):
    """Every page answer gets the security headers; every failure becomes a localised error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except PageError as exc:
                context = {k: v for k, v in exc.context.items() if k != "language"}
                response = render(exc.template, exc.context.get("language", "en"), exc.status, **context)
            except HTTPException:
                raise  # e.g. 413 from the body cap: answered by the app's handler
            except Exception as exc:
                response = _failure_page(request, classify(exc))
            response.headers.update(security.HEADERS)
            nonce = getattr(request.state, "csrf_nonce", None)
            if nonce and request.cookies.get(security.CSRF_COOKIE) != nonce:
                response.set_cookie(
                    security.CSRF_COOKIE,
                    nonce,
                    max_age=security.CSRF_MAX_AGE_SECONDS,
                    path=links.PAGES_PREFIX,
                    secure=request.url.scheme == "https",
                    httponly=True,
                    samesite="strict",
                )
            return response

        return page_handler


async def stylesheet() -> Response:
    return Response(
        (HERE / "static" / "style.css").read_bytes(),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def _failure_page(request: Request, failure: Failure) -> HTMLResponse:
    """A failure as the pages answer it: the request was at fault (400), the database is unavailable (503), or
    something broke (500, logged)."""
    if failure.unexpected:
        log_unhandled(failure.error, getattr(request.state, "request_id", ""), request.app.state.settings.log_pii)
    elif failure.status == 503:
        log.warning("database unavailable: %s", failure.cause)
    template = "invalid.html" if failure.status < 500 else "unavailable.html"
    return render(template, _fallback_language(request), 400 if failure.status < 500 else failure.status)


def router() -> APIRouter:
    pages = APIRouter(prefix=links.PAGES_PREFIX, route_class=PageRoute, include_in_schema=False)
    pages.add_api_route("/static/style.css", stylesheet, methods=["GET"])
    for purpose, show, act in (
        (Purpose.MANAGE, manage_page, save_preferences),
        (Purpose.UNSUBSCRIBE_ALL, unsubscribe_all_page, unsubscribe_all),
        (Purpose.UNSUBSCRIBE_ONE, unsubscribe_one_page, unsubscribe_one),
    ):
        pages.add_api_route(f"/{{portal_id}}/{purpose.value}/{{token}}", show, methods=["GET"])
        pages.add_api_route(f"/{{portal_id}}/{purpose.value}/{{token}}", act, methods=["POST"])
    pages.add_api_route(f"/{{portal_id}}/{REQUEST_LINK}", request_link_page, methods=["GET"])
    pages.add_api_route(f"/{{portal_id}}/{REQUEST_LINK}", request_link, methods=["POST"])
    return pages
