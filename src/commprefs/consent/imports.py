"""The rules of an import: a record comes in with its original time and source, never overriding a newer
change, never lifting an opt-out, never bringing an erased address back."""

from dataclasses import dataclass
from enum import StrEnum

from commprefs.consent.rules import require_legal_basis
from commprefs.consent.unit import Changes, Provenance
from commprefs.domain.enums import LegalBasis, Status, WideScope
from commprefs.domain.errors import RuleViolation
from commprefs.domain.model import Definition


class ImportOutcome(StrEnum):
    """What an import did with one record; only APPLIED writes anything."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"  # commprefs already holds this state (a re-run of the same file)
    NEWER_KEPT = "newerKept"  # commprefs holds a newer change: the file never overrides it
    OPT_OUT_KEPT = "optOutKept"  # the file would lift an opt-out: an import never does
    ERASED = "erased"  # the address was erased: an import never brings it back


@dataclass(frozen=True, slots=True)
class ImportedStatus:
    """One record of an import file: a subscription's state (`subscription` an id or a name), or an
    opt-out from all (`scope` set, `business_unit_id` for a brand)."""

    address: str
    state: Status
    provenance: Provenance
    subscription: int | str | None = None
    scope: WideScope | None = None
    business_unit_id: int | None = None
    legal_basis: LegalBasis | None = None
    legal_basis_explanation: str | None = None


ImportTarget = Definition | tuple[WideScope, int]


def import_target(changes: Changes, record: ImportedStatus) -> ImportTarget:
    """What the record is about: a definition, or an opt-out scope. Everything that can refuse a
    record is checked here, before any record of its row is applied."""
    if record.scope is not None:
        if record.scope is WideScope.PORTAL_WIDE:
            return (WideScope.PORTAL_WIDE, 0)
        unit = record.business_unit_id or 0
        changes.require_business_unit(unit)
        return (WideScope.BUSINESS_UNIT_WIDE, unit)
    if isinstance(record.subscription, str):
        definition = changes.definition_named(record.subscription, record.business_unit_id)
    else:
        definition = changes.definition(int(record.subscription or 0))
        if record.business_unit_id is not None and record.business_unit_id != definition.business_unit_id:
            raise RuleViolation(
                f"subscription {definition.id} belongs to business unit {definition.business_unit_id}",
                field="business_unit_id",
            )
    if record.state is Status.SUBSCRIBED and changes.portal.gdpr_enabled:
        require_legal_basis(record.legal_basis, record.legal_basis_explanation)
    return definition


def import_status(changes: Changes, record: ImportedStatus, target: ImportTarget) -> ImportOutcome:
    """Bring one record in with its original time and source, never overriding a newer change,
    never lifting an opt-out and never bringing an erased address back. Running it twice is
    harmless: the second run finds the state already there."""
    subscriber = changes.subscriber(record.address)
    if subscriber.erased_at is not None:
        return ImportOutcome.ERASED
    if isinstance(target, tuple):
        row = subscriber.wide.get(target)
        kept = _kept(row.status if row else None, row.updated_at if row else None, record)
        if kept is None:
            changes.record_wide(subscriber, *target, record.state, record.provenance)
        return kept or ImportOutcome.APPLIED
    stored = subscriber.statuses.get(target.id)
    kept = _kept(stored.status if stored else None, stored.updated_at if stored else None, record)
    if kept is not None:
        return kept
    if record.state is Status.SUBSCRIBED and subscriber.wide_opt_out(target.business_unit_id) is not None:
        return ImportOutcome.OPT_OUT_KEPT
    changes.record_status(
        subscriber, target, record.state, record.legal_basis, record.legal_basis_explanation, record.provenance
    )
    return ImportOutcome.APPLIED


def _kept(current: Status | None, updated_at: int | None, record: ImportedStatus) -> ImportOutcome | None:
    """Why the record leaves the current state alone, if it does."""
    if record.state is Status.NOT_SPECIFIED or record.state is current:
        return ImportOutcome.UNCHANGED
    if updated_at is not None and updated_at >= record.provenance.at:
        return ImportOutcome.NEWER_KEPT
    if current is Status.UNSUBSCRIBED:
        return ImportOutcome.OPT_OUT_KEPT
    return None
