"""The consent rules: the only place that decides what a change means.

Every entry point (v3, v4, batches, pages, CLI, admin) goes through a `Changes` unit: it loads
the subscribers involved in one query, applies the rules in memory, and `flush()` writes every
new state and its consent event set-based, in the caller's transaction. A rule that refuses an
input raises before touching anything, so each input is atomic even inside a batch.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from commprefs.domain.email import normalize_email
from commprefs.domain.enums import (
    Channel,
    LegalBasis,
    SetStatusReason,
    Source,
    SourceOfStatus,
    Status,
    V3Status,
    WideScope,
)
from commprefs.domain.errors import DomainError, NotFound, RuleViolation
from commprefs.domain.model import Actor, Definition, Portal, StoredStatus, Subscriber, WideStatus
from commprefs.domain.tombstone import tombstone_key
from commprefs.store.repo import Tx

NOT_SPECIFIED_SOURCE = "Not specified"
T = TypeVar("T")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much, and reads make thousands
class Effective:
    """One subscription of one subscriber as the APIs show it (built by `effective`, never changed after).

    `status` is v4's effective state: UNSUBSCRIBED while an opt-out from all covers the
    subscription, else what was recorded (NOT_SPECIFIED if nothing was).
    """

    definition: Definition
    address: str
    status: Status
    source: str
    legal_basis: LegalBasis | None
    legal_basis_explanation: str | None
    timestamp: int
    wide: WideScope | None
    reason: SetStatusReason | None = None

    @property
    def v3_status(self) -> V3Status:
        return V3Status.SUBSCRIBED if self.status is Status.SUBSCRIBED else V3Status.NOT_SUBSCRIBED

    @property
    def source_of_status(self) -> SourceOfStatus:
        if self.wide is WideScope.PORTAL_WIDE:
            return SourceOfStatus.PORTAL_WIDE_STATUS
        if self.wide is WideScope.BUSINESS_UNIT_WIDE:
            return SourceOfStatus.BRAND_WIDE_STATUS
        return SourceOfStatus.SUBSCRIPTION_STATUS


def effective(definition: Definition, subscriber: Subscriber, reason: SetStatusReason | None = None) -> Effective:
    stored = subscriber.statuses.get(definition.id)
    wide = subscriber.wide_opt_out(definition.business_unit_id)
    if wide is not None:
        status, source, timestamp = Status.UNSUBSCRIBED, wide.source, wide.updated_at
    elif stored is not None:
        status, source, timestamp = stored.status, stored.source, stored.updated_at
    else:
        status, source, timestamp = Status.NOT_SPECIFIED, NOT_SPECIFIED_SOURCE, definition.created_at
    return Effective(
        definition=definition,
        address=subscriber.address,
        status=status,
        source=source,
        legal_basis=stored.legal_basis if stored else None,
        legal_basis_explanation=stored.legal_basis_explanation if stored else None,
        timestamp=timestamp,
        wide=wide.scope if wide else None,
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class StatusInput:
    """One requested per-subscription change, as any entry point received it."""

    address: str
    subscription_id: int
    state: Status
    legal_basis: LegalBasis | None = None
    legal_basis_explanation: str | None = None


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an imported change came from: its original source, time and the person's reason."""

    source: str
    at: int
    reason: str | None = None


