"""Threads that take every job queued meanwhile and run them as one group on a connection they hold: the
group-commit writer (store/writer.py) and the group readers (store/reader.py).

A caller queues its job and awaits a future; the thread answers all the callers of a group with one wake-up
of each event loop, not one each. A connection that fails fails its whole group and is opened again for
the next one.
"""

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from commprefs.store.tx import Tx

T = TypeVar("T")
log = logging.getLogger(__name__)

Job = tuple[Callable[[Tx], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
Outcomes = list[tuple[asyncio.AbstractEventLoop, Outcome]]


@dataclass(frozen=True, slots=True)
class SubscriberWork:
    """Work on one subscriber of one portal and channel, and nothing else of theirs: its statuses, opt-outs
    from all and consent events (a single-call read or status change). A group of such work shares one load
    of its subscribers (`preload`); the writer also writes their changes together (store/writer.py)."""

    work: Callable[[Tx], Any]
    portal_id: int
    channel: str
    address: str

    def __call__(self, tx: Tx) -> Any:
        return self.work(tx)


def preload(tx: Tx, group: list[Job]) -> None:
    """The subscribers of a group's SubscriberWork, loaded together (when there are two or more)."""
    wanted: dict[tuple[int, str], set[str]] = {}
    count = 0
    for work, _, _ in group:
        if isinstance(work, SubscriberWork):
            wanted.setdefault((work.portal_id, work.channel), set()).add(work.address)
            count += 1
    if count > 1:
        for (portal_id, channel), addresses in wanted.items():
            tx.statuses.preload_subscribers(portal_id, channel, addresses)


class GroupThreads:
    """`threads` threads sharing one queue; each runs the jobs it drains (up to `max_group`) with `run_group`."""

    kind = "job"

    def __init__(self, engine: Engine, *, threads: int, max_group: int, name: str) -> None:
        self._engine = engine
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=name if threads == 1 else f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in the next group and return its result once the group is done."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, loop, future))
        return await future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def connect(self) -> Connection:
        """The connection a thread holds (opened again after a failure)."""
        return self._engine.connect()

    def run_group(self, conn: Connection, group: list[Job]) -> Outcomes:
        raise NotImplementedError

    def _run(self) -> None:
        conn: Connection | None = None
        while True:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            stop = False
            while len(group) < self._max_group:
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
                    conn = self.connect()
                outcomes = self.run_group(conn, group)
            except Exception as exc:  # the database itself failed: every caller in the group learns it
                log.warning("%s group of %d failed: %s", self.kind, len(group), type(exc).__name__)
                if conn is not None:
                    try:
                        conn.invalidate()
                        conn.close()
                    except Exception:
                        pass
                    conn = None
                outcomes = [(loop, (future, None, exc)) for _, loop, future in group]
            answer(outcomes)
            if stop:
                break
        if conn is not None:
            conn.close()


def answer(outcomes: Outcomes) -> None:
    """Settle each caller's future on its own event loop, with one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for loop, outcome in outcomes:
        by_loop.setdefault(loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller went away (cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
