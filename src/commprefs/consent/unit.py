"""The unit of work of the consent rules, and what one subscription of one subscriber reads as.

Every entry point (v3, v4, batches, pages, CLI, admin) goes through a `Changes` unit: it loads the
subscribers involved in one query, applies the rules (consent/rules.py) in memory, and `flush()` hands
every new state and its consent event to the store set-based, in the caller's transaction. A rule that
refuses an input raises before touching anything, so each input is atomic even inside a batch.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

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
from commprefs.domain.errors import NotFound, RuleViolation
from commprefs.domain.model import (
    Actor,
    ConsentEvent,
    Definition,
    Portal,
    StoredStatus,
    Subscriber,
    WideStatus,
)
from commprefs.domain.tombstone import tombstone_key
from commprefs.store import Tx

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
    # What v4 asks for; v3's subscribe, unsubscribe and resubscribe each record their own state.
    state: Status = Status.NOT_SPECIFIED
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
        portal, definitions = tx.portals.portal_snapshot(portal_id)
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
        self._statuses: dict[tuple[str, int], StoredStatus] = {}
        self._wide: dict[tuple[str, WideScope, int], WideStatus] = {}
        self._events: list[ConsentEvent] = []
        self._lifted_tombstones: set[str] = set()

    # -- reading ------------------------------------------------------------------------------

    def load(self, addresses: Iterable[str]) -> None:
        missing = [a for a in dict.fromkeys(addresses) if a not in self._subscribers]
        if missing:
            loaded = self.tx.statuses.get_subscribers(self.portal.id, missing, self.channel, self.portal.erasure_salt)
            for subscriber in loaded.values():
                if subscriber.erased_at is not None:
                    read_as_erased(subscriber)
            self._subscribers.update(loaded)

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
        if self.tx.portals.get_business_unit(self.portal.id, business_unit_id) is None:
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
        self._statuses[(subscriber.address, definition.id)] = subscriber.statuses[definition.id]
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
        subscriber.wide[key] = self._wide[(subscriber.address, scope, business_unit_id)] = WideStatus(
            scope, business_unit_id, new_status, source, at
        )
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
        actor = self.actor
        self._events.append(
            ConsentEvent(
                portal_id=self.portal.id,
                subscriber=address,
                channel=self.channel.value,
                old_status=old,
                new_status=new,
                source=source,
                occurred_at=at,
                subscription_id=fields.get("subscription_id"),
                wide_scope=fields.get("wide_scope"),
                business_unit_id=fields.get("business_unit_id"),
                legal_basis=fields.get("legal_basis"),
                legal_basis_explanation=fields.get("legal_basis_explanation"),
                actor_token_id=actor.token_id,
                request_id=actor.request_id,
                ip=actor.ip,
                user_agent=actor.user_agent,
                language=actor.language,
                reason=provenance.reason if provenance else actor.reason,
                import_id=self.import_id,
                recorded_at=self.now if self.import_id else None,
            )
        )

    def flush(self) -> None:
        """Write every planned state and event, set-based, in the caller's transaction."""
        statuses, portal_id, channel = self.tx.statuses, self.portal.id, self.channel.value
        statuses.write_statuses(portal_id, channel, [(address, s) for (address, _), s in self._statuses.items()])
        statuses.write_wide_statuses(portal_id, channel, [(key[0], w) for key, w in self._wide.items()])
        statuses.append_events(self._events)
        if self._lifted_tombstones:
            salt = self.portal.erasure_salt
            statuses.delete_tombstones(portal_id, [tombstone_key(salt, a) for a in self._lifted_tombstones])
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


def read_as_erased(subscriber: Subscriber) -> None:
    """The tombstone rule: an erased address reads as opted out of all, portal-wide, until a new explicit
    consent is recorded (which lifts the tombstone: `Changes.record_wide`)."""
    assert subscriber.erased_at is not None
    subscriber.wide.setdefault(
        (WideScope.PORTAL_WIDE, 0),
        WideStatus(WideScope.PORTAL_WIDE, 0, Status.UNSUBSCRIBED, Source.ERASURE.value, subscriber.erased_at),
    )
