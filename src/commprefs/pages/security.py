"""Safety of the pages: CSRF tokens for every form, and the headers every page is sent with.

CSRF is a double submit: a random nonce in a SameSite=Strict cookie, and in the form the same nonce
signed with the portal's secret and bound to the link it was served for. A forged cross-site POST
has neither the cookie nor a signature for this link.
"""

import hashlib
import hmac
import secrets

from itsdangerous import BadData, TimestampSigner

from commprefs.domain.model import Portal

CSRF_COOKIE = "commprefs_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE_SECONDS = 24 * 3600

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    # The links carry their token in the path: it must never leave in a Referer header.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class CsrfFailed(Exception):
    """A form POST without a valid CSRF token and cookie."""


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def binding(value: str) -> str:
    """What a form is bound to (its link token, or a fixed name), shortened to a digest."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _signer(portal: Portal) -> TimestampSigner:
    return TimestampSigner(portal.signing_secret, salt="commprefs.csrf")


def csrf_token(portal: Portal, nonce: str, bound_to: str) -> str:
    return _signer(portal).sign(f"{nonce}.{binding(bound_to)}").decode()


def check_csrf(portal: Portal, cookie: str | None, submitted: str | None, bound_to: str) -> None:
    if not cookie or not submitted:
        raise CsrfFailed("missing")
    try:
        value = _signer(portal).unsign(submitted, max_age=CSRF_MAX_AGE_SECONDS).decode()
    except BadData as exc:
        raise CsrfFailed("invalid") from exc
    nonce, _, bound = value.rpartition(".")
    if not (hmac.compare_digest(nonce, cookie) and hmac.compare_digest(bound, binding(bound_to))):
        raise CsrfFailed("mismatch")
