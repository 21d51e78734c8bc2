"""Portals, their brands, subscription definitions and their translations: a portal's set-up."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, select, update

from commprefs.domain.model import BusinessUnit, Definition, Portal, Translation
from commprefs.store.cache import PortalCache, Snapshot
from commprefs.store.schema import business_unit, definition_translation, portal, subscription_definition
from commprefs.store.sql import Repository

# Built once with bind parameters: every API call reads its portal (when not cached).
_d = subscription_definition.c
_SELECT_PORTAL = select(portal).where(portal.c.id == bindparam("portal_id"))
_SELECT_DEFINITIONS = (
    select(subscription_definition).where(_d.portal_id == bindparam("portal_id")).order_by(_d.created_at, _d.id)
)


class PortalRepository(Repository):
    """Portals, brands and definitions; a change drops the portal's cached snapshot (from `cache`, now and,
    through `changed`, the Tx's set of changed portals, again after commit)."""

    def __init__(self, conn: Connection, cache: PortalCache | None, changed: set[int]) -> None:
        super().__init__(conn)
        self.cache = cache
        self.changed = changed

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
        self.changed.add(portal_id)
        if self.cache is not None:
            self.cache.invalidate({portal_id})

    def portal_snapshot(self, portal_id: int) -> Snapshot:
        """The portal and its definitions (without translations), from the cache when fresh."""
        cache = self.cache if portal_id not in self.changed else None
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
