"""The consent rules: the only place that decides what a change means (v3, v4, batches, the contact's pages).

Each rule takes a `Changes` unit of work (consent/unit.py) and plans its writes on it.
"""

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass

from commprefs.consent.unit import Changes, Effective, StatusInput, effective
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import LegalBasis, SetStatusReason, Status, WideScope
from commprefs.domain.errors import DomainError, RuleViolation
from commprefs.domain.model import Definition, Subscriber, WideStatus

GDPR_PORTAL = "this portal has GDPR enabled"
ERASED_ADDRESS = "the address was erased, and only a new consent with its legal basis brings it back"


def require_legal_basis(legal_basis: LegalBasis | None, explanation: str | None, why: str = GDPR_PORTAL) -> None:
    if legal_basis is None:
        raise RuleViolation(f"legalBasis is required: {why}", field="legalBasis")
    if not explanation or not explanation.strip():
        raise RuleViolation(f"legalBasisExplanation is required: {why}", field="legalBasisExplanation")


def set_status(changes: Changes, request: StatusInput) -> Effective:
    """v4's per-subscription write: idempotent, and a SUBSCRIBED under an opt-out is a resubscribe."""
    definition = changes.definition(request.subscription_id)
    subscriber = changes.subscriber(request.address)
    stored = subscriber.statuses.get(definition.id)
    current = stored.status if stored else Status.NOT_SPECIFIED
    if request.state is Status.SUBSCRIBED:
        opted_out = subscriber.wide_opt_out(definition.business_unit_id) is not None
        if not opted_out and current is Status.SUBSCRIBED:
            return effective(definition, subscriber, SetStatusReason.NO_STATUS_CHANGE)
        if subscriber.erased_at is not None:
            require_legal_basis(request.legal_basis, request.legal_basis_explanation, ERASED_ADDRESS)
        elif changes.portal.gdpr_enabled:
            require_legal_basis(request.legal_basis, request.legal_basis_explanation)
        if opted_out:
            _lift_wide_opt_outs(changes, subscriber, definition)
        changes.record_status(
            subscriber, definition, Status.SUBSCRIBED, request.legal_basis, request.legal_basis_explanation
        )
        reason = (
            SetStatusReason.RESUBSCRIBE_OCCURRED
            if opted_out or current is Status.UNSUBSCRIBED
            else SetStatusReason.REQUESTED_CHANGE_OCCURRED
        )
        return effective(definition, subscriber, reason)
    if current is request.state or subscriber.erased_at is not None:
        # An erased address is already unsubscribed from everything; recording more would store it again.
        return effective(definition, subscriber, SetStatusReason.NO_STATUS_CHANGE)
    changes.record_status(subscriber, definition, request.state, request.legal_basis, request.legal_basis_explanation)
    return effective(definition, subscriber, SetStatusReason.REQUESTED_CHANGE_OCCURRED)


def _lift_wide_opt_outs(changes: Changes, subscriber: Subscriber, target: Definition) -> None:
    """A resubscribe lifts the opt-outs covering `target`, and records every other subscription
    of the lifted scope as UNSUBSCRIBED at the same moment: lifting never re-subscribes anything else."""
    portal_wide = subscriber.wide_opt_out(target.business_unit_id)
    lifted: list[tuple[WideScope, int]] = []
    for key in ((WideScope.PORTAL_WIDE, 0), (WideScope.BUSINESS_UNIT_WIDE, target.business_unit_id)):
        row = subscriber.wide.get(key)
        if row is not None and row.status is Status.UNSUBSCRIBED:
            lifted.append(key)
    whole_portal = portal_wide is not None and portal_wide.scope is WideScope.PORTAL_WIDE
    for definition in changes.active_definitions(None if whole_portal else target.business_unit_id):
        stored = subscriber.statuses.get(definition.id)
        if definition.id != target.id and (stored is None or stored.status is not Status.UNSUBSCRIBED):
            changes.record_status(subscriber, definition, Status.UNSUBSCRIBED, None, None)
    for scope, business_unit_id in lifted:
        changes.record_wide(subscriber, scope, business_unit_id, Status.SUBSCRIBED)


