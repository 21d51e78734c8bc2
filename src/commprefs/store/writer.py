"""The writer: one thread that commits queued writes together (group commit).

Each queued write runs in its own SAVEPOINT inside the shared transaction, so a write the rules
refuse is rolled back alone. The transaction commits once for the whole group, and only then
is each caller answered: every acknowledged write is durable, at the cost of one fsync a group.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from commprefs.store.cache import PortalCache
from commprefs.store.repo import Tx

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_GROUP = 256

_Job = tuple[Callable[[Tx], Any], Future[Any]]


class Writer:
    def __init__(self, engine: Engine, cache: PortalCache | None = None) -> None:
        self._engine = engine
        self._cache = cache
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="commprefs-writer", daemon=True)
        self._thread.start()

    async def submit(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in the next group and return its result once the group has committed."""
        future: Future[T] = Future()
        self._queue.put((work, future))
        return await asyncio.wrap_future(future)

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
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            if stop:
                break
        if conn is not None:
            conn.close()

    @staticmethod
    def _commit_group(conn: Connection, group: list[_Job], cache: PortalCache | None) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        tx = Tx(conn, cache)
        with conn.begin():
            for work, future in group:
                savepoint = conn.begin_nested()
                try:
                    result = work(tx)
                except Exception as exc:
                    savepoint.rollback()
                    outcomes.append((future, None, exc))
                else:
                    savepoint.commit()
                    outcomes.append((future, result, None))
        if cache is not None and tx.changed_portals:
            cache.invalidate(tx.changed_portals)
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
