"""SQLite's WAL checkpoints, off the write path.

By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: that commit copies
the WAL back into the database file and fsyncs it, and every write queued behind it waits (a v4 write's
p99 was ten times its p50 under load). The server's writer turns automatic checkpoints off, and this
thread runs a PASSIVE checkpoint every second on a connection of its own: a passive checkpoint never
blocks a writer, and the WAL stays about a second of writes long. Other processes (the CLI) keep
SQLite's automatic checkpoints.
"""

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

EVERY_SECONDS = 1.0


class Checkpointer:
    def __init__(self, database: str, every: float = EVERY_SECONDS) -> None:
        self._database = database
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commprefs-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._database, timeout=5, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self._every):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O trouble: the next round tries again
                    log.warning("WAL checkpoint failed: %s", type(exc).__name__)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
