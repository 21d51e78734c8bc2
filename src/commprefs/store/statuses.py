"""Subscribers' statuses, opt-outs from all and consent events: the rows every API call reads and writes.

The services hand this repository domain objects (a subscriber's `StoredStatus` and `WideStatus` rows, a
`ConsentEvent`); the rows' columns are made here. A subscriber load is one statement whatever the number of
addresses, written for the driver: it runs on every API call, and SQLAlchemy's compiling of an expanding IN
list took more time than the database took to answer it.
"""

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, delete, select

from commprefs.domain.enums import LEGAL_BASIS_OF, STATUS_OF, WIDE_SCOPE_OF
from commprefs.domain.model import ConsentEvent, StoredStatus, Subscriber, WideStatus
from commprefs.domain.tombstone import tombstone_key
from commprefs.store.portals import PortalRepository
from commprefs.store.schema import consent_event, idempotency_key, import_reject, subscription_status, wide_status
from commprefs.store.sql import COPY_ROWS, Repository

_s, _w = subscription_status.c, wide_status.c
_INSERT_EVENT = consent_event.insert()
_STATUS_KEYS = ["portal_id", "subscriber", "channel", "subscription_id"]
_WIDE_KEYS = ["portal_id", "subscriber", "channel", "scope", "business_unit_id"]

# PostgreSQL gets each list as one array, so that the statement is the same whatever the number of addresses
# (psycopg converted a thousand placeholders anew every batch), and looks each address up on its own (a LATERAL
# subquery behind OFFSET 0, which the planner cannot fold into a join): with `subscriber = ANY(...)`, a table that
# had grown since its last ANALYZE was read whole for the portal (a group of 32 addresses took 13 ms, not 0.6).
_PG_SUBSCRIBERS = (
    "SELECT 0, s.subscriber, s.subscription_id, s.status, s.legal_basis, s.legal_basis_explanation, "
    "s.source, s.updated_at, NULL FROM unnest(%s::varchar[]) AS a(subscriber) CROSS JOIN LATERAL ("
    "SELECT * FROM subscription_status WHERE portal_id = %s AND subscriber = a.subscriber AND channel = %s "
    "OFFSET 0) s "
    "UNION ALL SELECT 1, w.subscriber, w.business_unit_id, w.status, NULL, NULL, w.source, w.updated_at, "
    "w.scope FROM unnest(%s::varchar[]) AS b(subscriber) CROSS JOIN LATERAL ("
    "SELECT * FROM wide_status WHERE portal_id = %s AND subscriber = b.subscriber AND channel = %s "
    "OFFSET 0) w"
)


@lru_cache(maxsize=256)
def _sqlite_subscribers(addresses: int, wide_keys: int) -> str:
    """The same load on SQLite, with one parameter an address."""

    def marks(n: int) -> str:
        return ", ".join(["?"] * n)

    return (
        "SELECT 0, subscriber, subscription_id, status, legal_basis, legal_basis_explanation, source, updated_at, "
        f"NULL FROM subscription_status WHERE portal_id = ? AND channel = ? AND subscriber IN ({marks(addresses)}) "
        "UNION ALL SELECT 1, subscriber, business_unit_id, status, NULL, NULL, source, updated_at, scope "
        f"FROM wide_status WHERE portal_id = ? AND channel = ? AND subscriber IN ({marks(wide_keys)})"
    )


def _subscribers_statement(
    dialect: str, portal_id: int, channel: str, addresses: list[str], keys: list[str]
) -> tuple[str, tuple[Any, ...]]:
    """The subscriber load and its parameters: the addresses' statuses, and the addresses' and tombstone keys'
    opt-outs from all."""
    if dialect == "postgresql":
        return _PG_SUBSCRIBERS, (addresses, portal_id, channel, addresses + keys, portal_id, channel)
    sql = _sqlite_subscribers(len(addresses), len(addresses) + len(keys))
    return sql, (portal_id, channel, *addresses, portal_id, channel, *addresses, *keys)


def status_row(portal_id: int, channel: str, address: str, status: StoredStatus) -> dict[str, Any]:
    return {
        "portal_id": portal_id,
        "subscriber": address,
        "channel": channel,
        "subscription_id": status.subscription_id,
        "status": status.status.value,
        "legal_basis": status.legal_basis.value if status.legal_basis else None,
        "legal_basis_explanation": status.legal_basis_explanation,
        "source": status.source,
        "updated_at": status.updated_at,
    }


