"""The writer: one thread that commits queued writes together (group commit).

The queued writes run one after the other in one transaction, which commits once for the whole
group; only then is each caller answered: every acknowledged write is durable, at the cost of one
fsync a group. A write the rules refuse must roll back alone: when one is refused, the group is
rolled back and runs again with each write in its own SAVEPOINT (and so does the next group);
groups with no refusal, the usual case, pay for no savepoint.

A group made only of single-subscriber status changes (`SubscriberWork`, store/groups.py) is merged: its
subscribers are loaded by one statement, the changes are planned one after the other on those shared
subscribers, and their rows are written together at the end (one upsert of statuses, one of opt-outs, one
insert of events) instead of three statements a change. If anything fails, nothing of the merged run is kept:
the group runs again with savepoints, unmerged.
"""

from sqlalchemy import Connection, Engine

from commprefs.metrics import WRITE_GROUP_SIZE
from commprefs.store.cache import PortalCache
from commprefs.store.groups import GroupThreads, Job, Outcomes, SubscriberWork, preload
from commprefs.store.tx import Tx

MAX_GROUP = 256


class Writer(GroupThreads):
    kind = "write"

    def __init__(self, engine: Engine, cache: PortalCache | None = None) -> None:
        self._cache = cache
        # A group with a refused write runs twice; after one, the next group takes savepoints from the start.
        self._refused_last = False
        self._tx: Tx
        super().__init__(engine, threads=1, max_group=MAX_GROUP, name="commprefs-writer")

    def close(self) -> None:
        super().close()
        self._engine.dispose()

    def run_group(self, conn: Connection, group: list[Job]) -> Outcomes:
        if not self._refused_last:
            outcomes = self._run_without_savepoints(conn, group)
            if outcomes is not None:
                return self._committed(group, outcomes)
        outcomes, self._refused_last = self._run_with_savepoints(conn, group)
        return self._committed(group, outcomes)

    def _run_without_savepoints(self, conn: Connection, group: list[Job]) -> Outcomes | None:
        """The group in one transaction with no savepoint: the usual case, where no write is refused. A savepoint
        costs two statements a write (two round trips on PostgreSQL). If a write raises, the transaction is rolled
        back and None returned: nothing was committed nor answered, and the group runs again with savepoints."""
        outcomes: Outcomes = []
        self._tx = Tx(conn, self._cache)
        merged = len(group) > 1 and all(isinstance(work, SubscriberWork) for work, _, _ in group)
        with conn.begin() as transaction:
            try:
                if merged:
                    self._tx.statuses.defer_writes()
                    preload(self._tx, group)
                for work, loop, future in group:
                    outcomes.append((loop, (future, work(self._tx), None)))
                if merged:
                    self._tx.statuses.write_deferred()
            except Exception:
                if conn.invalidated:
                    raise  # the connection died: the whole group fails with this error
                transaction.rollback()
                self._refused_last = True
                return None
        return outcomes

    def _run_with_savepoints(self, conn: Connection, group: list[Job]) -> tuple[Outcomes, bool]:
        """Each write in its own savepoint, so that a refused one rolls back alone; whether one was refused."""
        outcomes: Outcomes = []
        refused = False
        self._tx = Tx(conn, self._cache)
        with conn.begin():
            # Savepoints go straight to the driver: SQLAlchemy's nested transactions compile their
            # SAVEPOINT and RELEASE statements anew each time, which cost a third of a write's time.
            driver = conn.connection.dbapi_connection
            assert driver is not None
            for work, loop, future in group:
                driver.execute("SAVEPOINT job")
                try:
                    result = work(self._tx)
                except Exception as exc:
                    if conn.invalidated:
                        raise  # the connection died, not this write: the whole group fails with this error
                    driver.execute("ROLLBACK TO SAVEPOINT job")
                    driver.execute("RELEASE SAVEPOINT job")
                    outcomes.append((loop, (future, None, exc)))
                    refused = True
                else:
                    driver.execute("RELEASE SAVEPOINT job")
                    outcomes.append((loop, (future, result, None)))
        return outcomes, refused

    def _committed(self, group: list[Job], outcomes: Outcomes) -> Outcomes:
        WRITE_GROUP_SIZE.observe(len(group))
        if self._cache is not None and self._tx.changed_portals:
            self._cache.invalidate(self._tx.changed_portals)
        return outcomes
