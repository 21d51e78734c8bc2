"""The writer: one thread that commits queued writes together (group commit).

Each queued write runs in its own SAVEPOINT inside the shared transaction, so a write the rules
refuse is rolled back alone. The transaction commits once for the whole group, and only then
is each caller answered: every acknowledged write is durable, at the cost of one fsync a group.
"""

from sqlalchemy import Connection, Engine

from commprefs.metrics import WRITE_GROUP_SIZE
from commprefs.store.cache import PortalCache
from commprefs.store.groups import GroupThreads, Job, Outcomes
from commprefs.store.repo import Tx

MAX_GROUP = 256


class Writer(GroupThreads):
    kind = "write"

    def __init__(self, engine: Engine, cache: PortalCache | None = None) -> None:
        self._cache = cache
        super().__init__(engine, threads=1, max_group=MAX_GROUP, name="commprefs-writer")

    def close(self) -> None:
        super().close()
        self._engine.dispose()

    def run_group(self, conn: Connection, group: list[Job]) -> Outcomes:
        outcomes: Outcomes = []
        tx = Tx(conn, self._cache)
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
        if self._cache is not None and tx.changed_portals:
            self._cache.invalidate(tx.changed_portals)
        return outcomes
