"""The readers: a few threads that each answer every read queued meanwhile in one transaction (group reads).

A read handed to a worker thread on its own paid for the hand-off, a pooled connection's check-out (and, on
PostgreSQL, its pre-ping round trip), BEGIN and COMMIT, and one wake-up of the event loop: more than the
indexed lookup itself. A reader thread holds its connection, takes everything queued when it gets to it and
runs the reads one after the other in one read transaction (store/groups.py). A read that fails is answered
with its error alone.

A read of one contact's statuses says so (`SubscriberWork`, store/groups.py): the reader loads the subscribers of
every such read of a group in one statement before it runs them, instead of one statement a read (on PostgreSQL,
one round trip and one query for the group instead of one each).
"""

import sqlite3

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from commprefs.store.cache import PortalCache
from commprefs.store.groups import GroupThreads, Job, Outcomes, preload
from commprefs.store.tx import Tx

MAX_GROUP = 64
# Errors of the database (through SQLAlchemy or straight from the driver), after which a transaction may refuse
# every further statement.
DATABASE_ERRORS = (DBAPIError, sqlite3.Error, psycopg.Error)


class Reader(GroupThreads):
    kind = "read"

    def __init__(self, engine: Engine, cache: PortalCache, threads: int) -> None:
        self._cache = cache
        super().__init__(engine, threads=threads, max_group=MAX_GROUP, name="commprefs-reader")

    def connect(self) -> Connection:
        conn = super().connect()
        if conn.dialect.name == "postgresql":
            # No BEGIN and COMMIT around a group on PostgreSQL: under READ COMMITTED every statement takes a
            # snapshot of its own inside a transaction too, and they were two of a group's three round trips.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    def run_group(self, conn: Connection, group: list[Job]) -> Outcomes:
        outcomes: Outcomes = []
        pending = self._read_until_error(conn, group, outcomes, preloading=True)
        while pending:  # a rerun after an error does without the preload
            pending = self._read_until_error(conn, pending, outcomes, preloading=False)
        return outcomes

    def _read_until_error(
        self, conn: Connection, jobs: list[Job], outcomes: Outcomes, *, preloading: bool
    ) -> list[Job]:
        """Run `jobs` in one transaction until one fails in the database; the jobs after it are returned, to run
        in a new transaction (PostgreSQL refuses every statement after an error until the transaction ends)."""
        tx = Tx(conn, self._cache)
        with conn.begin() as transaction:
            if preloading:
                try:
                    preload(tx, jobs)
                except Exception as exc:
                    if conn.invalidated or isinstance(exc, psycopg.OperationalError):
                        raise
                    transaction.rollback()  # each read then meets the error, if it is one, on its own
                    return jobs
            for n, (work, loop, future) in enumerate(jobs):
                try:
                    result = work(tx)
                except Exception as exc:
                    if conn.invalidated or isinstance(exc, psycopg.OperationalError):
                        raise  # the connection died, not this read: the whole group fails with this error
                    outcomes.append((loop, (future, None, exc)))
                    if isinstance(exc, DATABASE_ERRORS):
                        transaction.rollback()
                        return jobs[n + 1 :]
                else:
                    outcomes.append((loop, (future, result, None)))
        return []
