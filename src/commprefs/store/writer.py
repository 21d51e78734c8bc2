"""The writer: one thread that commits queued writes together (group commit).

Each queued write runs in its own SAVEPOINT inside the shared transaction, so a write the rules
refuse is rolled back alone. The transaction commits once for the whole group, and only then
is each caller answered: every acknowledged write is durable, at the cost of one fsync a group.
The callers of a group are answered with one wake-up of their event loop, not one each.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from commprefs.metrics import WRITE_GROUP_SIZE
from commprefs.store.cache import PortalCache
from commprefs.store.repo import Tx

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_GROUP = 256

_Job = tuple[Callable[[Tx], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Writer:
    def __init__(self, engine: Engine, cache: PortalCache | None = None) -> None:
        self._engine = engine
        self._cache = cache
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="commprefs-writer", daemon=True)
        self._thread.start()

    async def submit(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in the next group and return its result once the group has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, loop, future))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._engine.dispose()

    def _run(self) -> None:
        conn: Connection | None = None
        while True:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            stop = False
            while len(group) < MAX_GROUP:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                group.append(job)
            try:
                if conn is None or conn.closed or conn.invalidated:
                    conn = self._engine.connect()
                self._commit_group(conn, group, self._cache)
            except Exception as exc:  # the database itself failed: every caller in the group learns it
                log.warning("write group of %d failed: %s", len(group), type(exc).__name__)
                if conn is not None:
                    try:
                        conn.invalidate()
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                _answer([(loop, (future, None, exc)) for _, loop, future in group])
            if stop:
                break
        if conn is not None:
            conn.close()

    @staticmethod
    def _commit_group(conn: Connection, group: list[_Job], cache: PortalCache | None) -> None:
        outcomes: list[tuple[asyncio.AbstractEventLoop, _Outcome]] = []
        tx = Tx(conn, cache)
        with conn.begin():
            # Savepoints go straight to the driver: SQLAlchemy's nested transactions compile their
            # SAVEPOINT and RELEASE statements anew each time, which cost a third of a write's time.
            driver = conn.connection.dbapi_connection
            assert driver is not None
            for work, loop, future in group:
                driver.execute("SAVEPOINT job")
                try:
                    result = work(tx)
                except Exception as exc:
                    if conn.invalidated:
                        raise  # the connection died, not this write: the whole group fails with this error
                    driver.execute("ROLLBACK TO SAVEPOINT job")
                    driver.execute("RELEASE SAVEPOINT job")
                    outcomes.append((loop, (future, None, exc)))
                else:
                    driver.execute("RELEASE SAVEPOINT job")
                    outcomes.append((loop, (future, result, None)))
        WRITE_GROUP_SIZE.observe(len(group))
        if cache is not None and tx.changed_portals:
            cache.invalidate(tx.changed_portals)
        _answer(outcomes)


def _answer(outcomes: list[tuple[asyncio.AbstractEventLoop, _Outcome]]) -> None:
    """Settle each caller's future on its own event loop, with one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for loop, outcome in outcomes:
        by_loop.setdefault(loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller went away (cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
