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

Where the counts live (store/ratelimit.py): PostgreSQL's `rate_limit` table, shared by every process, or
this process's memory on SQLite.

If the database cannot be asked, the call goes through: the limiter never causes an outage.
"""

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Request

from commprefs.api.errors import ApiError
from commprefs.clock import now_ms
from commprefs.config import Settings
from commprefs.domain.limits import DAILY, DAY_MS, TEN_SECONDLY, Count, Counter, Policy, has_room
from commprefs.domain.model import TokenInfo
from commprefs.metrics import RATE_LIMITED

log = logging.getLogger(__name__)

# request.scope["state"] key of the headers for this call; set once, so a second `authenticate` of the
# same request (a lean route handing it on to FastAPI's handler) counts nothing more.
STATE_KEY = "rate_limit_headers"

Headers = list[tuple[bytes, bytes]]


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

    def __init__(self, policies: Sequence[Policy], counter: Counter) -> None:
        assert policies
        self.policies = list(policies)
        self.counter = counter
        self._last_warning = 0.0

    async def check(self, request: Request, caller: TokenInfo) -> None:
        state = request.scope.setdefault("state", {})
        if STATE_KEY in state:
            return
        now = now_ms()
        try:
            admitted, counts = await self.counter.count(caller.portal_id, caller.id, now)
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

    async def aclose(self) -> None:
        await self.counter.aclose()

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            log.warning("rate limit counts unavailable, calls let through: %s", type(exc).__name__)


def limiter_for(settings: Settings, counter_for: Callable[[Sequence[Policy]], Counter]) -> Limiter | None:
    """The limiter `settings` ask for, counting with `counter_for(policies)`, or None when every limit is off
    (then nothing is counted)."""
    policies = policies_for(settings)
    return Limiter(policies, counter_for(policies)) if policies else None
