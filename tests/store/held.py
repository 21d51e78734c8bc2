"""Helpers for the group threads' tests: a held group, and a Tx that counts its statements."""

import asyncio
from functools import cached_property
from typing import Any

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import Source, Status
from commprefs.domain.model import Actor
from commprefs.store import Store, Tx
from commprefs.store.groups import GroupThreads, SubscriberWork
from commprefs.store.statuses import StatusRepository
from commprefs.tenancy.setup import create_portal


class CountingStatuses(StatusRepository):
    """The status repository, counting the subscriber loads and the status writes it sends to the database."""

    def _driver_rows(self, sql: str, params: Any) -> Any:
        if "FROM subscription_status" in sql:
            CountingTx.loads += 1
        return super()._driver_rows(sql, params)

    def _upsert(self, table: Any, rows: Any, keys: list[str]) -> None:
        if table.name == "subscription_status":
            CountingTx.status_writes += 1
        super()._upsert(table, rows, keys)


class CountingTx(Tx):
    """A Tx whose status repository counts its statements (`loads`, `status_writes`)."""

    loads = 0
    status_writes = 0

    @cached_property
    def statuses(self) -> StatusRepository:
        return CountingStatuses(self.conn, self.portals)

    @classmethod
    def reset(cls) -> None:
        cls.loads = cls.status_writes = 0


def run_grouped(threads: GroupThreads, jobs: list[Any]) -> list[Any]:
    """`jobs` run by `threads` as one group (`grouped`); the threads are closed after."""
    try:
        return asyncio.run(grouped(threads, jobs))
    finally:
        threads.close()


async def grouped(threads: GroupThreads, jobs: list[Any]) -> list[Any]:
    """`jobs` submitted while the (one) thread is held by a job before them, so that they run as one group;
    their results, or the exceptions they raised."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()

    def hold(_tx: Tx) -> None:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)

    holding = asyncio.ensure_future(threads.submit(hold))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(threads.submit(job)) for job in jobs]
    await asyncio.sleep(0.05)
    release.set()
    await holding
    return await asyncio.gather(*queued, return_exceptions=True)


def new_portal(url: str) -> tuple[Store, int, list[int]]:
    """A migrated store (with the portal cache on) holding a new portal; its id and its definitions' ids."""
    store = Store(url, cache_seconds=60)
    store.migrate()
    with store.transaction() as tx:
        portal = create_portal(tx, "held", gdpr_enabled=False, now=now_ms())
        return store, portal.id, [d.id for d in tx.portals.list_definitions(portal.id)]


def status_change(portal_id: int, address: str, subscription: int, state: Status) -> SubscriberWork:
    """A v4 status change of one address, as the API hands it to the writer; its answer is the new status."""
    request = consent.StatusInput(address, subscription, state)
    return SubscriberWork(
        lambda tx: consent.apply(tx, portal_id, Actor(Source.API), now_ms(), consent.set_status, request).status,
        portal_id,
        "EMAIL",
        address,
    )
