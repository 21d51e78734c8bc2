"""The webhooks service face: endpoints as the admin API and the CLI manage them, and their delivery log."""

from collections.abc import Iterable
from typing import Any

from commprefs.clock import now_ms
from commprefs.store import Store
from commprefs.webhooks import endpoints


class Webhooks:
    """Each method one transaction of the store. The sender (webhooks/sender.py) runs beside the app."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def create_endpoint(
        self, portal_id: int, url: str, *, events: Iterable[str] = (), description: str = "", allow_private: bool
    ) -> tuple[Any, str]:
        """A new endpoint, sent every change committed from now on, and its secret (shown once)."""
        return await self._store.write(
            lambda tx: endpoints.create_endpoint(
                tx, portal_id, url, events=events, description=description, now=now_ms(), allow_private=allow_private
            )
        )

    async def endpoints(self, portal_id: int) -> list[Any]:
        return await self._store.aread(lambda tx: tx.webhooks.list_endpoints(portal_id))

    async def endpoint(self, portal_id: int, endpoint_id: str) -> Any:
        return await self._store.aread(lambda tx: endpoints.require_endpoint(tx, portal_id, endpoint_id))

    async def update_endpoint(self, portal_id: int, endpoint_id: str, *, allow_private: bool, **changes: Any) -> Any:
        """Change url, events, description or enabled (re-enabling resumes where it failed)."""
        return await self._store.write(
            lambda tx: endpoints.update_endpoint(
                tx, portal_id, endpoint_id, now=now_ms(), allow_private=allow_private, **changes
            )
        )

    async def delete_endpoint(self, portal_id: int, endpoint_id: str) -> None:
        await self._store.write(lambda tx: endpoints.delete_endpoint(tx, portal_id, endpoint_id))

    async def deliveries(self, portal_id: int, endpoint_id: str, limit: int) -> tuple[Any, list[Any]]:
        """The endpoint and its delivery attempts, newest first."""

        def read(tx: Any) -> tuple[Any, list[Any]]:
            endpoint = endpoints.require_endpoint(tx, portal_id, endpoint_id)
            return endpoint, tx.webhooks.list_deliveries(portal_id, endpoint_id, limit)

        return await self._store.aread(read)

    async def replay(self, portal_id: int, endpoint_id: str, since: int) -> Any:
        """Send again every event that occurred at or after `since` (ms), in order, with the same ids."""
        return await self._store.write(lambda tx: endpoints.replay(tx, portal_id, endpoint_id, since, now_ms()))
