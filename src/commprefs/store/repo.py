"""The store interface: every query the service layer needs, on one connection (one transaction).

SQL is written once here with SQLAlchemy Core; each method is scoped to a portal id. The statements
every API call runs (the subscriber load, single-row writes on SQLite) are handed to the driver's
cursor, compiled once: SQLAlchemy's per-execution work cost more than the database's.
"""

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    Row,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from commprefs.domain.enums import (
    LEGAL_BASIS_OF,
    STATUS_OF,
    WIDE_SCOPE_OF,
    Scope,
    Source,
    Status,
    WideScope,
)
from commprefs.domain.model import (
    BusinessUnit,
    Definition,
    Portal,
    StoredStatus,
    Subscriber,
    TokenInfo,
    Translation,
    WideStatus,
)
from commprefs.domain.tombstone import PREFIX as TOMBSTONE_PREFIX
from commprefs.domain.tombstone import tombstone_key
from commprefs.store.cache import PortalCache, Snapshot
from commprefs.store.schema import (
    business_unit,
    consent_event,
    definition_translation,
    idempotency_key,
    import_job,
    import_reject,
    portal,
    subscription_definition,
    subscription_status,
    token,
    webhook_delivery,
    webhook_endpoint,
    wide_status,
)

# The hot statements are built once with bind parameters: building a statement costs more
# Python time than SQLite takes to run it.
_s, _w, _d = subscription_status.c, wide_status.c, subscription_definition.c
_SELECT_PORTAL = select(portal).where(portal.c.id == bindparam("portal_id"))
_SELECT_DEFINITIONS = (
    select(subscription_definition).where(_d.portal_id == bindparam("portal_id")).order_by(_d.created_at, _d.id)
)
_INSERT_EVENT = consent_event.insert()


@dataclass(frozen=True)
class ExportRows:
    """Which rows an export reads: a portal's on one channel, optionally of some subscriptions (a brand's opt-outs
    from all with them), optionally only the suppressions; `subscription_scope` is what a per-subscription row's
    `scope` column says."""

    portal_id: int
    channel: str
    subscription_ids: Sequence[int] | None
    business_unit_id: int | None
    suppressed_only: bool
    subscription_scope: str


# PostgreSQL: writes of at least this many rows go through COPY (imports, batches).
COPY_ROWS = 64
# Exports read this many rows at a time (a server-side cursor on PostgreSQL): memory stays flat.
STREAM_ROWS = 2000


# A subscriber load (statuses, then opt-outs from all and tombstones) as one statement, written for the driver:
# it runs on every API call, and SQLAlchemy's compiling of an expanding IN list took more time than the database
# took to answer it.
#
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


