"""The service faces over one store: what every adapter (the APIs, the contact's pages, the CLI) calls.

Adapters hold a `Services` (the app keeps one in `app.state.services`) and never the store itself.
"""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from commprefs.consent import Consent
from commprefs.store import Store
from commprefs.tenancy import Tenancy
from commprefs.transfer import Transfer
from commprefs.webhooks import Webhooks

T = TypeVar("T")


class Services:
    """One face per domain, sharing one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.consent = Consent(store)
        self.tenancy = Tenancy(store)
        self.webhooks = Webhooks(store)
        self.transfer = Transfer(store)

    @classmethod
    def open(cls, database_url: str, cache_seconds: float = 0.0, *, migrate: bool = False) -> "Services":
        store = Store(database_url, cache_seconds)
        if migrate:
            store.migrate()
        return cls(store)

    @property
    def dialect(self) -> str:
        """The database's kind: sqlite or postgresql."""
        return self.store.dialect

    def run(self, call: Callable[["Services"], Awaitable[T]]) -> T:
        """One call of a face from synchronous code (the CLI, the pytest plugin's fixtures):
        `services.run(lambda s: s.tenancy.portals())`. Called where an event loop is already running (a
        synchronous helper inside an async test), the call runs on a loop of its own in another thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_awaited(call(self)))
        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(lambda: asyncio.run(_awaited(call(self)))).result()

    def close(self) -> None:
        self.store.close()


async def _awaited(call: Awaitable[T]) -> T:
    return await call
