"""Rate-limit policies and counts: the arithmetic of a sliding window, shared by the API's limiter and the
store's counters."""

from dataclasses import dataclass
from typing import Protocol

TEN_SECONDLY = "TEN_SECONDLY_ROLLING"
DAILY = "DAILY"
DAY_MS = 86_400_000


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


class Counter(Protocol):
    """Where a token's calls are counted (store/ratelimit.py): this process, or a table every process shares."""

    async def count(self, portal_id: int, token_id: str, now: int) -> tuple[bool, list[Count]]:
        """Count the call if every policy has room: (let in, each policy's counts before the call)."""
        ...

    async def aclose(self) -> None: ...