def unsubscribe_from_all(changes: Changes, address: str, business_unit_id: int | None) -> list[Effective]:
    """Opt out of all email: portal-wide, or for one brand. Idempotent. Returns the affected
    subscriptions (UNSUBSCRIBE_FROM_ALL_OCCURRED, or NO_STATUS_CHANGE where already unsubscribed)."""
    if business_unit_id is None:
        scope, unit = WideScope.PORTAL_WIDE, 0
    else:
        changes.require_business_unit(business_unit_id)
        scope, unit = WideScope.BUSINESS_UNIT_WIDE, business_unit_id
    subscriber = changes.subscriber(address)
    affected = changes.active_definitions(business_unit_id)
    before = {d.id: effective(d, subscriber).status for d in affected}
    row = subscriber.wide.get((scope, unit))
    if subscriber.erased_at is None and (row is None or row.status is not Status.UNSUBSCRIBED):
        changes.record_wide(subscriber, scope, unit, Status.UNSUBSCRIBED)
    return [
        effective(
            d,
            subscriber,
            SetStatusReason.NO_STATUS_CHANGE
            if before[d.id] is Status.UNSUBSCRIBED
            else SetStatusReason.UNSUBSCRIBE_FROM_ALL_OCCURRED,
        )
        for d in affected
    ]


def wide_statuses(subscriber: Subscriber, business_unit_id: int | None) -> list[WideStatus]:
    """The opt-out-from-all records ever written; for a brand, its own and the portal-wide one."""
    rows = sorted(subscriber.wide.values(), key=lambda w: (w.scope is not WideScope.PORTAL_WIDE, w.business_unit_id))
    if business_unit_id is None:
        return rows
    return [w for w in rows if w.scope is WideScope.PORTAL_WIDE or w.business_unit_id == business_unit_id]


def subscribe_v3(changes: Changes, request: StatusInput) -> Effective:
    """v3 subscribe: never overrides an opt-out, refuses a no-op, needs paperwork under GDPR."""

    def refusal(subscriber: Subscriber, definition: Definition, current: Status | None) -> str | None:
        if subscriber.wide_opt_out(definition.business_unit_id) is not None or current is Status.UNSUBSCRIBED:
            return (
                f"subscription {definition.id} for {request.address} cannot be updated because they have unsubscribed"
            )
        if current is Status.SUBSCRIBED:
            return f"{request.address} is already subscribed to subscription {definition.id}"
        return None

    return _v3_change(changes, request, Status.SUBSCRIBED, changes.portal.gdpr_enabled, refusal)


def unsubscribe_v3(changes: Changes, request: StatusInput) -> Effective:
    """v3 unsubscribe: recorded with whatever paperwork was given, unless the portal is HubSpot-strict."""

    def refusal(subscriber: Subscriber, definition: Definition, current: Status | None) -> str | None:
        if subscriber.erased_at is not None or current is Status.UNSUBSCRIBED:
            return f"{request.address} is already unsubscribed to subscription {definition.id}"
        return None

    strict = changes.portal.gdpr_enabled and changes.portal.hubspot_strict
    return _v3_change(changes, request, Status.UNSUBSCRIBED, strict, refusal)


def _v3_change(
    changes: Changes,
    request: StatusInput,
    new_status: Status,
    needs_paperwork: bool,
    refusal: Callable[[Subscriber, Definition, Status | None], str | None],
) -> Effective:
    """v3's subscribe and unsubscribe: the subscription must exist, paperwork where asked, and a change that
    `refusal` words is refused; otherwise recorded as asked."""
    definition = changes.definition(request.subscription_id)
    if needs_paperwork:
        require_legal_basis(request.legal_basis, request.legal_basis_explanation)
    subscriber = changes.subscriber(request.address)
    stored = subscriber.statuses.get(definition.id)
    refused = refusal(subscriber, definition, stored.status if stored else None)
    if refused is not None:
        raise RuleViolation(refused)
    changes.record_status(subscriber, definition, new_status, request.legal_basis, request.legal_basis_explanation)
    return effective(definition, subscriber)


def resubscribe_v3(changes: Changes, request: StatusInput) -> Effective:
    """The dated versions' v3-shaped resubscribe: a re-consent that lifts the opt-outs in scope."""
    definition = changes.definition(request.subscription_id)
    if effective(definition, changes.subscriber(request.address)).status is Status.SUBSCRIBED:
        raise RuleViolation(f"{request.address} is already subscribed to subscription {definition.id}")
    return set_status(
        changes,
        StatusInput(
            request.address, definition.id, Status.SUBSCRIBED, request.legal_basis, request.legal_basis_explanation
        ),
    )


