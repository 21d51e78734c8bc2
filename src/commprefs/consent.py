"""The consent rules: the only place that decides what a change means.

Every entry point (v3, v4, pages, CLI, admin) calls these functions; they read the current
state, decide, write the new state and append its consent event in the same transaction.
"""

from dataclasses import dataclass

from commprefs.domain.enums import Channel, LegalBasis, SourceOfStatus, Status, V3Status, WideScope
from commprefs.domain.errors import NotFound, RuleViolation
from commprefs.domain.model import Actor, Definition, Portal, StoredStatus, Subscriber
from commprefs.store.repo import Tx


@dataclass(frozen=True, slots=True)
class V3View:
    """One subscription as v3 shows it: two states and where the state comes from."""

    definition: Definition
    status: V3Status
    source_of_status: SourceOfStatus
    legal_basis: LegalBasis | None
    legal_basis_explanation: str | None


def v3_view(definition: Definition, subscriber: Subscriber) -> V3View:
    stored = subscriber.statuses.get(definition.id)
    wide = subscriber.wide_opt_out(definition.business_unit_id)
    if wide is WideScope.PORTAL_WIDE:
        source = SourceOfStatus.PORTAL_WIDE_STATUS
    elif wide is WideScope.BUSINESS_UNIT_WIDE:
        source = SourceOfStatus.BRAND_WIDE_STATUS
    else:
        source = SourceOfStatus.SUBSCRIPTION_STATUS
    subscribed = wide is None and stored is not None and stored.status is Status.SUBSCRIBED
    return V3View(
        definition=definition,
        status=V3Status.SUBSCRIBED if subscribed else V3Status.NOT_SUBSCRIBED,
        source_of_status=source,
        legal_basis=stored.legal_basis if stored else None,
        legal_basis_explanation=stored.legal_basis_explanation if stored else None,
    )


def v3_statuses(tx: Tx, portal_id: int, address: str) -> list[V3View]:
    """Every active subscription of the portal for `address`, known or never seen."""
    definitions = tx.list_definitions(portal_id, active_only=True)
    subscriber = tx.get_subscriber(portal_id, address, Channel.EMAIL)
    return [v3_view(d, subscriber) for d in definitions]


def subscribe_v3(
    tx: Tx,
    portal_id: int,
    address: str,
    subscription_id: int,
    legal_basis: LegalBasis | None,
    legal_basis_explanation: str | None,
    actor: Actor,
    now: int,
) -> V3View:
    """v3 subscribe: never overrides an opt-out, refuses a no-op, needs paperwork under GDPR."""
    portal, definition = _portal_and_definition(tx, portal_id, subscription_id)
    if portal.gdpr_enabled:
        _require_legal_basis(legal_basis, legal_basis_explanation)
    subscriber = tx.get_subscriber(portal_id, address, Channel.EMAIL)
    stored = subscriber.statuses.get(subscription_id)
    opted_out = subscriber.wide_opt_out(definition.business_unit_id) is not None
    if opted_out or (stored is not None and stored.status is Status.UNSUBSCRIBED):
        raise RuleViolation(
            f"subscription {subscription_id} for {address} cannot be updated because they have unsubscribed"
        )
    if stored is not None and stored.status is Status.SUBSCRIBED:
        raise RuleViolation(f"{address} is already subscribed to subscription {subscription_id}")
    _record(
        tx, portal_id, address, definition, stored, Status.SUBSCRIBED, legal_basis, legal_basis_explanation, actor, now
    )
    return v3_view(definition, tx.get_subscriber(portal_id, address, Channel.EMAIL))


def unsubscribe_v3(
    tx: Tx,
    portal_id: int,
    address: str,
    subscription_id: int,
    legal_basis: LegalBasis | None,
    legal_basis_explanation: str | None,
    actor: Actor,
    now: int,
) -> V3View:
    """v3 unsubscribe: recorded with whatever paperwork was given, unless the portal is HubSpot-strict."""
    portal, definition = _portal_and_definition(tx, portal_id, subscription_id)
    if portal.gdpr_enabled and portal.hubspot_strict:
        _require_legal_basis(legal_basis, legal_basis_explanation)
    subscriber = tx.get_subscriber(portal_id, address, Channel.EMAIL)
    stored = subscriber.statuses.get(subscription_id)
    if stored is not None and stored.status is Status.UNSUBSCRIBED:
        raise RuleViolation(f"{address} is already unsubscribed to subscription {subscription_id}")
    _record(
        tx,
        portal_id,
        address,
        definition,
        stored,
        Status.UNSUBSCRIBED,
        legal_basis,
        legal_basis_explanation,
        actor,
        now,
    )
    return v3_view(definition, tx.get_subscriber(portal_id, address, Channel.EMAIL))


def _portal_and_definition(tx: Tx, portal_id: int, subscription_id: int) -> tuple[Portal, Definition]:
    portal = tx.get_portal(portal_id)
    if portal is None:
        raise NotFound(f"portal {portal_id} does not exist")
    definition = tx.get_definition(portal_id, subscription_id)
    if definition is None or not definition.is_active:
        raise NotFound(f"subscription {subscription_id} does not exist", field="subscriptionId")
    return portal, definition


def _require_legal_basis(legal_basis: LegalBasis | None, explanation: str | None) -> None:
    if legal_basis is None:
        raise RuleViolation("legalBasis is required: this portal has GDPR enabled", field="legalBasis")
    if not explanation or not explanation.strip():
        raise RuleViolation(
            "legalBasisExplanation is required: this portal has GDPR enabled", field="legalBasisExplanation"
        )


def _record(
    tx: Tx,
    portal_id: int,
    address: str,
    definition: Definition,
    stored: StoredStatus | None,
    new_status: Status,
    legal_basis: LegalBasis | None,
    legal_basis_explanation: str | None,
    actor: Actor,
    now: int,
) -> None:
    """Write one subscription's new state and its consent event, in the caller's transaction."""
    tx.upsert_status(
        portal_id,
        address,
        Channel.EMAIL,
        definition.id,
        new_status,
        legal_basis,
        legal_basis_explanation,
        str(actor.source),
        now,
    )
    tx.append_event(
        portal_id,
        address,
        Channel.EMAIL,
        old_status=stored.status if stored else Status.NOT_SPECIFIED,
        new_status=new_status,
        actor=actor,
        now=now,
        subscription_id=definition.id,
        business_unit_id=definition.business_unit_id,
        legal_basis=legal_basis,
        legal_basis_explanation=legal_basis_explanation,
    )
