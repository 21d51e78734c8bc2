"""Engines for SQLite and PostgreSQL, configured for durability.

SQLite runs in WAL mode with synchronous=FULL. pysqlite's own transaction handling is
switched off (SQLAlchemy's documented recipe) so that SAVEPOINTs work and the writer can
take the write lock up front with BEGIN IMMEDIATE: processes sharing one file take turns.
"""

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here; SQLAlchemy would otherwise pick psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, writer: bool = False, pool_size: int = 5, autocheckpoint: bool = True) -> Engine:
    """`autocheckpoint=False` (SQLite): no WAL checkpoints inside commits; a Checkpointer runs them."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url, writer=writer, autocheckpoint=autocheckpoint)
    # psycopg prepares a statement after a few runs, and PostgreSQL may then switch it to a generic
    # plan: for the 1,000-address IN lists of batches that plan scans the whole portal (seconds a
    # call on a table without statistics). Custom plans keep each lookup on the primary key.
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
    )


def _sqlite_engine(url: str, *, writer: bool, autocheckpoint: bool) -> Engine:
    # The reader threads hold a connection each; exports, the CLI and the pages' worker threads (up to
    # 40 in anyio's pool) check out others: keep that many open, or each read past the pool's size
    # opens and closes a connection (and its PRAGMAs) anew.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1 if writer else 40,
        max_overflow=0 if writer else 10,
    )
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight on the driver's connection: through exec_driver_sql, SQLAlchemy's statement machinery made
        # a transaction's BEGIN cost as much as a point read.
        conn.connection.driver_connection.execute(begin)

    return engine
