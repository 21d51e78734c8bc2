"""Webhook endpoints: registering them, checking where they point, and the retry schedule.

An endpoint's position in the change feed is its outbox: every event after it is sent, in feed
order, until the receiver acknowledges it (see `sender.py`). A new endpoint starts at the head
of the feed; a replay moves it back.
"""

import base64
import ipaddress
import random
import secrets
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from commprefs.domain.errors import NotFound, RuleViolation
from commprefs.store import Tx
from commprefs.webhooks.payload import EventType

SECRET_PREFIX = "whsec_"
MAX_URL = 2000
FIRST_RETRY_MS = 5_000
MAX_RETRY_MS = 3_600_000
# Retried for three days (more than the 24 hours promised), then the endpoint is disabled; its
# position is kept, so enabling it again resumes with the event that failed.
GIVE_UP_AFTER_MS = 3 * 24 * 3_600_000


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def blocked_address(address: str) -> bool:
    """Loopback, private, link-local and other non-public addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names by itself: standard forms, and the legacy IPv4 spellings that
    resolvers still accept (`2130706433`, `0x7f000001`, `127.1` are all 127.0.0.1)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL with a host and no whitespace or control characters; an IP literal must be
    public unless private networks are allowed (host names are checked again when sending)."""
    if len(url) > MAX_URL or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise RuleViolation("url must be one line without spaces, at most 2000 characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleViolation("url must be an http:// or https:// URL with a host", field="url")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise RuleViolation("url has an invalid port", field="url") from exc
    literal = _ip_literal(parts.hostname)
    if literal is None:
        return url
    if not allow_private and blocked_address(str(literal)):
        raise RuleViolation(
            "url points at a private, loopback or link-local address "
            "(COMMPREFS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true allows it)",
            field="url",
        )
    return url


def check_event_types(names: Iterable[str]) -> str:
    chosen = []
    for name in names:
        try:
            chosen.append(EventType(name).value)
        except ValueError as exc:
            allowed = ", ".join(t.value for t in EventType)
            raise RuleViolation(f"unknown event type {name!r}; one of {allowed}", field="events") from exc
    return ",".join(sorted(set(chosen)))


def retry_delay_ms(failures: int) -> int:
    """Exponential backoff (5 s, 10 s, 20 s ... at most an hour) with jitter of up to half."""
    delay = min(FIRST_RETRY_MS * 2 ** max(failures - 1, 0), MAX_RETRY_MS)
    return int(delay * random.uniform(0.5, 1.0))


def create_endpoint(
    tx: Tx,
    portal_id: int,
    url: str,
    *,
    events: Iterable[str] = (),
    description: str = "",
    now: int,
    allow_private: bool,
) -> tuple[Any, str]:
    """A new endpoint, sent every change committed from now on; returns it and its secret (shown once)."""
    if tx.portals.get_portal(portal_id) is None:
        raise NotFound(f"portal {portal_id} does not exist")
    secret = new_secret()
    endpoint_id = "ep_" + secrets.token_hex(8)
    tx.webhooks.insert_endpoint(
        portal_id,
        endpoint_id,
        url=check_url(url, allow_private=allow_private),
        description=description,
        secret=secret,
        event_types=check_event_types(events),
        position=tx.feed.feed_head(portal_id),
        now=now,
    )
    return require_endpoint(tx, portal_id, endpoint_id), secret


def require_endpoint(tx: Tx, portal_id: int, endpoint_id: str) -> Any:
    found = tx.webhooks.get_endpoint(portal_id, endpoint_id)
    if found is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist", field="endpointId")
    return found


def update_endpoint(
    tx: Tx,
    portal_id: int,
    endpoint_id: str,
    *,
    now: int,
    allow_private: bool,
    url: str | None = None,
    events: Iterable[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Any:
    current = require_endpoint(tx, portal_id, endpoint_id)
    values: dict[str, Any] = {"updated_at": now}
    if url is not None:
        values["url"] = check_url(url, allow_private=allow_private)
    if events is not None:
        values["event_types"] = check_event_types(events)
    if description is not None:
        values["description"] = description
    if enabled is True and not current.enabled:
        values.update(enabled=True, disabled_reason=None, failures=0, failing_since=None, next_attempt_at=0)
    elif enabled is False:
        values.update(enabled=False, disabled_reason="disabled by an operator")
    tx.webhooks.update_endpoint(portal_id, endpoint_id, **values)
    return require_endpoint(tx, portal_id, endpoint_id)


def delete_endpoint(tx: Tx, portal_id: int, endpoint_id: str) -> None:
    if not tx.webhooks.delete_endpoint(portal_id, endpoint_id):
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist", field="endpointId")


def replay(tx: Tx, portal_id: int, endpoint_id: str, since: int, now: int) -> Any:
    """Send again every event that occurred at or after `since` (ms), in order, with the same ids."""
    require_endpoint(tx, portal_id, endpoint_id)
    txid, event_id = tx.feed.feed_position_before(portal_id, since)
    tx.webhooks.update_endpoint(
        portal_id, endpoint_id, cursor_txid=txid, cursor_id=event_id, next_attempt_at=0, failures=0, updated_at=now
    )
    return require_endpoint(tx, portal_id, endpoint_id)
