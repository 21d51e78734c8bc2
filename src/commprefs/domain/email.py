"""Subscriber identity: an email address, trimmed, lower-cased and checked."""

import re

from commprefs.domain.errors import InvalidEmail

# No whitespace, specials or control characters (RFC 5321's atext, Unicode letters allowed), and
# no U+FFFD: it only appears where bytes were not valid UTF-8.
_LOCAL = re.compile(r"^[^\s@\"(),:;<>\[\\\]\x00-\x1f\x7f\ufffd]+$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Two labels or more, each as _LABEL, in one match (a match a label cost a batch's thousand addresses dearly).
_DOMAIN = re.compile(rf"^(?:{_LABEL}\.)+{_LABEL}$")


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
    if len(domain) > 253 or not _DOMAIN.match(domain):
        raise InvalidEmail(raw, field)
    if domain.rpartition(".")[2].isdigit():
        raise InvalidEmail(raw, field)
    return address