def wide_row(portal_id: int, channel: str, address: str, wide: WideStatus) -> dict[str, Any]:
    return {
        "portal_id": portal_id,
        "subscriber": address,
        "channel": channel,
        "scope": wide.scope.value,
        "business_unit_id": wide.business_unit_id,
        "status": wide.status.value,
        "source": wide.source,
        "updated_at": wide.updated_at,
    }


def event_row(event: ConsentEvent) -> dict[str, Any]:
    return {
        "portal_id": event.portal_id,
        "subscriber": event.subscriber,
        "channel": event.channel,
        "subscription_id": event.subscription_id,
        "wide_scope": event.wide_scope.value if event.wide_scope else None,
        "business_unit_id": event.business_unit_id,
        "old_status": event.old_status.value,
        "new_status": event.new_status.value,
        "legal_basis": event.legal_basis.value if event.legal_basis else None,
        "legal_basis_explanation": event.legal_basis_explanation,
        "source": event.source,
        "actor_token_id": event.actor_token_id,
        "request_id": event.request_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "language": event.language,
        "reason": event.reason,
        "occurred_at": event.occurred_at,
        "import_id": event.import_id,
        "recorded_at": event.recorded_at,
    }


class StatusRepository(Repository):
    """One portal's subscribers on one channel: loaded together, written set-based."""

    def __init__(self, conn: Connection, portals: PortalRepository) -> None:
        super().__init__(conn)
        self.portals = portals  # for the erasure salt of a portal
        # Subscribers loaded ahead for a group (preload_subscribers), by portal, channel and salt.
        self._preloaded: dict[tuple[int, str, str | None], dict[str, Subscriber]] = {}
        # Writes kept for later (defer_writes): status and opt-out rows by their keys, events in order.
        self._deferring = False
        self._deferred_statuses: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._deferred_wide: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._deferred_events: list[dict[str, Any]] = []

    def preload_subscribers(self, portal_id: int, channel: str, addresses: Iterable[str]) -> None:
        """Load these subscribers in one statement, for the work of this transaction to share: the readers and
        the writer run a group's single-subscriber work after one load of all of them (store/groups.py).

        The subscribers are shared as they are, and every later load of this Tx returns the same objects (those
        it loads anew join them): a change the rules plan on one, in memory, is what the next work of the
        group sees, as it would read it back once written."""
        current = self.portals.portal_snapshot(portal_id)[0]
        salt = current.erasure_salt if current else None
        self._preloaded[(portal_id, str(channel), salt)] = {}
        self.get_subscribers(portal_id, addresses, channel, salt)

    def defer_writes(self) -> None:
        """Keep this Tx's status, opt-out and event writes until `write_deferred`, merged: the writer's groups
        of single-subscriber changes then write once a group instead of once a change (on PostgreSQL, three
        round trips instead of three a change). Only for work whose subscribers were preloaded: a later load
        must see the changes still waiting here."""
        self._deferring = True

    def write_deferred(self) -> None:
        """Write what `defer_writes` kept: each status and opt-out row as its last change left it, every event
        in order."""
        self._deferring = False
        if self._deferred_statuses:
            self._upsert(subscription_status, list(self._deferred_statuses.values()), _STATUS_KEYS)
        if self._deferred_wide:
            self._upsert(wide_status, list(self._deferred_wide.values()), _WIDE_KEYS)
        self._append_rows(self._deferred_events)
        self._deferred_statuses, self._deferred_wide, self._deferred_events = {}, {}, []

    def get_subscriber(self, portal_id: int, address: str, channel: str) -> Subscriber:
        return self.get_subscribers(portal_id, [address], channel)[address]

    def get_subscribers(
        self, portal_id: int, addresses: Iterable[str], channel: str, erasure_salt: str | None = None
    ) -> dict[str, Subscriber]:
        """Every recorded row for these addresses, in one statement whatever their number.

        The wide query also looks for each address's tombstone, and sets `erased_at` of those erased (what
        that means for their consent is the consent rules' to say)."""
        found = {address: Subscriber(address) for address in addresses}
        if not found:
            return found
        if erasure_salt is None:
            current = self.portals.portal_snapshot(portal_id)[0]
            erasure_salt = current.erasure_salt if current else None
        shared = self._preloaded.get((portal_id, str(channel), erasure_salt))
        if shared is None:
            return self._load_subscribers(portal_id, channel, erasure_salt, found)
        missing = {address: subscriber for address, subscriber in found.items() if address not in shared}
        if missing:
            shared.update(self._load_subscribers(portal_id, channel, erasure_salt, missing))
        return {address: shared[address] for address in found}

    def _load_subscribers(
        self, portal_id: int, channel: str, erasure_salt: str | None, found: dict[str, Subscriber]
    ) -> dict[str, Subscriber]:
        keys = {tombstone_key(erasure_salt, a): a for a in found} if erasure_salt else {}
        sql, params = _subscribers_statement(self._dialect, portal_id, str(channel), list(found), list(keys))
        erased: list[tuple[str, int]] = []
        for row in self._driver_rows(sql, params):
            kind, subscriber, number, status, basis, explanation, source, updated_at, scope = row
            if kind == 0:
                found[subscriber].statuses[number] = StoredStatus(
                    number, STATUS_OF[status], LEGAL_BASIS_OF[basis] if basis else None, explanation, source, updated_at
                )
            elif subscriber in keys:
                erased.append((keys[subscriber], updated_at))
            else:
                wide = WIDE_SCOPE_OF[scope]
                found[subscriber].wide[(wide, number)] = WideStatus(wide, number, STATUS_OF[status], source, updated_at)
        for address, erased_at in erased:
            found[address].erased_at = erased_at
        return found

    def write_statuses(self, portal_id: int, channel: str, statuses: Iterable[tuple[str, StoredStatus]]) -> None:
        """Upsert subscribers' status rows (address, row) in one set-based statement."""
        rows = [status_row(portal_id, channel, address, status) for address, status in statuses]
        if self._deferring:
            for row in rows:
                self._deferred_statuses[(portal_id, row["subscriber"], channel, row["subscription_id"])] = row
        elif rows:
            self._upsert(subscription_status, rows, _STATUS_KEYS)

    def write_wide_statuses(self, portal_id: int, channel: str, wides: Iterable[tuple[str, WideStatus]]) -> None:
        """Upsert subscribers' opt-out-from-all rows (address, row) in one set-based statement."""
        rows = [wide_row(portal_id, channel, address, wide) for address, wide in wides]
        if self._deferring:
            for row in rows:
                key = (portal_id, row["subscriber"], channel, row["scope"], row["business_unit_id"])
                self._deferred_wide[key] = row
        elif rows:
            self._upsert(wide_status, rows, _WIDE_KEYS)

    def append_events(self, events: Sequence[ConsentEvent]) -> None:
        """Append consent events in order, in one set-based statement (COPY, for many on PostgreSQL)."""
        rows = [event_row(event) for event in events]
        if self._deferring:
            self._deferred_events.extend(rows)
        else:
            self._append_rows(rows)

    def _append_rows(self, rows: list[dict[str, Any]]) -> None:
        if self._dialect == "postgresql" and len(rows) >= COPY_ROWS:
            with self._driver_cursor() as cursor:
                self._copy(cursor, consent_event.name, list(rows[0]), rows)
        elif rows:
            self._write_many(_INSERT_EVENT, rows)

    def tombstone_time(self, portal_id: int, key: str) -> int | None:
        """When the address behind `key` was erased, if its tombstone stands."""
        row = self.conn.execute(
            select(_w.updated_at).where(_w.portal_id == portal_id, _w.subscriber == key, _w.status == "UNSUBSCRIBED")
        ).first()
        return int(row.updated_at) if row else None

    def delete_tombstones(self, portal_id: int, keys: Sequence[str]) -> None:
        self.conn.execute(delete(wide_status).where(_w.portal_id == portal_id, _w.subscriber.in_(list(keys))))

    def erase_subscriber(self, portal_id: int, address: str) -> dict[str, int]:
        """Delete every row that holds the address in the portal; how many of each kind went."""
        deleted = {}
        for name, table, column in (
            ("statuses", subscription_status, _s.subscriber),
            ("wideStatuses", wide_status, _w.subscriber),
            ("events", consent_event, consent_event.c.subscriber),
            ("importRejects", import_reject, import_reject.c.email),
        ):
            result = self.conn.execute(delete(table).where(table.c.portal_id == portal_id, column == address))
            deleted[name] = result.rowcount
        # Replies kept for idempotent retries (24 hours) name the address in their body.
        k, needle = idempotency_key.c, address.encode()
        held = self.conn.execute(select(k.key, k.body).where(k.portal_id == portal_id))
        keys = [row.key for row in held if needle in row.body]
        if keys:
            self.conn.execute(delete(idempotency_key).where(k.portal_id == portal_id, k.key.in_(keys)))
        deleted["idempotentReplies"] = len(keys)
        return deleted
