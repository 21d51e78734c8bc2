"""Rate-limit counts (the API's limiter asks before each call with a token: api/ratelimit.py).

- PostgreSQL: the `rate_limit` table (UNLOGGED: counters need no crash safety), so every process
  shares one budget; one statement a call, on the counter's own connections (async psycopg, in the
  event loop; never the group-commit writer), committed without waiting for a WAL flush.
- SQLite: this process's memory. A SQLite file is usually served by one process; with
  `serve --workers N` each worker counts on its own, so a token may make up to N times the limit.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from commprefs.domain.limits import Count, Policy, has_room

log = logging.getLogger("commprefs.api.ratelimit")
PURGE_EVERY_S = 60.0
RETRY_DATABASE_AFTER_S = 1.0
_MAX_KEYS = 100_000


class MemoryCounter:
    """Counts in this process (SQLite). No I/O: the whole check runs without yielding, so it is atomic."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = list(policies)
        # (token id, interval) -> [current window's start, its count, the previous window's count]
        self._windows: dict[tuple[str, int], list[int]] = {}

    async def count(self, portal_id: int, token_id: str, now: int) -> tuple[bool, list[Count]]:
        counts = []
        for policy in self.policies:
            start, previous_start, _ = policy.windows(now)
            entry = self._windows.get((token_id, policy.interval_ms))
            if entry is None or entry[0] < previous_start:
                counts.append(Count(0, 0))
            elif entry[0] == previous_start:
                counts.append(Count(entry[1], 0))
            else:
                counts.append(Count(entry[2], entry[1]))
        admitted = all(has_room(p, now, c) for p, c in zip(self.policies, counts, strict=True))
        if admitted:
            if len(self._windows) >= _MAX_KEYS:
                self._windows.clear()
            for policy, count in zip(self.policies, counts, strict=True):
                start, _, _ = policy.windows(now)
                self._windows[(token_id, policy.interval_ms)] = [start, count.current + 1, count.previous]
        return admitted, counts

    async def aclose(self) -> None:
        pass


class PostgresCounter:
    """Counts in PostgreSQL's `rate_limit` table: one statement a call, shared by every process.

    The statement reads the token's rows, then counts the call in the first policy's current window only
    if every policy has room; the first policy's room is checked again on the locked row (ON CONFLICT DO
    UPDATE ... WHERE), so concurrent calls never take more than its limit. The other policy (the daily
    one, when both are on) is counted when the first let the call in: under concurrency it may go over
    by the calls in flight at that moment.
    """

    def __init__(self, policies: Sequence[Policy], database_url: str, pool_size: int = 8) -> None:
        self.policies = list(policies)
        self._last_warning = 0.0
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._sql = _statement(len(self.policies))
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._down_until = 0.0
        self._next_purge = 0.0
        self._purging: asyncio.Task[None] | None = None

    async def count(self, portal_id: int, token_id: str, now: int) -> tuple[bool, list[Count]]:
        if time.monotonic() < self._down_until:
            raise ConnectionError("the database was unreachable a moment ago")
        params: dict[str, Any] = {"portal": portal_id, "token": token_id}
        for n, policy in enumerate(self.policies):
            start, previous, weight = policy.windows(now)
            params.update({f"i{n}": policy.interval_ms, f"c{n}": start, f"p{n}": previous, f"w{n}": weight})
            params[f"l{n}"] = policy.limit
        try:
            async with self._connection() as conn:
                row = await (await conn.execute(self._sql, params)).fetchone()
        except Exception:
            self._down_until = time.monotonic() + RETRY_DATABASE_AFTER_S
            raise
        assert row is not None
        self._maybe_purge(now)
        counts = []
        for n in range(len(self.policies)):
            seen, previous, counted = row[3 * n : 3 * n + 3]
            # The new count is the latest (other processes' calls included); what was seen is a snapshot.
            counts.append(Count(int(previous), int(seen) if counted is None else int(counted) - 1))
        return row[2] is not None, counts

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
            self._idle.append(conn)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=2,
            options="-c synchronous_commit=off -c statement_timeout=2000",
        )

    def _maybe_purge(self, now: int) -> None:
        """Now and then, off the call's path: drop windows too old to count (older than the previous one)."""
        if time.monotonic() < self._next_purge or (self._purging is not None and not self._purging.done()):
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        self._purging = asyncio.create_task(self._purge(now))

    async def _purge(self, now: int) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(
                    "DELETE FROM rate_limit WHERE window_start < %(now)s - 2 * interval_ms", {"now": now}
                )
        except Exception as exc:  # the next purge tries again
            if time.monotonic() - self._last_warning > 60:
                self._last_warning = time.monotonic()
                log.warning("could not purge rate limit counts: %s", type(exc).__name__)

    async def aclose(self) -> None:
        if self._purging is not None:
            with contextlib.suppress(Exception):
                await self._purging
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.pop().close()


def _statement(policies: int) -> str:
    """The counting statement for one or two policies (n = 0, 1: interval i, windows c and p, weight w,
    limit l). It returns, per policy: the current count before the call, the previous window's count,
    and the new count (NULL when the call was refused)."""
    key = "(portal_id, token_id, interval_ms, window_start)"
    windows = ", ".join(f"(%(i{n})s, %(c{n})s), (%(i{n})s, %(p{n})s)" for n in range(policies))
    columns = ",\n".join(
        f"coalesce(max(count) FILTER (WHERE interval_ms = %(i{n})s AND window_start = %(c{n})s), 0) AS c{n},\n"
        f"coalesce(max(count) FILTER (WHERE interval_ms = %(i{n})s AND window_start = %(p{n})s), 0) AS p{n}"
        for n in range(policies)
    )
    room = " AND ".join(f"v.c{n} + 1 + %(w{n})s * v.p{n} <= %(l{n})s" for n in range(policies))
    sql = f"""
WITH seen AS (
    SELECT interval_ms, window_start, count FROM rate_limit
    WHERE portal_id = %(portal)s AND token_id = %(token)s AND (interval_ms, window_start) IN ({windows})
), v AS (
    SELECT {columns} FROM seen
), hit0 AS (
    INSERT INTO rate_limit AS r (portal_id, token_id, interval_ms, window_start, count)
    SELECT %(portal)s, %(token)s, %(i0)s, %(c0)s, 1 FROM v WHERE {room}
    ON CONFLICT {key} DO UPDATE SET count = r.count + 1
    WHERE r.count + 1 + %(w0)s * (SELECT p0 FROM v) <= %(l0)s
    RETURNING r.count
)"""
    for n in range(1, policies):
        sql += f""", hit{n} AS (
    INSERT INTO rate_limit AS r (portal_id, token_id, interval_ms, window_start, count)
    SELECT %(portal)s, %(token)s, %(i{n})s, %(c{n})s, 1 FROM hit{n - 1}
    ON CONFLICT {key} DO UPDATE SET count = r.count + 1
    RETURNING r.count
)"""
    selected = ", ".join(f"v.c{n}, v.p{n}, (SELECT count FROM hit{n})" for n in range(policies))
    return sql + f"\nSELECT {selected} FROM v"


def counter_for(policies: Sequence[Policy], database_url: str) -> MemoryCounter | PostgresCounter:
    """PostgreSQL's shared table, or this process's memory on SQLite."""
    if make_url(database_url).get_backend_name() == "postgresql":
        return PostgresCounter(policies, database_url)
    return MemoryCounter(policies)