# -- the contact's own pages ------------------------------------------------------------------------

PAGE_LEGAL_BASIS = LegalBasis.CONSENT_WITH_NOTICE
PAGE_CONSENT_EXPLANATION = "Opted in by the contact on the preference page"


def page_definitions(changes: Changes, business_unit_id: int) -> list[Definition]:
    """What a contact sees on a brand's preference page: its active, non-internal subscriptions."""
    return [d for d in changes.active_definitions(business_unit_id) if not d.is_internal]


def preference_page(changes: Changes, address: str, business_unit_id: int) -> list[Effective]:
    subscriber = changes.subscriber(address)
    return [effective(d, subscriber) for d in page_definitions(changes, business_unit_id)]


def save_preferences(
    changes: Changes, address: str, business_unit_id: int, shown: Mapping[int, bool], wanted: Set[int]
) -> list[Effective]:
    """The preference page's save. Only what the contact changed is written: a subscription whose box
    differs from what the page showed (`shown`: subscribed or not); subscriptions not on the page are
    never touched. Ticking a box is the contact's own consent, recorded as such."""
    visible = {d.id for d in page_definitions(changes, business_unit_id)}
    # Subscriptions first: a resubscribe under an opt-out from all records the rest UNSUBSCRIBED.
    changed = sorted(
        (sid for sid, was in shown.items() if sid in visible and (sid in wanted) != was),
        key=lambda sid: sid not in wanted,
    )
    results = []
    for sid in changed:
        subscribe = sid in wanted
        request = StatusInput(
            address,
            sid,
            Status.SUBSCRIBED if subscribe else Status.UNSUBSCRIBED,
            PAGE_LEGAL_BASIS if subscribe else None,
            PAGE_CONSENT_EXPLANATION if subscribe else None,
        )
        result = set_status(changes, request)
        if result.reason is not SetStatusReason.NO_STATUS_CHANGE:
            results.append(result)
    return results


def opt_out_from_page(changes: Changes, address: str, business_unit_id: int) -> list[Effective]:
    """ "Unsubscribe from all" on a page or link: portal-wide in a portal with one brand, else for the
    link's brand, as HubSpot's brand pages do."""
    single_brand = len(changes.tx.portals.list_business_units(changes.portal.id)) <= 1
    return unsubscribe_from_all(changes, address, None if single_brand else business_unit_id)


def unsubscribe_one(changes: Changes, address: str, subscription_id: int) -> Effective:
    """A single unsubscribe link: that one subscription, idempotent."""
    return set_status(changes, StatusInput(address, subscription_id, Status.UNSUBSCRIBED))


# -- batches ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refused:
    """One batch input the rules or validation refused; the others still apply."""

    index: int
    raw: str
    error: DomainError


def normalize_inputs(raw: Sequence[str]) -> tuple[list[tuple[int, str, str]], list[Refused]]:
    """Valid addresses as (index, raw, normalised), first occurrence of each address only; invalid ones refused."""
    accepted: dict[str, tuple[int, str, str]] = {}
    refused: list[Refused] = []
    for index, value in enumerate(raw):
        try:
            address = normalize_email(value)
        except DomainError as exc:
            refused.append(Refused(index, value, exc))
            continue
        accepted.setdefault(address, (index, value, address))
    return list(accepted.values()), refused


def write_batch(
    changes: Changes, inputs: Sequence[tuple[str, StatusInput | DomainError]]
) -> list[tuple[int, str, Effective | DomainError]]:
    """Apply each input in order (each sees those before it); refusals are per input."""
    changes.load(i.address for _, i in inputs if isinstance(i, StatusInput))
    outcomes: list[tuple[int, str, Effective | DomainError]] = []
    for index, (raw, item) in enumerate(inputs):
        if isinstance(item, DomainError):
            outcomes.append((index, raw, item))
            continue
        try:
            outcomes.append((index, raw, set_status(changes, item)))
        except DomainError as exc:
            outcomes.append((index, raw, exc))
    return outcomes
