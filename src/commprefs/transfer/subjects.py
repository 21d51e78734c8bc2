"""Data-subject access (GDPR art. 15): everything held about one address in a portal, as JSON.
Erasure (art. 17) is a consent rule: `consent.erase`."""

from typing import Any

import orjson

from commprefs import consent, events
from commprefs.clock import iso, now_ms
from commprefs.domain.enums import Channel
from commprefs.domain.errors import NotFound
from commprefs.store import Tx


def subject_record(tx: Tx, portal_id: int, address: str) -> dict[str, Any]:
    """Statuses as the APIs show them, every stored row (archived subscriptions included), the
    opt-outs from all, the full history with IPs and user agents, and rejected import lines."""
    portal, definitions = tx.portal_snapshot(portal_id)
    if portal is None:
        raise NotFound(f"portal {portal_id} does not exist")
    by_id = {d.id: d for d in definitions}
    subscriber = tx.get_subscriber(portal_id, address, Channel.EMAIL.value)
    current = [consent.effective(d, subscriber) for d in definitions if d.is_active]
    return {
        "portalId": portal_id,
        "emailAddress": address,
        "exportedAt": iso(now_ms()),
        "erasedAt": iso(subscriber.erased_at) if subscriber.erased_at is not None else None,
        "statuses": [
            {
                "subscriptionId": e.definition.id,
                "subscriptionName": e.definition.name,
                "businessUnitId": e.definition.business_unit_id,
                "status": e.status.value,
                "source": e.source,
                "legalBasis": e.legal_basis,
                "legalBasisExplanation": e.legal_basis_explanation,
                "timestamp": iso(e.timestamp),
                "optedOutOfAll": e.wide.value if e.wide else None,
            }
            for e in current
        ],
        "storedStatuses": [
            {
                "subscriptionId": s.subscription_id,
                "subscriptionName": by_id[s.subscription_id].name if s.subscription_id in by_id else None,
                "status": s.status.value,
                "legalBasis": s.legal_basis,
                "legalBasisExplanation": s.legal_basis_explanation,
                "source": s.source,
                "timestamp": iso(s.updated_at),
            }
            for s in subscriber.statuses.values()
        ],
        "wideStatuses": [
            {
                "wideStatusType": w.scope.value,
                "businessUnitId": w.business_unit_id,
                "status": w.status.value,
                "source": w.source,
                "timestamp": iso(w.updated_at),
            }
            for w in subscriber.wide.values()
        ],
        "history": events.render(tx, portal_id, tx.list_events(portal_id, address), with_person=True),
        "importRejects": [
            {"importId": r.import_id, "line": r.line, "reason": r.reason, "values": orjson.loads(r.raw)}
            for r in tx.rejects_of(portal_id, address)
        ],
    }


def erasure_json(erasure: consent.Erasure) -> dict[str, Any]:
    return {
        "erased": True,
        "alreadyErased": erasure.already_erased,
        "tombstone": erasure.key,
        "erasedAt": iso(erasure.erased_at),
        "deleted": erasure.deleted,
    }
