"""The tenancy service face: portals, brands, subscription definitions and API tokens, as the admin API and
the CLI set them up, and the token lookups behind every API call."""

from collections.abc import Iterable
from typing import Any

from commprefs.clock import now_ms
from commprefs.domain.enums import Scope
from commprefs.domain.errors import NotFound
from commprefs.domain.model import BusinessUnit, Definition, Portal, TokenInfo
from commprefs.store import Store
from commprefs.tenancy import setup


class Tenancy:
    """Each method one transaction of the store; changes go through the writer."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- portals ----------------------------------------------------------------------------------------

    async def portal(self, portal_id: int) -> Portal | None:
        """The portal, from the per-process cache when fresh (the contact's pages ask on every request)."""
        return (await self._store.aread(lambda tx: tx.portals.portal_snapshot(portal_id)))[0]

    async def require_portal(self, portal_id: int) -> Portal:
        return await self._store.aread(lambda tx: setup.require_portal(tx, portal_id))

    async def portals(self) -> list[Portal]:
        return await self._store.aread(lambda tx: tx.portals.list_portals())

    async def ready(self) -> bool:
        """Whether the database answers (raises when it does not)."""
        await self._store.aread(lambda tx: tx.portals.count_portals())
        return True

    async def create_portal(self, name: str, *, gdpr_enabled: bool, with_defaults: bool = True) -> Portal:
        return await self._store.write(
            lambda tx: setup.create_portal(
                tx, name, gdpr_enabled=gdpr_enabled, now=now_ms(), with_defaults=with_defaults
            )
        )

    async def update_portal(self, portal_id: int, **settings: Any) -> Portal:
        """Change the settings given (name, gdpr_enabled, hubspot_strict, default_language, public_base_url)."""
        return await self._store.write(lambda tx: setup.update_portal(tx, portal_id, **settings))

    async def rotate_link_secret(self, portal_id: int) -> Portal:
        return await self._store.write(lambda tx: setup.rotate_signing_secret(tx, portal_id))

    async def create_demo(
        self, definitions: Iterable[tuple[str, str, Iterable[tuple[str, str, str]]]]
    ) -> tuple[Portal, str]:
        """The demo portal of a first `serve` on an empty database, with these definitions and a token holding
        every scope: the portal and the token's secret. None when the database already has a portal."""

        def create(tx: Any) -> tuple[Portal, str]:
            now = now_ms()
            portal = setup.create_portal(tx, "Demo portal", gdpr_enabled=False, now=now)
            for order, (name, description, translations) in enumerate(definitions, start=10):
                setup.create_definition(tx, portal.id, name, description, now=now + order, translations=translations)
            _, secret = setup.create_token(tx, portal.id, list(Scope), "demo", now)
            return portal, secret

        return await self._store.write(create)

    async def is_empty(self) -> bool:
        return await self._store.aread(lambda tx: tx.portals.count_portals() == 0)

    # -- brands -----------------------------------------------------------------------------------------

    async def business_units(self, portal_id: int) -> list[BusinessUnit]:
        return await self._store.aread(lambda tx: tx.portals.list_business_units(portal_id))

    async def create_business_unit(self, portal_id: int, name: str) -> BusinessUnit:
        return await self._store.write(lambda tx: setup.create_business_unit(tx, portal_id, name, now_ms()))

    async def rename_business_unit(self, portal_id: int, unit_id: int, name: str) -> BusinessUnit:
        return await self._store.write(lambda tx: setup.rename_business_unit(tx, portal_id, unit_id, name))

    # -- definitions ------------------------------------------------------------------------------------

    async def definitions(
        self, portal_id: int, *, business_unit_id: int | None = None, with_translations: bool = False
    ) -> list[Definition]:
        return await self._store.aread(
            lambda tx: tx.portals.list_definitions(
                portal_id, business_unit_id=business_unit_id, with_translations=with_translations
            )
        )

    async def definition(self, portal_id: int, definition_id: int) -> Definition:
        found = await self._store.aread(lambda tx: tx.portals.get_definition(portal_id, definition_id))
        if found is None:
            raise NotFound(f"subscription {definition_id} does not exist", field="subscriptionId")
        return found

    async def create_definition(self, portal_id: int, name: str, description: str, **options: Any) -> Definition:
        """A new definition; `options` as `setup.create_definition` takes them (purpose, business_unit_id, ...)."""
        return await self._store.write(
            lambda tx: setup.create_definition(tx, portal_id, name, description, now=now_ms(), **options)
        )

    async def update_definition(self, portal_id: int, definition_id: int, **changes: Any) -> Definition:
        return await self._store.write(
            lambda tx: setup.update_definition(tx, portal_id, definition_id, now=now_ms(), **changes)
        )

    async def remove_translation(self, portal_id: int, definition_id: int, language: str) -> Definition:
        return await self._store.write(
            lambda tx: setup.remove_translation(tx, portal_id, definition_id, language, now_ms())
        )

    # -- tokens -----------------------------------------------------------------------------------------

    async def create_token(self, portal_id: int, scopes: Iterable[Scope], name: str) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once; only its hash is stored)."""
        return await self._store.write(lambda tx: setup.create_token(tx, portal_id, scopes, name, now_ms()))

    async def tokens(self, portal_id: int) -> list[Any]:
        return await self._store.aread(lambda tx: tx.tokens.list_tokens(portal_id))

    async def revoke_token(self, token_id: str) -> bool:
        return await self._store.write(lambda tx: tx.tokens.revoke_token(token_id, now_ms()))

    async def find_token(self, digest: str) -> TokenInfo | None:
        """The live token whose secret hashes to `digest` (`hash_token`): callers keep the hash, not the secret."""
        return await self._store.aread(lambda tx: tx.tokens.find_token(digest))

    async def touch_token(self, token_id: str, now: int) -> None:
        await self._store.write(lambda tx: tx.tokens.touch_token(token_id, now))
