"""Per-token rate limits with HubSpot's policies, answers and headers.

Two policies, each off unless configured: TEN_SECONDLY_ROLLING (COMMPREFS_RATE_LIMIT_PER_10S calls per
rolling 10 seconds) and DAILY (COMMPREFS_RATE_LIMIT_PER_DAY calls per UTC day). A call over either is
answered 429 with HubSpot's rate-limit body and `Retry-After`; every answer to a limited call carries
HubSpot's `X-HubSpot-RateLimit-*` headers and the IETF draft's `RateLimit-*` headers. Only calls with
a known token are limited (`authenticate` calls `Limiter.check` once it knows the token): not health,
readiness, metrics, nor the contact pages, which have their own limits.

The rolling window is the usual sliding-window approximation: the count of the current fixed window
plus the count of the previous one weighted by the share of it still inside the last 10 seconds. A
refused call is not counted, so a client that waits as long as `Retry-After` says is let in then.

Where the counts live:
- PostgreSQL: the `rate_limit` table (UNLOGGED: counters need no crash safety), so every process
  shares one budget; one statement a call, on the limiter's own connections (async psycopg, in the
  event loop; never the group-commit writer), committed without waiting for a WAL flush.
- SQLite: this process's memory. A SQLite file is usually served by one process; with
  `serve --workers N` each worker counts on its own, so a token may make up to N times the limit.

If the database cannot be asked, the call goes through: the limiter never causes an outage.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request
from sqlalchemy.engine import make_url

from commprefs.api.errors import ApiError
from commprefs.clock import now_ms
from commprefs.config import Settings
from commprefs.domain.model import TokenInfo
from commprefs.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

TEN_SECONDLY = "TEN_SECONDLY_ROLLING"
DAILY = "DAILY"
DAY_MS = 86_400_000
# request.scope["state"] key of the headers for this call; set once, so a second `authenticate` of the
# same request (a lean route handing it on to FastAPI's handler) counts nothing more.
STATE_KEY = "rate_limit_headers"
PURGE_EVERY_S = 60.0
RETRY_DATABASE_AFTER_S = 1.0
_MAX_KEYS = 100_000

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    limit: int
    interval_ms: int
    rolling: bool

    def windows(self, now: int) -> tuple[int, int, float]:
        """(start of the current window, start of the previous one, weight of the previous one's count)."""
        start = now - now % self.interval_ms
        weight = 1.0 - (now - start) / self.interval_ms if self.rolling else 0.0
        return start, start - self.interval_ms, weight


@dataclass(frozen=True, slots=True)
class Count:
    """A policy's counts for a token just before a call: the previous window's and the current one's."""

    previous: int
    current: int


def has_room(policy: Policy, now: int, count: Count) -> bool:
    _, _, weight = policy.windows(now)
    return count.previous * weight + count.current + 1 <= policy.limit


def retry_ms(policy: Policy, now: int, count: Count) -> int:
    """How long until a call would be let in, if no other call comes meanwhile."""
    start, _, _ = policy.windows(now)
    end = start + policy.interval_ms
    if not policy.rolling:
        return end - now
    room = policy.limit - 1 - count.current
    if room >= 0 and count.previous > 0:  # the previous window is sliding out
        at = start + policy.interval_ms * (1 - room / count.previous)
    else:  # the current window is full: it has to slide out in turn
        at = end + policy.interval_ms * max(0.0, 1 - (policy.limit - 1) / max(count.current, 1))
    return max(0, math.ceil(at - now))


@dataclass(frozen=True, slots=True)
class Decision:
    headers: Headers
    refused_by: Policy | None


def decide(policies: list[Policy], now: int, counts: Sequence[Count], admitted: bool) -> Decision:
    """The headers of a call given each policy's counts before it, and whether it was let in."""
    # (policy, counts, calls left after this one, ms until its window ends)
    usage: list[tuple[Policy, Count, int, int]] = []
    for policy, count in zip(policies, counts, strict=True):
        start, _, weight = policy.windows(now)
        used = count.previous * weight + count.current + (1 if admitted else 0)
        usage.append((policy, count, max(0, math.floor(policy.limit - used + 1e-9)), start + policy.interval_ms - now))
    refused_by = None
    if not admitted:
        # The policy out of room that frees up last. (With PostgreSQL's counts, a concurrent call may
        # have taken the last place after they were read: then the first policy, which the database
        # checked on the locked row, refused.)
        full = [(retry_ms(p, now, c), n) for n, (p, c, _, _) in enumerate(usage) if not has_room(p, now, c)]
        refused_by = policies[max(full)[1]] if full else policies[0]

    headers: Headers = []
    for policy, _, remaining, _ in usage:
        if policy.rolling:
            headers += [
                (b"x-hubspot-ratelimit-max", str(policy.limit).encode()),
                (b"x-hubspot-ratelimit-remaining", str(remaining).encode()),
                (b"x-hubspot-ratelimit-interval-milliseconds", str(policy.interval_ms).encode()),
            ]
        else:
            headers += [
                (b"x-hubspot-ratelimit-daily", str(policy.limit).encode()),
                (b"x-hubspot-ratelimit-daily-remaining", str(remaining).encode()),
            ]
    # The IETF headers describe one policy: the one that refused, else the one nearest its limit.
    if refused_by is not None:
        shown, remaining = refused_by, 0
        reset_ms = retry_ms(refused_by, now, counts[policies.index(refused_by)])
    else:
        shown, _, remaining, reset_ms = min(usage, key=lambda u: u[2])
    reset_s = max(1, math.ceil(reset_ms / 1000))
    headers += [
        (b"ratelimit-limit", str(shown.limit).encode()),
        (b"ratelimit-remaining", str(remaining).encode()),
        (b"ratelimit-reset", str(reset_s).encode()),
        (b"ratelimit-policy", policy_header(policies)),
    ]
    if refused_by is not None:
        headers.append((b"retry-after", str(reset_s).encode()))
    return Decision(headers, refused_by)


def policy_header(policies: Sequence[Policy]) -> bytes:
    """`RateLimit-Policy`: each policy as `limit;w=seconds`."""
    return ", ".join(f"{p.limit};w={math.ceil(p.interval_ms / 1000)}" for p in policies).encode()


def policies_for(settings: Settings) -> list[Policy]:
    policies = []
    if settings.rate_limit_per_10s > 0:
        policies.append(Policy(TEN_SECONDLY, settings.rate_limit_per_10s, settings.rate_limit_interval_ms, True))
    if settings.rate_limit_per_day > 0:
        policies.append(Policy(DAILY, settings.rate_limit_per_day, DAY_MS, False))
    return policies


class Limiter:
    """Counts a token's calls against the policies; `check` answers 429 when one is exhausted."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        assert policies
        self.policies = list(policies)
        self._last_warning = 0.0

    async def check(self, request: Request, caller: TokenInfo) -> None:
        state = request.scope.setdefault("state", {})
        if STATE_KEY in state:
            return
        now = now_ms()
        try:
            admitted, counts = await self.count(caller, now)
        except Exception as exc:  # the counts are unreachable: let the call through
            state[STATE_KEY] = []
            self._warn(exc)
            return
        decision = decide(self.policies, now, counts, admitted)
        state[STATE_KEY] = decision.headers
        refused = decision.refused_by
        if refused is not None:
            RATE_LIMITED.labels(refused.name).inc()
            raise ApiError(
                429,
                f"You have reached your {refused.name.lower()} limit.",
                category="RATE_LIMITS",
                errorType="RATE_LIMIT",
                policyName=refused.name,
                groupName=f"commprefs:token:{caller.portal_id}:{caller.id}",
            )

    async def count(self, caller: TokenInfo, now: int) -> tuple[bool, list[Count]]:
        """Count the call if every policy has room: (let in, each policy's counts before the call)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            log.warning("rate limit counts unavailable, calls let through: %s", type(exc).__name__)


class MemoryLimiter(Limiter):
    """Counts in this process (SQLite). No I/O: the whole check runs without yielding, so it is atomic."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        super().__init__(policies)
        # (token id, interval) -> [current window's start, its count, the previous window's count]
        self._windows: dict[tuple[str, int], list[int]] = {}

    async def count(self, caller: TokenInfo, now: int) -> tuple[bool, list[Count]]:
        counts = []
        for policy in self.policies:
            start, previous_start, _ = policy.windows(now)
            entry = self._windows.get((caller.id, policy.interval_ms))
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
                self._windows[(caller.id, policy.interval_ms)] = [start, count.current + 1, count.previous]
        return admitted, counts


class PostgresLimiter(Limiter):
    """Counts in PostgreSQL's `rate_limit` table: one statement a call, shared by every process.

    The statement reads the token's rows, then counts the call in the first policy's current window only
    if every policy has room; the first policy's room is checked again on the locked row (ON CONFLICT DO
    UPDATE ... WHERE), so concurrent calls never take more than its limit. The other policy (the daily
    one, when both are on) is counted when the first let the call in: under concurrency it may go over
    by the calls in flight at that moment.
    """

    def __init__(self, policies: Sequence[Policy], database_url: str, pool_size: int = 8) -> None:
        super().__init__(policies)
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._sql = _statement(len(self.policies))
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._down_until = 0.0
        self._next_purge = 0.0
        self._purging: asyncio.Task[None] | None = None

    async def count(self, caller: TokenInfo, now: int) -> tuple[bool, list[Count]]:
        if time.monotonic() < self._down_until:
            raise ConnectionError("the database was unreachable a moment ago")
        params: dict[str, Any] = {"portal": caller.portal_id, "token": caller.id}
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
        except Exception as exc:
            self._warn(exc)

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


def limiter_for(settings: Settings) -> Limiter | None:
    """The limiter `settings` ask for, or None when every limit is off (then nothing is counted)."""
    policies = policies_for(settings)
    if not policies:
        return None
    if make_url(settings.database_url).get_backend_name() == "postgresql":
        return PostgresLimiter(policies, settings.database_url)
    return MemoryLimiter(policies)
