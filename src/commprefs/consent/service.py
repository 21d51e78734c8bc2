"""The consent service face: every read and change of subscribers' consent that an adapter (the APIs, the
contact's pages, the CLI) asks for. It opens the unit of work, runs the rules on it and writes what they
planned; adapters never see the store.

A read or change of one subscriber names them to the store (`subscriber=`): the store's groups then load
all such subscribers together, and the writer writes their changes together (store/groups.py).
"""

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, TypeVar

from commprefs.clock import now_ms
from commprefs.consent import rules
from commprefs.consent.erasure import Erasure, erase
from commprefs.consent.history import Recorded, recorded
from commprefs.consent.links import LinkClaims, Links, base_url_for, generate
from commprefs.consent.unit import Changes, Effective
from commprefs.domain.enums import Channel, Source, Status
from commprefs.domain.errors import KeyReused, NotFound
from commprefs.domain.model import Actor, Definition, StoredStatus, WideStatus
from commprefs.store import Store, Tx

R = TypeVar("R")
# A read's unit of work records nothing: its actor is never written.
READER = Actor(Source.API)
# How long a retried change's first answer is kept (an Idempotency-Key's life).
RETRY_TTL_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Retry:
    """A change sent with an idempotency key: the same key and fingerprint within 24 hours gets the first
    answer back without changing anything again; the same key with another fingerprint is refused."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A change's answer as first given: kept with a `Retry`'s key, in the change's own transaction."""

    status_code: int
    body: bytes
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PageState:
    """What a brand's preference page shows a contact: the brand's name, its subscriptions (translated) with
    their states, and whether an opt-out from all covers them."""

    brand: str
    definitions: list[Definition]
    states: list[Effective]
    opted_out: bool


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    """Everything held about one address in a portal (GDPR access): statuses as the APIs show them, every
    stored row, the opt-outs from all, the history and the rejected import lines."""

    portal_id: int
    address: str
    erased_at: int | None
    current: list[Effective]
    stored: list[StoredStatus]
    wide: list[WideStatus]
    definitions: dict[int, Definition]
    history: Recorded
    rejects: list[Any]


