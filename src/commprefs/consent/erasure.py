"""Data-subject erasure (GDPR article 17): everything about an address goes, a salted tombstone stays."""

from dataclasses import dataclass

from commprefs.consent.unit import Changes, Provenance
from commprefs.domain.enums import Source, Status, WideScope
from commprefs.domain.model import Actor, Subscriber
from commprefs.domain.tombstone import tombstone_key
from commprefs.store import Tx


@dataclass(frozen=True, slots=True)
class Erasure:
    """The outcome of an erasure: the tombstone's key, and how many rows of the address were deleted."""

    key: str
    erased_at: int
    deleted: dict[str, int]
    already_erased: bool


def erase(tx: Tx, portal_id: int, address: str, actor: Actor, now: int) -> Erasure:
    """Delete everything held about the address in the portal (statuses, opt-outs, history, rejected
    import lines) and leave a salted-hash tombstone in the portal's suppression set, so that the
    address reads as opted out of all until the person gives a new explicit consent. The erasure is
    itself recorded, under the tombstone's key, never the address. Erasing twice changes nothing."""
    changes = Changes(tx, portal_id, actor, now)
    key = tombstone_key(changes.portal.erasure_salt, address)
    previous = tx.statuses.tombstone_time(portal_id, key)
    deleted = tx.statuses.erase_subscriber(portal_id, address)
    if previous is not None and not any(deleted.values()):
        return Erasure(key, previous, deleted, already_erased=True)
    # The tombstone is an opt-out from all whose subscriber is the key: recorded like any other.
    tombstone = Subscriber(key)
    changes.record_wide(tombstone, WideScope.PORTAL_WIDE, 0, Status.UNSUBSCRIBED, Provenance(Source.ERASURE.value, now))
    changes.flush()
    return Erasure(key, now, deleted, already_erased=False)
