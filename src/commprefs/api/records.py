"""commprefs' own JSON shapes that the CLI prints too (webhook endpoints and deliveries, imports, data-subject
access and erasure). Nothing here imports the web framework, so the CLI prints the API's JSON without loading it.
"""

import json
from typing import Any

import orjson

from commprefs.clock import iso, now_ms
from commprefs.consent import Erasure, SubjectRecord
from commprefs.transfer import Job
from commprefs.webhooks.payload import EventType, encode_cursor, events_json

IMPORTS_PATH = "/commprefs/v1/imports"


def endpoint_json(row: Any, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "events": row.event_types.split(",") if row.event_types else [t.value for t in EventType],
        "enabled": bool(row.enabled),
        "disabledReason": row.disabled_reason,
        "position": encode_cursor((row.cursor_txid, row.cursor_id)),
        "failures": row.failures,
        "failingSince": iso(row.failing_since) if row.failing_since else None,
        "nextAttemptAt": iso(row.next_attempt_at) if row.failures else None,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def delivery_json(row: Any) -> dict[str, Any]:
    return {
        "eventId": str(row.event_id),
        "webhookId": f"evt_{row.event_id}",
        "attempt": row.attempt,
        "statusCode": row.status_code,
        "error": row.error,
        "latencyMs": row.latency_ms,
        "attemptedAt": iso(row.attempted_at),
        "nextAttemptAt": iso(row.next_attempt_at) if row.next_attempt_at else None,
    }


def job_json(job: Job) -> dict[str, Any]:
    row = job.row
    return {
        "id": row.id,
        "state": job.state,
        "format": row.format,
        "fileName": row.file_name,
        "dryRun": bool(row.dry_run),
        "counts": json.loads(row.counts),
        "error": job.error,
        "createdAt": iso(row.created_at),
        "startedAt": iso(row.started_at) if row.started_at else None,
        "completedAt": iso(row.completed_at) if row.completed_at else None,
        "links": {"self": f"{IMPORTS_PATH}/{row.id}", "rejects": f"{IMPORTS_PATH}/{row.id}/rejects"},
    }


def subject_json(record: SubjectRecord) -> dict[str, Any]:
    """Statuses as the APIs show them, every stored row (archived subscriptions included), the
    opt-outs from all, the full history with IPs and user agents, and rejected import lines."""
    by_id = record.definitions
    return {
        "portalId": record.portal_id,
        "emailAddress": record.address,
        "exportedAt": iso(now_ms()),
        "erasedAt": iso(record.erased_at) if record.erased_at is not None else None,
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
            for e in record.current
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
            for s in record.stored
        ],
        "wideStatuses": [
            {
                "wideStatusType": w.scope.value,
                "businessUnitId": w.business_unit_id,
                "status": w.status.value,
                "source": w.source,
                "timestamp": iso(w.updated_at),
            }
            for w in record.wide
        ],
        "history": events_json(record.history, with_person=True),
        "importRejects": [
            {"importId": r.import_id, "line": r.line, "reason": r.reason, "values": orjson.loads(r.raw)}
            for r in record.rejects
        ],
    }


def erasure_json(erasure: Erasure) -> dict[str, Any]:
    return {
        "erased": True,
        "alreadyErased": erasure.already_erased,
        "tombstone": erasure.key,
        "erasedAt": iso(erasure.erased_at),
        "deleted": erasure.deleted,
    }