class Changes:
    """A unit of work over some subscribers of one portal and channel, written by `flush()`."""

    def __init__(
        self,
        tx: Tx,
        portal_id: int,
        actor: Actor,
        now: int,
        channel: Channel = Channel.EMAIL,
        import_id: str | None = None,
    ) -> None:
        portal, definitions = tx.portal_snapshot(portal_id)
        if portal is None:
            raise NotFound(f"portal {portal_id} does not exist")
        self.tx = tx
        self.portal: Portal = portal
        self.actor = actor
        self.now = now
        self.channel = channel
        # Set when the changes come from an import: their events then name it and keep `now` as the
        # time they were recorded, while `occurred_at` is the original time from the file.
        self.import_id = import_id
        self.definitions = {d.id: d for d in definitions}
        self._by_name: dict[str, list[Definition]] | None = None
        self._named: dict[tuple[str, int | None], Definition] = {}
        self._active: dict[int | None, list[Definition]] = {}
        self._units: set[int] = set()
        self._subscribers: dict[str, Subscriber] = {}
        self._statuses: dict[tuple[str, int], dict[str, Any]] = {}
        self._wide: dict[tuple[str, WideScope, int], dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._lifted_tombstones: set[str] = set()

    # -- reading ------------------------------------------------------------------------------

    def load(self, addresses: Iterable[str]) -> None:
        missing = [a for a in dict.fromkeys(addresses) if a not in self._subscribers]
        if missing:
            self._subscribers.update(
                self.tx.get_subscribers(self.portal.id, missing, self.channel, self.portal.erasure_salt)
            )

    def subscriber(self, address: str) -> Subscriber:
        found = self._subscribers.get(address)
        if found is None:
            self.load([address])
            found = self._subscribers[address]
        return found

    def definition(self, subscription_id: int) -> Definition:
        definition = self.definitions.get(subscription_id)
        if definition is None or not definition.is_active:
            raise NotFound(f"subscription {subscription_id} does not exist", field="subscriptionId")
        return definition

    def active_definitions(self, business_unit_id: int | None = None) -> list[Definition]:
        """The active definitions (of one brand), in their order; asked once per subscriber of a batch."""
        active = self._active.get(business_unit_id)
        if active is None:
            active = self._active[business_unit_id] = [
                d
                for d in self.definitions.values()
                if d.is_active and (business_unit_id is None or d.business_unit_id == business_unit_id)
            ]
        return list(active)

    def definition_named(self, name: str, business_unit_id: int | None = None) -> Definition:
        """An active definition by its name (any case); a name two brands share needs the brand."""
        known = self._named.get((name, business_unit_id))
        if known is not None:  # an import asks this for each of its rows, with a few names
            return known
        if self._by_name is None:
            self._by_name = {}
            for d in self.active_definitions():
                self._by_name.setdefault(d.name.casefold(), []).append(d)
        candidates = self._by_name.get(name.strip().casefold(), [])
        found = [d for d in candidates if business_unit_id is None or d.business_unit_id == business_unit_id]
        if not found:
            raise NotFound(f"no active subscription is named {name!r}", field="subscription")
        if len(found) > 1:
            raise RuleViolation(
                f"{len(found)} brands have a subscription named {name!r}: give its id or business unit",
                field="subscription",
            )
        self._named[(name, business_unit_id)] = found[0]
        return found[0]

    def require_business_unit(self, business_unit_id: int) -> None:
        if business_unit_id in self._units:
            return
        if self.tx.get_business_unit(self.portal.id, business_unit_id) is None:
            raise NotFound(f"business unit {business_unit_id} does not exist", field="businessUnitId")
        self._units.add(business_unit_id)  # an import asks once per row

    def statuses(self, address: str, business_unit_id: int | None = None) -> list[Effective]:
        subscriber = self.subscriber(address)
        return [effective(d, subscriber) for d in self.active_definitions(business_unit_id)]

    # -- recording ----------------------------------------------------------------------------

    def record_status(
        self,
        subscriber: Subscriber,
        definition: Definition,
        new_status: Status,
        legal_basis: LegalBasis | None,
        legal_basis_explanation: str | None,
        provenance: Provenance | None = None,
    ) -> None:
        old = subscriber.statuses.get(definition.id)
        source, at = self._origin(provenance)
        subscriber.statuses[definition.id] = StoredStatus(
            definition.id, new_status, legal_basis, legal_basis_explanation, source, at
        )
        self._statuses[(subscriber.address, definition.id)] = {
            "portal_id": self.portal.id,
            "subscriber": subscriber.address,
            "channel": self.channel.value,
            "subscription_id": definition.id,
            "status": new_status.value,
            "legal_basis": legal_basis.value if legal_basis else None,
            "legal_basis_explanation": legal_basis_explanation,
            "source": source,
            "updated_at": at,
        }
        self._event(
            subscriber.address,
            old.status if old else Status.NOT_SPECIFIED,
            new_status,
            provenance,
            subscription_id=definition.id,
            business_unit_id=definition.business_unit_id,
            legal_basis=legal_basis,
            legal_basis_explanation=legal_basis_explanation,
        )

    def record_wide(
        self,
        subscriber: Subscriber,
        scope: WideScope,
        business_unit_id: int,
        new_status: Status,
        provenance: Provenance | None = None,
    ) -> None:
        key = (scope, business_unit_id)
        old = subscriber.wide.get(key)
        source, at = self._origin(provenance)
        if subscriber.erased_at is not None and key == (WideScope.PORTAL_WIDE, 0) and new_status is Status.SUBSCRIBED:
            # A new explicit consent after an erasure: the tombstone goes, the address is known again.
            self._lifted_tombstones.add(subscriber.address)
            subscriber.erased_at = None
        subscriber.wide[key] = WideStatus(scope, business_unit_id, new_status, source, at)
        self._wide[(subscriber.address, scope, business_unit_id)] = {
            "portal_id": self.portal.id,
            "subscriber": subscriber.address,
            "channel": self.channel.value,
            "scope": scope.value,
            "business_unit_id": business_unit_id,
            "status": new_status.value,
            "source": source,
            "updated_at": at,
        }
        self._event(
            subscriber.address,
            old.status if old else Status.NOT_SPECIFIED,
            new_status,
            provenance,
            wide_scope=scope,
            business_unit_id=business_unit_id,
        )

    def _origin(self, provenance: Provenance | None) -> tuple[str, int]:
        if provenance is None:
            return str(self.actor.source), self.now
        return provenance.source, provenance.at

    def _event(self, address: str, old: Status, new: Status, provenance: Provenance | None, **fields: Any) -> None:
        source, at = self._origin(provenance)
        self._events.append(
            {
                "portal_id": self.portal.id,
                "subscriber": address,
                "channel": self.channel.value,
                "subscription_id": fields.get("subscription_id"),
                "wide_scope": fields["wide_scope"].value if fields.get("wide_scope") else None,
                "business_unit_id": fields.get("business_unit_id"),
                "old_status": old.value,
                "new_status": new.value,
                "legal_basis": fields["legal_basis"].value if fields.get("legal_basis") else None,
                "legal_basis_explanation": fields.get("legal_basis_explanation"),
                "source": source,
                "actor_token_id": self.actor.token_id,
                "request_id": self.actor.request_id,
                "ip": self.actor.ip,
                "user_agent": self.actor.user_agent,
                "language": self.actor.language,
                "reason": provenance.reason if provenance else self.actor.reason,
                "occurred_at": at,
                "import_id": self.import_id,
                "recorded_at": self.now if self.import_id else None,
            }
        )

    def flush(self) -> None:
        """Write every planned state and event, set-based, in the caller's transaction."""
        self.tx.write_statuses(list(self._statuses.values()))
        self.tx.write_wide_statuses(list(self._wide.values()))
        self.tx.append_events(self._events)
        if self._lifted_tombstones:
            salt = self.portal.erasure_salt
            self.tx.delete_tombstones(self.portal.id, [tombstone_key(salt, a) for a in self._lifted_tombstones])
        self._statuses.clear()
        self._wide.clear()
        self._events.clear()
        self._lifted_tombstones.clear()


def apply(tx: Tx, portal_id: int, actor: Actor, now: int, operation: Callable[..., T], *args: Any) -> T:
    """Run one rule on a fresh unit of work and write its changes: the single-call path."""
    changes = Changes(tx, portal_id, actor, now)
    result = operation(changes, *args)
    changes.flush()
    return result


# -- the rules ----------------------------------------------------------------------------------


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
    definition = changes.definition(request.subscription_id)
    if changes.portal.gdpr_enabled:
        require_legal_basis(request.legal_basis, request.legal_basis_explanation)
    subscriber = changes.subscriber(request.address)
    stored = subscriber.statuses.get(definition.id)
    opted_out = subscriber.wide_opt_out(definition.business_unit_id) is not None
    if opted_out or (stored is not None and stored.status is Status.UNSUBSCRIBED):
        raise RuleViolation(
            f"subscription {definition.id} for {request.address} cannot be updated because they have unsubscribed"
        )
    if stored is not None and stored.status is Status.SUBSCRIBED:
        raise RuleViolation(f"{request.address} is already subscribed to subscription {definition.id}")
    changes.record_status(
        subscriber, definition, Status.SUBSCRIBED, request.legal_basis, request.legal_basis_explanation
    )
    return effective(definition, subscriber)


def unsubscribe_v3(changes: Changes, request: StatusInput) -> Effective:
    """v3 unsubscribe: recorded with whatever paperwork was given, unless the portal is HubSpot-strict."""
    definition = changes.definition(request.subscription_id)
    if changes.portal.gdpr_enabled and changes.portal.hubspot_strict:
        require_legal_basis(request.legal_basis, request.legal_basis_explanation)
    subscriber = changes.subscriber(request.address)
    stored = subscriber.statuses.get(definition.id)
    if subscriber.erased_at is not None or (stored is not None and stored.status is Status.UNSUBSCRIBED):
        raise RuleViolation(f"{request.address} is already unsubscribed to subscription {definition.id}")
    changes.record_status(
        subscriber, definition, Status.UNSUBSCRIBED, request.legal_basis, request.legal_basis_explanation
    )
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
    single_brand = len(changes.tx.list_business_units(changes.portal.id)) <= 1
    return unsubscribe_from_all(changes, address, None if single_brand else business_unit_id)


def unsubscribe_one(changes: Changes, address: str, subscription_id: int) -> Effective:
    """A single unsubscribe link: that one subscription, idempotent."""
    return set_status(changes, StatusInput(address, subscription_id, Status.UNSUBSCRIBED))


# -- imports ------------------------------------------------------------------------------------


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


# -- data-subject erasure -------------------------------------------------------------------------


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
    previous = tx.tombstone_time(portal_id, key)
    deleted = tx.erase_subscriber(portal_id, address)
    if previous is not None and not any(deleted.values()):
        return Erasure(key, previous, deleted, already_erased=True)
    # The tombstone is an opt-out from all whose subscriber is the key: recorded like any other.
    tombstone = Subscriber(key)
    changes.record_wide(tombstone, WideScope.PORTAL_WIDE, 0, Status.UNSUBSCRIBED, Provenance(Source.ERASURE.value, now))
    changes.flush()
    return Erasure(key, now, deleted, already_erased=False)


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
