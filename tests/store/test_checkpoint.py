"""WAL checkpoints run beside the writer, not inside its commits (store/checkpoint.py)."""

import asyncio
import sqlite3
import time
from pathlib import Path

from commprefs.clock import now_ms
from commprefs.store import Store
from commprefs.tenancy.setup import create_portal


def rows_in_database_file(path: Path) -> int:
    """Portals in the database file itself, WAL ignored: what checkpoints have copied there."""
    with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as conn:
        try:
            (count,) = conn.execute("SELECT count(*) FROM portal").fetchone()
        except sqlite3.OperationalError:  # not even the schema yet: it is in the WAL too
            return 0
        return int(count)


def test_the_servers_writes_reach_the_database_file_through_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "commprefs.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    try:

        async def write() -> int:
            for n in range(3):
                await store.write(lambda tx, n=n: create_portal(tx, f"p{n}", gdpr_enabled=False, now=now_ms()))
            return await store.write(lambda tx: tx.conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())

        # The writer's connection never checkpoints on commit: the portals are only in the WAL...
        assert asyncio.run(write()) == 0
        assert store._checkpointer is not None
        # ...until the checkpointer's next round copies them into the database file.
        deadline = time.monotonic() + 5
        while rows_in_database_file(path) < 3:
            assert time.monotonic() < deadline, "no checkpoint within 5 s"
            time.sleep(0.1)
    finally:
        store.close()


def test_other_writers_keep_sqlites_own_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "commprefs.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    try:
        with store.transaction() as tx:
            conn = tx.conn.connection.driver_connection
            assert conn is not None
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert store._checkpointer is None
    finally:
        store.close()