class Tx:
    """A unit of work on one connection. Methods read and write; the caller commits."""

    _compiled: ClassVar[dict[tuple[Any, str, tuple[str, ...]], Any]] = {}
    _upserts: ClassVar[dict[tuple[str, str], Any]] = {}

    def __init__(self, conn: Connection, cache: PortalCache | None = None) -> None:
        self.conn = conn
        self.cache = cache
        self.changed_portals: set[int] = set()
        self._dialect = conn.dialect.name
        self._insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        # Subscribers loaded ahead for a group (preload_subscribers), by portal, channel and salt.
        self._preloaded: dict[tuple[int, str, str | None], dict[str, Subscriber]] = {}
        # Writes kept for later (defer_writes): status and opt-out rows by their keys, events in order.
        self._deferring = False
        self._deferred_statuses: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._deferred_wide: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._deferred_events: list[dict[str, Any]] = []

    # -- portals and brands -------------------------------------------------------------

    def insert_portal(
        self, id: int, name: str, gdpr_enabled: bool, signing_secret: str, erasure_salt: str, now: int
    ) -> None:
        self.conn.execute(
            portal.insert().values(
                id=id,
                name=name,
                gdpr_enabled=gdpr_enabled,
                hubspot_strict=False,
                default_language="en",
                signing_secret=signing_secret,
                erasure_salt=erasure_salt,
                created_at=now,
            )
        )

    def _changed(self, portal_id: int) -> None:
        """Portal settings, brands or definitions changed: drop the cached snapshot (again after commit)."""
        self.changed_portals.add(portal_id)
        if self.cache is not None:
            self.cache.invalidate({portal_id})

    def portal_snapshot(self, portal_id: int) -> Snapshot:
        """The portal and its definitions (without translations), from the cache when fresh."""
        cache = self.cache if portal_id not in self.changed_portals else None
        if cache is None:
            return self.get_portal(portal_id), tuple(self.list_definitions(portal_id))
        cached = cache.get(portal_id)
        if cached is not None:
            return cached
        generation = cache.generation(portal_id)
        snapshot = (self.get_portal(portal_id), tuple(self.list_definitions(portal_id)))
        cache.put(portal_id, snapshot, generation)
        return snapshot

    def get_portal(self, portal_id: int) -> Portal | None:
        row = self.conn.execute(_SELECT_PORTAL, {"portal_id": portal_id}).first()
        return _portal(row) if row else None

    def list_portals(self) -> list[Portal]:
        return [_portal(r) for r in self.conn.execute(select(portal).order_by(portal.c.id))]

    def update_portal(self, portal_id: int, **values: Any) -> None:
        self._changed(portal_id)
        self.conn.execute(update(portal).where(portal.c.id == portal_id).values(**values))

    def portal_exists(self, portal_id: int) -> bool:
        return self.conn.execute(select(portal.c.id).where(portal.c.id == portal_id)).first() is not None

    def count_portals(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(portal)).scalar_one())

    def insert_business_unit(self, portal_id: int, id: int, name: str, now: int) -> None:
        self._changed(portal_id)
        self.conn.execute(business_unit.insert().values(portal_id=portal_id, id=id, name=name, created_at=now))

    def list_business_units(self, portal_id: int) -> list[BusinessUnit]:
        rows = self.conn.execute(
            select(business_unit).where(business_unit.c.portal_id == portal_id).order_by(business_unit.c.id)
        )
        return [BusinessUnit(r.portal_id, r.id, r.name) for r in rows]

    def get_business_unit(self, portal_id: int, id: int) -> BusinessUnit | None:
        row = self.conn.execute(
            select(business_unit).where(business_unit.c.portal_id == portal_id, business_unit.c.id == id)
        ).first()
        return BusinessUnit(row.portal_id, row.id, row.name) if row else None

    def rename_business_unit(self, portal_id: int, id: int, name: str) -> None:
        self.conn.execute(
            update(business_unit)
            .where(business_unit.c.portal_id == portal_id, business_unit.c.id == id)
            .values(name=name)
        )

    def max_business_unit_id(self, portal_id: int) -> int:
        value = self.conn.execute(
            select(func.max(business_unit.c.id)).where(business_unit.c.portal_id == portal_id)
        ).scalar()
        return int(value or 0)

    # -- subscription definitions -------------------------------------------------------

    def insert_definition(self, definition: Definition) -> None:
        self._changed(definition.portal_id)
        self.conn.execute(
            subscription_definition.insert().values(
                portal_id=definition.portal_id,
                id=definition.id,
                business_unit_id=definition.business_unit_id,
                name=definition.name,
                description=definition.description,
                purpose=definition.purpose,
                communication_method=definition.communication_method,
                is_active=definition.is_active,
                is_default=definition.is_default,
                is_internal=definition.is_internal,
                created_at=definition.created_at,
                updated_at=definition.updated_at,
            )
        )

    def update_definition(self, portal_id: int, id: int, **values: Any) -> None:
        self._changed(portal_id)
        self.conn.execute(
            update(subscription_definition)
            .where(subscription_definition.c.portal_id == portal_id, subscription_definition.c.id == id)
            .values(**values)
        )

    def definition_id_taken(self, portal_id: int, id: int) -> bool:
        query = select(subscription_definition.c.id).where(
            subscription_definition.c.portal_id == portal_id, subscription_definition.c.id == id
        )
        return self.conn.execute(query).first() is not None

    def get_definition(self, portal_id: int, id: int) -> Definition | None:
        found = self.list_definitions(portal_id, ids=[id], with_translations=True)
        return found[0] if found else None

    def list_definitions(
        self,
        portal_id: int,
        *,
        business_unit_id: int | None = None,
        active_only: bool = False,
        with_translations: bool = False,
        ids: Sequence[int] | None = None,
    ) -> list[Definition]:
        d = subscription_definition
        query = _SELECT_DEFINITIONS
        if business_unit_id is not None:
            query = query.where(d.c.business_unit_id == business_unit_id)
        if active_only:
            query = query.where(d.c.is_active.is_(True))
        if ids is not None:
            query = query.where(d.c.id.in_(ids))
        rows = self.conn.execute(query, {"portal_id": portal_id}).all()
        translations: dict[int, list[Translation]] = {}
        if with_translations and rows:
            t = definition_translation
            tquery = (
                select(t)
                .where(t.c.portal_id == portal_id, t.c.subscription_id.in_([r.id for r in rows]))
                .order_by(t.c.language_code)
            )
            for tr in self.conn.execute(tquery):
                translations.setdefault(tr.subscription_id, []).append(
                    Translation(tr.language_code, tr.name, tr.description, tr.created_at, tr.updated_at)
                )
        return [_definition(r, tuple(translations.get(r.id, ()))) for r in rows]

    def upsert_translation(
        self, portal_id: int, subscription_id: int, language_code: str, name: str, description: str, now: int
    ) -> None:
        t = definition_translation
        stmt = self._insert(t).values(
            portal_id=portal_id,
            subscription_id=subscription_id,
            language_code=language_code,
            name=name,
            description=description,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.portal_id, t.c.subscription_id, t.c.language_code],
            set_={"name": name, "description": description, "updated_at": now},
        )
        self.conn.execute(stmt)

    def delete_translation(self, portal_id: int, subscription_id: int, language_code: str) -> None:
        t = definition_translation
        self.conn.execute(
            delete(t).where(
                t.c.portal_id == portal_id,
                t.c.subscription_id == subscription_id,
                t.c.language_code == language_code,
            )
        )

    # -- tokens ---------------------------------------------------------------------------

    def insert_token(
        self, id: str, portal_id: int, name: str, secret_sha256: str, scopes: Iterable[Scope], now: int
    ) -> None:
        self.conn.execute(
            token.insert().values(
                id=id,
                portal_id=portal_id,
                name=name,
                secret_sha256=secret_sha256,
                scopes=" ".join(sorted(scopes)),
                created_at=now,
            )
        )

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        row = self.conn.execute(
            select(token.c.id, token.c.name, token.c.portal_id, token.c.scopes).where(
                token.c.secret_sha256 == secret_sha256, token.c.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        return TokenInfo(row.id, row.name, row.portal_id, frozenset(Scope(s) for s in row.scopes.split()))

    def list_tokens(self, portal_id: int) -> list[Row[Any]]:
        query = (
            select(
                token.c.id, token.c.name, token.c.scopes, token.c.created_at, token.c.last_used_at, token.c.revoked_at
            )
            .where(token.c.portal_id == portal_id)
            .order_by(token.c.created_at, token.c.id)
        )
        return list(self.conn.execute(query))

    def revoke_token(self, token_id: str, now: int) -> bool:
        result = self.conn.execute(
            update(token).where(token.c.id == token_id, token.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        return result.rowcount > 0

    def touch_token(self, token_id: str, now: int) -> None:
        self.conn.execute(update(token).where(token.c.id == token_id).values(last_used_at=now))

    # -- statuses -------------------------------------------------------------------------

    def preload_subscribers(self, portal_id: int, channel: str, addresses: Iterable[str]) -> None:
        """Load these subscribers in one statement, for the work of this transaction to share: the readers and
        the writer run a group's single-subscriber work after one load of all of them (store/groups.py).

        The subscribers are shared as they are, and every later load of this Tx returns the same objects (those
        it loads anew join them): a change the rules plan on one, in memory, is what the next work of the
        group sees, as it would read it back once written."""
        current = self.portal_snapshot(portal_id)[0]
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
        self.write_statuses(list(self._deferred_statuses.values()))
        self.write_wide_statuses(list(self._deferred_wide.values()))
        self.append_events(self._deferred_events)
        self._deferred_statuses, self._deferred_wide, self._deferred_events = {}, {}, []

    def get_subscriber(self, portal_id: int, address: str, channel: str) -> Subscriber:
        return self.get_subscribers(portal_id, [address], channel)[address]

    def get_subscribers(
        self, portal_id: int, addresses: Iterable[str], channel: str, erasure_salt: str | None = None
    ) -> dict[str, Subscriber]:
        """Every recorded row for these addresses, in one statement whatever their number.

        The wide query also looks for each address's tombstone: an erased address reads as opted
        out of all, portal-wide (unless a new consent has since been recorded)."""
        found = {address: Subscriber(address) for address in addresses}
        if not found:
            return found
        if erasure_salt is None:
            current = self.portal_snapshot(portal_id)[0]
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
            subscriber = found[address]
            subscriber.erased_at = erased_at
            subscriber.wide.setdefault(
                (WideScope.PORTAL_WIDE, 0),
                WideStatus(WideScope.PORTAL_WIDE, 0, Status.UNSUBSCRIBED, Source.ERASURE.value, erased_at),
            )
        return found

    def write_statuses(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert subscription_status rows (full column dicts) in one set-based statement."""
        if self._deferring:
            for row in rows:
                key = (row["portal_id"], row["subscriber"], row["channel"], row["subscription_id"])
                self._deferred_statuses[key] = row
        elif rows:
            self._upsert(subscription_status, rows, ["portal_id", "subscriber", "channel", "subscription_id"])

    def write_wide_statuses(self, rows: Sequence[dict[str, Any]]) -> None:
        if self._deferring:
            for row in rows:
                key = (row["portal_id"], row["subscriber"], row["channel"], row["scope"], row["business_unit_id"])
                self._deferred_wide[key] = row
        elif rows:
            self._upsert(wide_status, rows, ["portal_id", "subscriber", "channel", "scope", "business_unit_id"])

    # -- imports -------------------------------------------------------------------------------

    def insert_import(self, values: dict[str, Any]) -> None:
        self.conn.execute(import_job.insert().values(**values))

    def update_import(self, portal_id: int, import_id: str, **values: Any) -> None:
        j = import_job.c
        self.conn.execute(update(import_job).where(j.portal_id == portal_id, j.id == import_id).values(**values))

    def get_import(self, portal_id: int, import_id: str) -> Row[Any] | None:
        j = import_job.c
        return self.conn.execute(select(import_job).where(j.portal_id == portal_id, j.id == import_id)).first()

    def list_imports(self, portal_id: int, limit: int) -> list[Row[Any]]:
        j = import_job.c
        query = select(import_job).where(j.portal_id == portal_id).order_by(j.created_at.desc(), j.id).limit(limit)
        return list(self.conn.execute(query))

    def add_rejects(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(import_reject.insert(), list(rows))

    def stream_rejects(self, portal_id: int, import_id: str) -> Iterator[Row[Any]]:
        r = import_reject.c
        query = select(import_reject).where(r.portal_id == portal_id, r.import_id == import_id).order_by(r.line)
        yield from self.conn.execution_options(yield_per=STREAM_ROWS).execute(query)

    def rejects_of(self, portal_id: int, address: str) -> list[Row[Any]]:
        r = import_reject.c
        query = select(import_reject).where(r.portal_id == portal_id, r.email == address).order_by(r.import_id, r.line)
        return list(self.conn.execute(query))

    def refresh_statistics(self) -> None:
        """PostgreSQL: ANALYZE the status tables, so that the planner keeps using their keys for a
        batch's address lookups while a bulk import grows them (a table without statistics gets a
        plan that reads the whole portal). SQLite's plans use the primary key regardless."""
        if self._dialect == "postgresql":
            self.conn.exec_driver_sql("ANALYZE subscription_status, wide_status")

    # -- exports -----------------------------------------------------------------------------

    def export_chunks(self, rows: ExportRows) -> Iterator[list[tuple[Any, ...]]]:
        """A portal's stored statuses, then its opt-outs from all (without erased addresses' tombstones; for one
        brand, its own and the portal-wide ones), each in address order, as the driver's tuples in the export's
        columns, a few thousand a chunk. Names, brands and ISO times come from the database: an export makes no
        Python object per row (a server-side cursor on PostgreSQL)."""
        queries = self._export_queries(rows)
        for n, query in enumerate(queries):
            compiled = query.compile(dialect=self.conn.dialect, compile_kwargs={"render_postcompile": True})
            params = compiled.positiontup and [compiled.params[name] for name in compiled.positiontup]
            # A named cursor is PostgreSQL's server-side cursor: rows cross the network a chunk at a time.
            with self._driver_cursor(f"export_{n}" if self._dialect == "postgresql" else None) as cursor:
                cursor.execute(str(compiled), params or compiled.params)
                while chunk := cursor.fetchmany(STREAM_ROWS):
                    yield list(chunk)

    @property
    def writes_csv(self) -> bool:
        """Whether the database writes an export's CSV itself (`export_csv`): PostgreSQL's COPY TO."""
        return self._dialect == "postgresql"

    def export_csv(self, rows: ExportRows, header: Sequence[str]) -> Iterator[bytes]:
        """`export_chunks`' rows as CSV written by PostgreSQL (COPY ... TO STDOUT), under `header`, in chunks.
        Empty texts leave as NULLs do (an empty field), so the bytes are those of Python's csv module."""
        queries = self._export_queries(rows, header)
        for n, query in enumerate(queries):
            sql = query.compile(dialect=self.conn.dialect, compile_kwargs={"literal_binds": True})
            options = "FORMAT csv, HEADER" if n == 0 else "FORMAT csv"
            chunk: list[bytes] = []
            # COPY takes no bind parameters: the values are in the SQL, and the percent signs the compiler
            # doubled for the driver's parameter style (%%) are single again, as the driver would make them.
            statement = f"COPY ({str(sql) % ()}) TO STDOUT WITH ({options})"
            with self._driver_cursor() as cursor, cursor.copy(statement) as copy:
                for data in copy:
                    chunk.append(bytes(data))
                    if len(chunk) >= STREAM_ROWS:
                        yield b"".join(chunk)
                        chunk.clear()
            yield b"".join(chunk)

    def _export_queries(self, rows: ExportRows, labels: Sequence[str] | None = None) -> tuple[Any, Any]:
        """The statuses' query and the opt-outs' query of an export; with `labels`, their columns so named and
        empty texts as NULL (for COPY's CSV)."""
        portal_id, channel = rows.portal_id, rows.channel

        def columns(*values: Any) -> list[Any]:
            if labels is None:
                return list(values)
            # COPY writes an empty text quoted ("") and a NULL as nothing; Python's csv writes both as nothing.
            texts = [func.nullif(v, "") if isinstance(v.type, String) else v for v in values]
            return [v.label(name) for v, name in zip(texts, labels, strict=True)]

        statuses = (
            select(
                *columns(
                    _s.subscriber,
                    literal(rows.subscription_scope, String),
                    _d.business_unit_id,
                    _s.subscription_id,
                    _d.name,
                    _s.status,
                    _s.legal_basis,
                    _s.legal_basis_explanation,
                    self._iso_sql(_s.updated_at),
                    _s.source,
                )
            )
            .select_from(
                subscription_status.outerjoin(
                    subscription_definition, and_(_d.portal_id == _s.portal_id, _d.id == _s.subscription_id)
                )
            )
            .where(_s.portal_id == portal_id, _s.channel == channel)
            .order_by(_s.portal_id, _s.subscriber, _s.channel, _s.subscription_id)
        )
        if rows.subscription_ids is not None:
            statuses = statuses.where(_s.subscription_id.in_(list(rows.subscription_ids)))
        if rows.suppressed_only:
            statuses = statuses.where(_s.status == Status.UNSUBSCRIBED.value)
        brand_wide = _w.scope == WideScope.BUSINESS_UNIT_WIDE.value
        wide = (
            select(
                *columns(
                    _w.subscriber,
                    _w.scope,
                    case((brand_wide, _w.business_unit_id), else_=None),
                    null(),
                    null(),
                    _w.status,
                    null(),
                    null(),
                    self._iso_sql(_w.updated_at),
                    _w.source,
                )
            )
            .where(_w.portal_id == portal_id, _w.channel == channel, ~_w.subscriber.startswith(TOMBSTONE_PREFIX))
            .order_by(_w.portal_id, _w.subscriber, _w.channel, _w.scope, _w.business_unit_id)
        )
        unit = rows.business_unit_id
        if unit is not None:
            wide = wide.where(
                or_(_w.scope == WideScope.PORTAL_WIDE.value, and_(brand_wide, _w.business_unit_id == unit))
            )
        if rows.suppressed_only:
            wide = wide.where(_w.status == Status.UNSUBSCRIBED.value)
        return statuses, wide

    def _iso_sql(self, column: Any) -> Any:
        """`clock.iso` of a millisecond column, in SQL: 2026-03-01T12:00:00.250Z."""
        if self._dialect == "sqlite":
            return func.strftime("%Y-%m-%dT%H:%M:%S", column // 1000, "unixepoch").concat(
                func.printf(".%03dZ", column % 1000)
            )
        seconds = func.to_char(func.timezone("UTC", func.to_timestamp(column // 1000)), 'YYYY-MM-DD"T"HH24:MI:SS')
        return seconds.concat(".").concat(func.lpad(cast(column % 1000, Text), 3, "0")).concat("Z")

    # -- erasure -----------------------------------------------------------------------------

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

    def append_events(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append consent events in order, in one set-based statement (COPY, for many on PostgreSQL)."""
        if self._deferring:
            self._deferred_events.extend(rows)
        elif self._dialect == "postgresql" and len(rows) >= COPY_ROWS:
            with self._driver_cursor() as cursor:
                self._copy(cursor, consent_event.name, list(rows[0]), rows)
        elif rows:
            self._write_many(_INSERT_EVENT, rows)

    def _driver_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of `sql` run on the driver's own cursor, inside this transaction: for the statements
        every request runs, where SQLAlchemy's result machinery costs more than the query."""
        with self._driver_cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _driver_cursor(self, name: str | None = None) -> Any:
        """A cursor of the driver's connection under this transaction, closed after the block; `name` makes it
        a server-side cursor (PostgreSQL)."""
        driver: Any = self.conn.connection.dbapi_connection
        return contextlib.closing(driver.cursor() if name is None else driver.cursor(name=name))

    def _upsert(self, table: Any, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE every other column, for many rows at once."""
        if self._dialect == "postgresql" and len(rows) >= COPY_ROWS:
            self._copy_merge(table, rows, keys)
            return
        cache_key = (self._dialect, table.name)
        statement = Tx._upserts.get(cache_key)
        if statement is None:
            insert = self._insert(table)
            updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in keys}
            statement = Tx._upserts[cache_key] = insert.on_conflict_do_update(index_elements=keys, set_=updates)
        self._write_many(statement, rows)

    def _copy(self, cursor: Any, table_name: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        """PostgreSQL's COPY of `rows` into `table_name`: the bulk path, no statement per row."""
        with cursor.copy(f"COPY {table_name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])

    def _copy_merge(self, table: Any, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
        """Many upserts on PostgreSQL: COPY into this session's staging table, then one INSERT ... SELECT ...
        ON CONFLICT DO UPDATE from it (a multi-row INSERT's parameters cost a round of conversions per value)."""
        columns = list(rows[0])
        stage = f"stage_{table.name}"
        staged: set[str] = self.conn.connection.info.setdefault("staging_tables", set())
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
        listed = ", ".join(columns)
        with self._driver_cursor() as cursor:
            if stage not in staged:
                cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS")
                staged.add(stage)
            self._copy(cursor, stage, columns, rows)
            cursor.execute(
                f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {stage} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
            )
            cursor.execute(f"TRUNCATE {stage}")

    def _write_many(self, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
        """Run an INSERT or upsert for `rows` (same keys in each) on the driver's cursor: every write
        runs these, and SQLAlchemy's per-execution work cost more than SQLite took to do them. The
        statement is compiled once per dialect and set of columns; a statement whose columns need
        SQLAlchemy's value processing goes through SQLAlchemy as before."""
        if self._dialect != "sqlite" and len(rows) > 1:
            # PostgreSQL: SQLAlchemy sends many rows as one multi-row INSERT, fewer round trips.
            self.conn.execute(statement, list(rows))
            return
        columns = tuple(rows[0])
        cache_key = (statement, self._dialect, columns)
        compiled = Tx._compiled.get(cache_key)
        if compiled is None:
            compiled = statement.compile(dialect=self.conn.dialect, column_keys=list(columns))
            Tx._compiled[cache_key] = compiled
        if getattr(compiled, "_bind_processors", True):  # values to convert (or a SQLAlchemy without this)
            self.conn.execute(statement, list(rows))
            return
        if compiled.positional:
            order = compiled.positiontup
            params: list[Any] = [tuple(row[k] for k in order) for row in rows]
        else:
            params = list(rows)
        with self._driver_cursor() as cursor:
            if len(params) == 1:  # psycopg's executemany sets up a pipeline: for one row, half a write's time
                cursor.execute(compiled.string, params[0])
            else:
                cursor.executemany(compiled.string, params)

    # -- idempotency keys -------------------------------------------------------------------

    def get_idempotent(self, portal_id: int, key: str) -> Row[Any] | None:
        k = idempotency_key
        return self.conn.execute(select(k).where(k.c.portal_id == portal_id, k.c.key == key)).first()

    def save_idempotent(
        self, portal_id: int, key: str, fingerprint: str, status_code: int, body: bytes, now: int
    ) -> None:
        self._upsert(
            idempotency_key,
            [
                {
                    "portal_id": portal_id,
                    "key": key,
                    "fingerprint": fingerprint,
                    "status_code": status_code,
                    "body": body,
                    "created_at": now,
                }
            ],
            ["portal_id", "key"],
        )

    def purge_idempotent(self, before: int) -> int:
        return self.conn.execute(delete(idempotency_key).where(idempotency_key.c.created_at < before)).rowcount

    def list_events(self, portal_id: int, address: str | None = None) -> list[Row[Any]]:
        e = consent_event
        conditions = [e.c.portal_id == portal_id]
        if address is not None:
            conditions.append(e.c.subscriber == address)
        return list(self.conn.execute(select(e).where(and_(*conditions)).order_by(e.c.id)))

    def webhook_backlog(self, cap: int) -> int:
        """Events after each enabled endpoint's position (at most `cap` each), summed over endpoints:
        the webhook backlog /metrics reports, for every portal."""
        w, e = webhook_endpoint.c, consent_event.c
        total = 0
        for endpoint in self.conn.execute(select(w.portal_id, w.cursor_txid, w.cursor_id).where(w.enabled.is_(True))):
            pending = (
                select(e.id)
                .where(e.portal_id == endpoint.portal_id, _after(endpoint.cursor_txid, endpoint.cursor_id))
                .limit(cap)
                .subquery()
            )
            total += self.conn.execute(select(func.count()).select_from(pending)).scalar_one()
        return total

    # -- the change feed and history ---------------------------------------------------------------

    def _final(self) -> Any:
        """Rows whose writing transaction is older than every running one: nothing can commit before
        them any more (PostgreSQL). SQLite's writes take turns, so every committed row is final."""
        if self.conn.dialect.name == "postgresql":
            return consent_event.c.txid < literal_column("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        return literal_column("1") == 1

    def feed(self, portal_id: int, after: tuple[int, int], limit: int) -> list[Row[Any]]:
        """The portal's events after `after` = (txid, id), in feed order, final rows only."""
        e = consent_event.c
        txid, event_id = after
        query = (
            select(consent_event)
            .where(
                e.portal_id == portal_id,
                _after(txid, event_id),
                self._final(),
            )
            .order_by(e.txid, e.id)
            .limit(limit)
        )
        return list(self.conn.execute(query))

    def feed_head(self, portal_id: int) -> tuple[int, int]:
        """The feed position of the portal's last final event."""
        e = consent_event.c
        query = (
            select(e.txid, e.id)
            .where(e.portal_id == portal_id, self._final())
            .order_by(e.txid.desc(), e.id.desc())
            .limit(1)
        )
        row = self.conn.execute(query).first()
        return (row.txid, row.id) if row else (0, 0)

    def feed_position_before(self, portal_id: int, occurred_from: int) -> tuple[int, int]:
        """A position just before the first event (in feed order) that occurred at or after the time:
        reading on from it yields every such event (and maybe a few older ones), never fewer."""
        e = consent_event.c
        query = (
            select(e.txid, e.id)
            .where(e.portal_id == portal_id, e.occurred_at >= occurred_from)
            .order_by(e.txid, e.id)
            .limit(1)
        )
        row = self.conn.execute(query).first()
        return (row.txid, row.id - 1) if row else self.feed_head(portal_id)

    def history(self, portal_id: int, address: str, before_id: int | None, limit: int) -> list[Row[Any]]:
        """One subscriber's events, newest first."""
        e = consent_event.c
        conditions = [e.portal_id == portal_id, e.subscriber == address]
        if before_id is not None:
            conditions.append(e.id < before_id)
        return list(self.conn.execute(select(consent_event).where(*conditions).order_by(e.id.desc()).limit(limit)))

    def token_names(self, portal_id: int) -> dict[str, str]:
        return {
            r.id: r.name
            for r in self.conn.execute(select(token.c.id, token.c.name).where(token.c.portal_id == portal_id))
        }

    # -- webhook endpoints ----------------------------------------------------------------------

    def insert_endpoint(self, values: dict[str, Any]) -> None:
        self.conn.execute(webhook_endpoint.insert().values(**values))

    def list_endpoints(self, portal_id: int) -> list[Row[Any]]:
        w = webhook_endpoint.c
        return list(
            self.conn.execute(select(webhook_endpoint).where(w.portal_id == portal_id).order_by(w.created_at, w.id))
        )

    def get_endpoint(self, portal_id: int, endpoint_id: str) -> Row[Any] | None:
        w = webhook_endpoint.c
        return self.conn.execute(select(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id)).first()

    def update_endpoint(self, portal_id: int, endpoint_id: str, **values: Any) -> None:
        w = webhook_endpoint.c
        self.conn.execute(
            update(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id).values(**values)
        )

    def delete_endpoint(self, portal_id: int, endpoint_id: str) -> bool:
        w = webhook_endpoint.c
        deleted = self.conn.execute(delete(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id))
        self.conn.execute(
            delete(webhook_delivery).where(
                webhook_delivery.c.portal_id == portal_id, webhook_delivery.c.endpoint_id == endpoint_id
            )
        )
        return bool(deleted.rowcount)

    def _due_endpoints(self, now: int, limit: int) -> Any:
        """Enabled endpoints whose retry time has come, not leased, with an event to send."""
        w, e = webhook_endpoint.c, consent_event.c
        pending = (
            select(literal_column("1"))
            .where(
                e.portal_id == w.portal_id,
                _after(w.cursor_txid, w.cursor_id),
                self._final(),
            )
            .exists()
        )
        return (
            select(w.portal_id, w.id)
            .where(
                w.enabled.is_(True),
                w.next_attempt_at <= now,
                or_(w.lease_until.is_(None), w.lease_until < now),
                pending,
            )
            .order_by(w.next_attempt_at)
            .limit(limit)
        )

    def any_endpoint_due(self, now: int) -> bool:
        return self.conn.execute(self._due_endpoints(now, 1)).first() is not None

    def claim_endpoints(self, owner: str, now: int, lease_ms: int, limit: int) -> list[Row[Any]]:
        """Lease up to `limit` due endpoints; on PostgreSQL, rows another process is claiming at the
        same moment are skipped (FOR UPDATE SKIP LOCKED), so each endpoint has one sender."""
        w = webhook_endpoint.c
        due = self._due_endpoints(now, limit).with_for_update(skip_locked=True)
        rows = self.conn.execute(due).all()
        for row in rows:
            self.conn.execute(
                update(webhook_endpoint)
                .where(w.portal_id == row.portal_id, w.id == row.id)
                .values(lease_owner=owner, lease_until=now + lease_ms)
            )
        if not rows:
            return []
        keys = [(r.portal_id, r.id) for r in rows]
        claimed = self.conn.execute(
            select(webhook_endpoint).where(or_(*(and_(w.portal_id == p, w.id == i) for p, i in keys)))
        )
        return list(claimed)

    def add_deliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(webhook_delivery.insert(), list(rows))

    def list_deliveries(self, portal_id: int, endpoint_id: str, limit: int) -> list[Row[Any]]:
        d = webhook_delivery.c
        query = (
            select(webhook_delivery)
            .where(d.portal_id == portal_id, d.endpoint_id == endpoint_id)
            .order_by(d.id.desc())
            .limit(limit)
        )
        return list(self.conn.execute(query))


def _after(txid: Any, event_id: Any) -> Any:
    """Events after the feed position (txid, event_id), in the feed's (txid, id) order."""
    e = consent_event.c
    return or_(e.txid > txid, and_(e.txid == txid, e.id > event_id))


def _portal(row: Row[Any]) -> Portal:
    return Portal(
        id=row.id,
        name=row.name,
        gdpr_enabled=bool(row.gdpr_enabled),
        hubspot_strict=bool(row.hubspot_strict),
        default_language=row.default_language,
        public_base_url=row.public_base_url,
        signing_secret=row.signing_secret,
        erasure_salt=row.erasure_salt,
    )


def _definition(row: Row[Any], translations: tuple[Translation, ...]) -> Definition:
    return Definition(
        portal_id=row.portal_id,
        id=row.id,
        business_unit_id=row.business_unit_id,
        name=row.name,
        description=row.description,
        purpose=row.purpose,
        communication_method=row.communication_method,
        is_active=bool(row.is_active),
        is_default=bool(row.is_default),
        is_internal=bool(row.is_internal),
        created_at=row.created_at,
        updated_at=row.updated_at,
        translations=translations,
    )
