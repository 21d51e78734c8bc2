"""Helpers for the group threads' tests: a held group, and a Tx that counts its statements."""

import asyncio
from typing import Any

from commprefs.store import Tx
from commprefs.store.groups import GroupThreads


class CountingTx(Tx):
    """A Tx that counts the subscriber loads and the status writes it sends to the database."""

    loads = 0
    status_writes = 0

    def _driver_rows(self, sql: str, params: Any) -> Any:
        if "FROM subscription_status" in sql:
            CountingTx.loads += 1
        return super()._driver_rows(sql, params)

    def _upsert(self, table: Any, rows: Any, keys: list[str]) -> None:
        if table.name == "subscription_status":
            CountingTx.status_writes += 1
        super()._upsert(table, rows, keys)

    @classmethod
    def reset(cls) -> None:
        cls.loads = cls.status_writes = 0


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
