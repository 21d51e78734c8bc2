"""Signed links for contacts: the capability behind the preference page and one-click unsubscribe.

A link names one portal and one subscriber (and, for a single unsubscribe, one subscription). It is
signed with the portal's secret and a per-purpose salt (itsdangerous), so a link cannot be forged,
edited, replayed against another subscriber or portal, or used for another purpose; rotating the
portal's secret invalidates every link issued before.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from commprefs.domain.model import Portal

PAGES_PREFIX = "/preferences"


class Purpose(StrEnum):
    """What a link lets its holder do; each is signed with its own salt and has its own path."""

    MANAGE = "manage"
    UNSUBSCRIBE_ALL = "unsubscribe-all"
    UNSUBSCRIBE_ONE = "unsubscribe"


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a verified link says: whose preferences, which brand, which language, which subscription."""

    portal_id: int
    subscriber: str
    business_unit_id: int = 0
    language: str | None = None
    subscription_id: int | None = None


class LinkInvalid(Exception):
    """The link was altered, signed with another secret or for another purpose, or is malformed."""


class LinkExpired(LinkInvalid):
    """The link was genuine but is older than the configured maximum age."""

    def __init__(self, claims: LinkClaims) -> None:
        super().__init__("link expired")
        self.claims = claims


def _serializer(portal: Portal, purpose: Purpose) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(portal.signing_secret, salt=f"commprefs.links.{purpose.value}")


def sign(portal: Portal, claims: LinkClaims, purpose: Purpose) -> str:
    payload: list[Any] = [
        claims.portal_id,
        claims.subscriber,
        claims.business_unit_id,
        claims.language,
        claims.subscription_id,
    ]
    return str(_serializer(portal, purpose).dumps(payload))


def verify(portal: Portal, token: str, purpose: Purpose, max_age_seconds: int | None = None) -> LinkClaims:
    """The claims of a genuine link for `portal` and `purpose`; LinkExpired or LinkInvalid otherwise."""
    if not _canonical(token):
        raise LinkInvalid("altered encoding")
    serializer = _serializer(portal, purpose)
    try:
        payload = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        # The signature is genuine, only old: the claims are trustworthy enough to offer a fresh link.
        raise LinkExpired(_claims(portal, serializer.loads(token))) from exc
    except BadData as exc:
        raise LinkInvalid(str(exc)) from exc
    return _claims(portal, payload)


def _canonical(token: str) -> bool:
    """Whether each base64 part is written the one way it encodes to. A part's last character holds
    unused bits, so some one-character edits decode to the same bytes: such a link was still
    altered, and is refused like any other."""
    try:
        return all(base64_encode(base64_decode(part)).decode() == part for part in token.lstrip(".").split("."))
    except BadData:
        return False


def _claims(portal: Portal, payload: Any) -> LinkClaims:
    if not isinstance(payload, list) or len(payload) != 5:
        raise LinkInvalid("malformed payload")
    portal_id, subscriber, unit, language, subscription_id = payload
    if portal_id != portal.id or not isinstance(subscriber, str) or not isinstance(unit, int):
        raise LinkInvalid("link issued for another portal")
    return LinkClaims(portal_id, subscriber, unit, language, subscription_id)


@dataclass(frozen=True, slots=True)
class Links:
    manage: str
    unsubscribe_all: str
    unsubscribe_one: str | None


def link_url(base_url: str, portal: Portal, purpose: Purpose, claims: LinkClaims) -> str:
    return f"{base_url.rstrip('/')}{PAGES_PREFIX}/{portal.id}/{purpose.value}/{sign(portal, claims, purpose)}"


def generate(portal: Portal, claims: LinkClaims, base_url: str) -> Links:
    """The three links of `links/generate`; the single unsubscribe only when a subscription is named."""
    return Links(
        manage=link_url(base_url, portal, Purpose.MANAGE, claims),
        unsubscribe_all=link_url(base_url, portal, Purpose.UNSUBSCRIBE_ALL, claims),
        unsubscribe_one=(
            link_url(base_url, portal, Purpose.UNSUBSCRIBE_ONE, claims) if claims.subscription_id is not None else None
        ),
    )


def base_url_for(portal: Portal, configured: str | None, fallback: str) -> str:
    """The portal's public URL, else COMMPREFS_PUBLIC_URL, else `fallback` (the address the API was
    called at, or the CLI's listen address)."""
    return portal.public_base_url or configured or fallback
