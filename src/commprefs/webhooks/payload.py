"""The consent history as the outside sees it: one change as JSON (history, feed and webhooks all
use this one shape), its event type, and the feed's opaque cursor."""

import base64
import binascii
from enum import StrEnum
from typing import Any

from commprefs.clock import iso
from commprefs.consent.history import Recorded
from commprefs.domain.enums import Source, Status
from commprefs.domain.errors import RuleViolation
from commprefs.domain.model import Definition

PERSON_SOURCES = {Source.PREFERENCE_PAGE.value, Source.ONE_CLICK.value}


class EventType(StrEnum):
    """What a webhook announces; each committed change is exactly one of these."""

    STATUS_CHANGED = "subscription.status_changed"
    OPTED_OUT_OF_ALL = "subscription.opted_out_of_all"
    RESUBSCRIBED = "subscription.resubscribed"
    ERASED = "subscriber.erased"


def event_type(row: Any) -> EventType:
    if row.source == Source.ERASURE.value:
        return EventType.ERASED
    if row.wide_scope is None:
        return EventType.STATUS_CHANGED
    return EventType.OPTED_OUT_OF_ALL if row.new_status == Status.UNSUBSCRIBED.value else EventType.RESUBSCRIBED


def event_json(
    row: Any, definitions: dict[int, Definition], tokens: dict[str, str], *, with_person: bool
) -> dict[str, Any]:
    """One change. An erasure's event names the tombstone's key (`erased:...`) as its subscriber,
    never the address. `with_person` adds the IP and user agent of a person acting on a page: history
    (proof of consent) shows them, webhooks do not carry them."""
    definition = definitions.get(row.subscription_id) if row.subscription_id is not None else None
    if row.actor_token_id is not None:
        actor = {"type": "token", "id": row.actor_token_id, "name": tokens.get(row.actor_token_id)}
    elif row.source in PERSON_SOURCES:
        actor = {"type": "contact"}
    else:
        actor = {"type": "system"}
    body: dict[str, Any] = {
        "id": str(row.id),
        "type": event_type(row).value,
        "subscriberIdString": row.subscriber,
        "channel": row.channel,
        "subscriptionId": row.subscription_id,
        "subscriptionName": definition.name if definition else None,
        "wideStatusType": row.wide_scope,
        "businessUnitId": row.business_unit_id,
        "oldStatus": row.old_status,
        "newStatus": row.new_status,
        "legalBasis": row.legal_basis,
        "legalBasisExplanation": row.legal_basis_explanation,
        "source": row.source,
        "actor": actor,
        "requestId": row.request_id,
        "language": row.language,
        "reason": row.reason,
        "occurredAt": iso(row.occurred_at),
        # An imported change: occurredAt is the original time from the file, recordedAt the import's.
        "import": {"id": row.import_id, "recordedAt": iso(row.recorded_at)} if row.import_id else None,
    }
    if with_person:
        body["ip"] = row.ip
        body["userAgent"] = row.user_agent
    return body


def events_json(recorded: Recorded, *, with_person: bool) -> list[dict[str, Any]]:
    """Recorded events as JSON, named with the portal's definitions and tokens."""
    return [event_json(row, recorded.definitions, recorded.tokens, with_person=with_person) for row in recorded.rows]


def encode_cursor(position: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}.{position[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, field: str = "after") -> tuple[int, int]:
    if not cursor:
        return (0, 0)
    try:
        txid, _, event_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition(".")
        position = (int(txid), int(event_id))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise RuleViolation(f"{field} is not a cursor this API returned", field=field) from exc
    if min(position) < 0 or max(position) >= 2**63:
        raise RuleViolation(f"{field} is not a cursor this API returned", field=field)
    return position