class Consent:
    """Reads and changes of consent, each in one transaction of the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- reads ------------------------------------------------------------------------------------------

    async def statuses(
        self, portal_id: int, address: str, channel: Channel = Channel.EMAIL, business_unit_id: int | None = None
    ) -> list[Effective]:
        """One subscriber's subscriptions as v3 and v4 show them."""
        return await self._store.aread(
            lambda tx: Changes(tx, portal_id, READER, 0, channel).statuses(address, business_unit_id),
            subscriber=(portal_id, channel, address),
        )

    async def statuses_of(
        self,
        portal_id: int,
        addresses: Sequence[str],
        channel: Channel = Channel.EMAIL,
        business_unit_id: int | None = None,
    ) -> list[list[Effective]]:
        """Many subscribers' subscriptions (a batch read), loaded together."""

        def read(tx: Tx) -> list[list[Effective]]:
            changes = Changes(tx, portal_id, READER, 0, channel)
            changes.load(addresses)
            return [changes.statuses(address, business_unit_id) for address in addresses]

        return await self._store.aread(read)

    async def opt_outs(
        self, portal_id: int, address: str, channel: Channel, business_unit_id: int | None = None
    ) -> list[WideStatus]:
        """One subscriber's opt-out-from-all records (for a brand: its own and the portal-wide one)."""
        return (await self.opt_outs_of(portal_id, [address], channel, business_unit_id))[0]

    async def opt_outs_of(
        self, portal_id: int, addresses: Sequence[str], channel: Channel, business_unit_id: int | None = None
    ) -> list[list[WideStatus]]:
        """Many subscribers' opt-out-from-all records, loaded together (one subscriber's is grouped with the
        other single-subscriber reads of its moment)."""

        def read(tx: Tx) -> list[list[WideStatus]]:
            changes = Changes(tx, portal_id, READER, 0, channel)
            changes.load(addresses)
            return [rules.wide_statuses(changes.subscriber(a), business_unit_id) for a in addresses]

        one = (portal_id, channel, addresses[0]) if len(addresses) == 1 else None
        return await self._store.aread(read, subscriber=one)

    async def history(self, portal_id: int, address: str, before_id: int | None, limit: int) -> Recorded:
        """One subscriber's consent events, newest first, before the event `before_id`."""
        return await self._store.aread(
            lambda tx: recorded(tx, portal_id, tx.feed.history(portal_id, address, before_id, limit))
        )

    async def feed(self, portal_id: int, after: tuple[int, int], limit: int) -> Recorded:
        """The portal's events after the feed position `after`, in commit order."""
        return await self._store.aread(lambda tx: recorded(tx, portal_id, tx.feed.feed(portal_id, after, limit)))

    async def subject(self, portal_id: int, address: str) -> SubjectRecord:
        return await self._store.aread(lambda tx: subject_record(tx, portal_id, address))

    # -- changes ----------------------------------------------------------------------------------------

    async def change(
        self,
        portal_id: int,
        actor: Actor,
        now: int,
        plan: Callable[[Changes], R],
        *,
        channel: Channel = Channel.EMAIL,
        address: str | None = None,
        retry: Retry | None = None,
        answer: Callable[[R], Answer] | None = None,
    ) -> R | Answer:
        """Run `plan` (rules on a unit of work) and write what it planned, in one transaction. `address` names
        the one subscriber it changes, if only one. With `retry`, the first answer (`answer` of the result) is
        kept with the key in the same transaction, and a retry gets it back as an `Answer` (`replayed`)."""

        def unit(tx: Tx) -> R | Answer:
            if retry is not None:
                first = tx.idempotency.get_idempotent(portal_id, retry.key)
                if first is not None and first.created_at > now_ms() - RETRY_TTL_MS:
                    if first.fingerprint != retry.fingerprint:
                        raise KeyReused()
                    return Answer(first.status_code, bytes(first.body), replayed=True)
            changes = Changes(tx, portal_id, actor, now, channel)
            result = plan(changes)
            changes.flush()
            if retry is not None and answer is not None:
                given = answer(result)
                tx.idempotency.save_idempotent(
                    portal_id, retry.key, retry.fingerprint, given.status_code, given.body, now_ms()
                )
            return result

        subscriber = (portal_id, channel, address) if address is not None else None
        return await self._store.write(unit, subscriber=subscriber)

    async def links(
        self,
        portal_id: int,
        address: str,
        *,
        business_unit_id: int,
        language: str | None,
        subscription_id: int | None,
        configured_url: str | None,
        fallback_url: str,
    ) -> Links:
        """A subscriber's signed links (links/generate, `commprefs links generate`), once the brand and the
        subscription are known to exist (NotFound otherwise)."""

        def make(tx: Tx) -> Links:
            checks = Changes(tx, portal_id, READER, 0)
            checks.require_business_unit(business_unit_id)
            if subscription_id is not None:
                checks.definition(subscription_id)
            shown_in = language.replace("_", "-").lower() if language else None
            claims = LinkClaims(portal_id, address, business_unit_id, shown_in, subscription_id)
            return generate(checks.portal, claims, base_url_for(checks.portal, configured_url, fallback_url))

        return await self._store.aread(make)

    async def erase(self, portal_id: int, address: str, actor: Actor) -> Erasure:
        return await self._store.write(lambda tx: erase(tx, portal_id, address, actor, now_ms()))

    async def purge_retries(self) -> int:
        """Forget the answers of retried changes older than 24 hours; how many went."""
        return await self._store.write(lambda tx: tx.idempotency.purge_idempotent(now_ms() - RETRY_TTL_MS))

    # -- the contact's pages ---------------------------------------------------------------------------

    async def preference_page(self, portal_id: int, address: str, business_unit_id: int) -> PageState:
        def read(tx: Tx) -> PageState:
            changes = Changes(tx, portal_id, READER, 0)
            states = rules.preference_page(changes, address, business_unit_id)
            definitions = tx.portals.list_definitions(
                portal_id, business_unit_id=business_unit_id, with_translations=True
            )
            opted_out = changes.subscriber(address).wide_opt_out(business_unit_id) is not None
            return PageState(_brand(changes, business_unit_id), definitions, states, opted_out)

        return await self._store.aread(read)

    async def save_preferences(
        self,
        portal_id: int,
        actor: Actor,
        address: str,
        business_unit_id: int,
        shown: Mapping[int, bool],
        wanted: Set[int],
        *,
        opt_out_from_all: bool,
    ) -> tuple[str, list[tuple[Definition, bool]]]:
        """The preference page's save (or its "unsubscribe from all"): the brand's name, and each subscription
        changed (with its translations) and whether it is now subscribed."""

        def plan(changes: Changes) -> tuple[str, list[tuple[Definition, bool]]]:
            if opt_out_from_all:
                affected = rules.opt_out_from_page(changes, address, business_unit_id)
            else:
                affected = rules.save_preferences(changes, address, business_unit_id, shown, wanted)
            # The unit of work's definitions carry no translations; the confirmation names them translated.
            ids = [s.definition.id for s in affected]
            found = changes.tx.portals.list_definitions(portal_id, ids=ids, with_translations=True)
            translated = {d.id: d for d in found}
            changed = [(translated[s.definition.id], s.status is Status.SUBSCRIBED) for s in affected]
            return _brand(changes, business_unit_id), changed

        return _planned(await self.change(portal_id, actor, now_ms(), plan))

    async def opt_out_from_page(self, portal_id: int, actor: Actor, address: str, business_unit_id: int) -> str:
        """An unsubscribe-all link's opt-out; the brand's name."""

        def plan(changes: Changes) -> str:
            rules.opt_out_from_page(changes, address, business_unit_id)
            return _brand(changes, business_unit_id)

        return _planned(await self.change(portal_id, actor, now_ms(), plan))

    async def single_subscription(self, portal_id: int, subscription_id: int | None) -> tuple[str, Definition]:
        """The active subscription a single-unsubscribe link names (NotFound once archived), with its brand's
        name and its translations."""

        def read(tx: Tx) -> tuple[str, Definition]:
            changes = Changes(tx, portal_id, READER, 0)
            if subscription_id is None:
                raise NotFound("the link names no subscription")
            unit = changes.definition(subscription_id).business_unit_id
            definition = tx.portals.get_definition(portal_id, subscription_id)
            assert definition is not None
            return _brand(changes, unit), definition

        return await self._store.aread(read)

    async def unsubscribe_one(self, portal_id: int, actor: Actor, address: str, subscription_id: int) -> None:
        await self.change(
            portal_id, actor, now_ms(), lambda changes: rules.unsubscribe_one(changes, address, subscription_id)
        )

    async def brand(self, portal_id: int, business_unit_id: int) -> str:
        """The name a page shows for a brand: its own, or the portal's where the brand is unknown."""
        return await self._store.aread(lambda tx: _brand(Changes(tx, portal_id, READER, 0), business_unit_id))

    async def is_known(self, portal_id: int, address: str) -> bool:
        """Whether anything is recorded for the address: who may be mailed a link they ask for."""
        subscriber = await self._store.aread(lambda tx: Changes(tx, portal_id, READER, 0).subscriber(address))
        return bool(subscriber.statuses or subscriber.wide)


def _brand(changes: Changes, business_unit_id: int) -> str:
    unit = changes.tx.portals.get_business_unit(changes.portal.id, business_unit_id)
    return unit.name if unit is not None else changes.portal.name


def _planned(result: R | Answer) -> R:
    """The result of a change made without a `Retry` (only a retry is answered with an `Answer`)."""
    assert not isinstance(result, Answer)
    return result


def subject_record(tx: Tx, portal_id: int, address: str) -> SubjectRecord:
    changes = Changes(tx, portal_id, READER, 0)
    subscriber = changes.subscriber(address)
    definitions = changes.definitions
    return SubjectRecord(
        portal_id=portal_id,
        address=address,
        erased_at=subscriber.erased_at,
        current=changes.statuses(address),
        stored=list(subscriber.statuses.values()),
        wide=list(subscriber.wide.values()),
        definitions=definitions,
        history=recorded(tx, portal_id, tx.feed.list_events(portal_id, address)),
        rejects=tx.transfer.rejects_of(portal_id, address),
    )
