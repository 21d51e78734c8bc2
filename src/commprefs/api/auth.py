"""Bearer-token authentication and per-endpoint scopes, as FastAPI dependencies.

A token resolves to one portal; every handler scopes its work to `caller.portal_id`.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from commprefs.api.errors import ApiError
from commprefs.clock import now_ms
from commprefs.consent import Consent
from commprefs.domain.enums import Scope, Source
from commprefs.domain.model import Actor, TokenInfo
from commprefs.services import Services
from commprefs.tenancy import Tenancy, hash_token
from commprefs.transfer import Transfer
from commprefs.webhooks import Webhooks

SCOPES_LINK = {"scopes": "https://developers.hubspot.com/scopes"}
_MAX_CACHED = 10_000
TOUCH_EVERY_MS = 60_000
log = logging.getLogger(__name__)


class TokenCache:
    """Token lookups for a few seconds, unknown tokens included, so that bad tokens cost no query.

    A token's `last_used_at` is recorded at most once a minute per process, off the request path.
    """

    def __init__(self, tenancy: Tenancy, ttl: float) -> None:
        self._tenancy = tenancy
        self._ttl = ttl
        self._entries: dict[str, tuple[float, TokenInfo | None]] = {}
        self._touched: dict[str, int] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def lookup(self, secret: str) -> TokenInfo | None:
        digest = hash_token(secret)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        info = await self._tenancy.find_token(digest)
        if len(self._entries) >= _MAX_CACHED:
            self._entries.clear()
        self._entries[digest] = (now + self._ttl, info)
        if info is not None:
            self._touch(info.id)
        return info

    def _touch(self, token_id: str) -> None:
        now = now_ms()
        if now - self._touched.get(token_id, 0) < TOUCH_EVERY_MS:
            return
        if len(self._touched) >= _MAX_CACHED:
            self._touched.clear()
        self._touched[token_id] = now
        task = asyncio.create_task(self._record_use(token_id, now))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_use(self, token_id: str, now: int) -> None:
        try:
            await self._tenancy.touch_token(token_id, now)
        except Exception as exc:  # a lost "last used" time must never fail or slow a request
            log.warning("could not record token use: %s", type(exc).__name__)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def get_consent(request: Request) -> Consent:
    return services(request).consent


async def get_tenancy(request: Request) -> Tenancy:
    return services(request).tenancy


async def get_webhooks(request: Request) -> Webhooks:
    return services(request).webhooks


async def get_transfer(request: Request) -> Transfer:
    return services(request).transfer


ConsentDep = Annotated[Consent, Depends(get_consent)]
TenancyDep = Annotated[Tenancy, Depends(get_tenancy)]
WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]
TransferDep = Annotated[Transfer, Depends(get_transfer)]


def api_actor(request: Request, caller: TokenInfo, source: Source = Source.API) -> Actor:
    """The actor of a change made through the API: the token, and the request's id."""
    return Actor(source=source, token_id=caller.id, request_id=getattr(request.state, "request_id", None))


async def authenticate(request: Request) -> TokenInfo:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "Authentication credentials not found. This API supports Bearer token authentication: "
            "send 'Authorization: Bearer <token>'.",
        )
    cache: TokenCache = request.app.state.tokens
    info = await cache.lookup(secret.strip())
    if info is None:
        raise ApiError(401, "Authentication credentials are invalid, expired or revoked.")
    request.state.caller = info
    limiter = request.app.state.rate_limiter
    if limiter is not None:  # off by default: then nothing is counted
        await limiter.check(request, info)
    return info


def require_scopes(*alternatives: frozenset[Scope]) -> Callable[[TokenInfo], Awaitable[TokenInfo]]:
    """A dependency that admits tokens holding every scope of at least one of `alternatives`
    (HubSpot's security lists: `read` and `write`, or `read_write`)."""
    named = sorted({scope for scopes in alternatives for scope in scopes})

    async def check(caller: Annotated[TokenInfo, Depends(authenticate)]) -> TokenInfo:
        if not any(scopes <= caller.scopes for scopes in alternatives):
            raise ApiError(
                403,
                "This app hasn't been granted all required scopes to make this call. "
                "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": named},
                    }
                ],
                links=SCOPES_LINK,
            )
        return caller

    return check


def require_scope(*any_of: Scope) -> Callable[[TokenInfo], Awaitable[TokenInfo]]:
    """A dependency that admits tokens holding at least one of `any_of`."""
    return require_scopes(*(frozenset({scope}) for scope in any_of))


ReadCaller = Annotated[TokenInfo, Depends(require_scope(Scope.READ, Scope.READ_WRITE))]
WriteCaller = Annotated[TokenInfo, Depends(require_scope(Scope.WRITE, Scope.READ_WRITE))]
AdminCaller = Annotated[TokenInfo, Depends(require_scope(Scope.ADMIN))]
