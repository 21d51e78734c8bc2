"""Storage: one schema (SQLAlchemy Core) on SQLite or PostgreSQL, Alembic migrations, the writer."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine

from commprefs.store.cache import PortalCache
from commprefs.store.checkpoint import Checkpointer
from commprefs.store.engine import make_engine
from commprefs.store.groups import SubscriberWork
from commprefs.store.migrate import migrate
from commprefs.store.reader import Reader
from commprefs.store.tx import Tx
from commprefs.store.writer import Writer

T = TypeVar("T")
# Reader threads (store/reader.py), each answering the reads queued meanwhile together. Their Python work
# holds the GIL, so more threads only contend for it with the event loop: on PostgreSQL, where a group's
# single-subscriber reads share one statement, 2 threads served 6,200-8,100 v4 reads a second, 4 threads
# 4,300-5,700. One thread did as well, but would leave every read waiting behind a batch read of a thousand.
READ_THREADS = {"sqlite": 2, "postgresql": 2}

__all__ = ["Store", "Tx"]


class Store:
    """Reads on pooled connections in worker threads; writes through the group-commit writer."""

    def __init__(self, url: str, cache_seconds: float = 0.0) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.cache = PortalCache(cache_seconds)
        self._writer: Writer | None = None
        self._sync_writer_engine: Engine | None = None
        self._reader: Reader | None = None
        self._checkpointer: Checkpointer | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        migrate(self.engine)

    def read(self, work: Callable[[Tx], T]) -> T:
        with self.engine.connect() as conn, conn.begin():
            return work(Tx(conn, self.cache))

    async def aread(self, work: Callable[[Tx], T], *, subscriber: tuple[int, str, str] | None = None) -> T:
        """`work` in a read transaction, grouped with the reads queued meanwhile (store/reader.py). A read of one
        subscriber's rows names it, `(portal id, channel, address)`: the group loads all such together."""
        if self._reader is None:
            self._reader = Reader(self.engine, self.cache, READ_THREADS.get(self.dialect, 4))
        return await self._reader.submit(_marked(work, subscriber))

    @contextmanager
    def snapshot(self) -> Iterator[Tx]:
        """A long read that sees one consistent state (REPEATABLE READ on PostgreSQL; SQLite's read
        transactions are snapshots already), for exports that stream many statements' rows."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield Tx(conn, self.cache)

    async def write(self, work: Callable[[Tx], T], *, subscriber: tuple[int, str, str] | None = None) -> T:
        """`work` in the next group commit (store/writer.py). A status change of one subscriber names it,
        `(portal id, channel, address)`: the writer loads and writes all such changes of a group together."""
        if self._writer is None:
            database = self.engine.url.database if self.dialect == "sqlite" else None
            on_file = database not in (None, "", ":memory:")
            engine = make_engine(self.url, writer=True, pool_size=1, autocheckpoint=not on_file)
            self._writer = Writer(engine, self.cache)
            if on_file:
                self._checkpointer = Checkpointer(str(database))
        return await self._writer.submit(_marked(work, subscriber))

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One synchronous transaction, for the CLI and tests (not the request path)."""
        if self._sync_writer_engine is None:
            self._sync_writer_engine = make_engine(self.url, writer=True, pool_size=1)
        with self._sync_writer_engine.connect() as conn:
            tx = Tx(conn, self.cache)
            with conn.begin():
                yield tx
            self.cache.invalidate(tx.changed_portals)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._sync_writer_engine is not None:
            self._sync_writer_engine.dispose()
        self.engine.dispose()


def _marked(work: Callable[[Tx], T], subscriber: tuple[int, str, str] | None) -> Callable[[Tx], T]:
    if subscriber is None:
        return work
    portal_id, channel, address = subscriber
    return SubscriberWork(work, portal_id, str(channel), address)
