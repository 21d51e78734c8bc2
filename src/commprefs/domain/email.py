"""Subscriber identity: an email address, trimmed, lower-cased and checked."""

import re

from commprefs.domain.errors import InvalidEmail

# No whitespace, specials or control characters (RFC 5321's atext, Unicode letters allowed), and
# no U+FFFD: it only appears where bytes were not valid UTF-8.
_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]\x00-\x1f\x7f\ufffd]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_email(raw: str, field: str | None = None) -> str:
    """The subscriber key for `raw`: `Jane.Doe@Example.com ` and `jane.doe@example.com` are one person.

    Lengths follow RFC 5321 (local part 64, domain 253, path 254); the domain needs a dot.
    Internationalised domains are accepted in their punycode (xn--) form. An invalid address names
    `field` as the input at fault (default `emailAddress`).
    """
    address = raw.strip().lower()
    if len(address) > 254 or address.count("@") != 1:
        raise InvalidEmail(raw, field)
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        raise InvalidEmail(raw, field)
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidEmail(raw, field)
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise InvalidEmail(raw, field)
    if labels[-1].isdigit():
        raise InvalidEmail(raw, field)
    return address
