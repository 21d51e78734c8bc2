"""Bearer-token authentication and per-endpoint scopes, as FastAPI dependencies.

A token resolves to one portal; every handler scopes its work to `caller.portal_id`.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from commprefs.api.errors import ApiError
from commprefs.domain.enums import Scope
from commprefs.domain.model import TokenInfo
from commprefs.store import Store
from commprefs.tenancy import hash_token

SCOPES_LINK = {"scopes": "https://developers.hubspot.com/scopes"}
_MAX_CACHED = 10_000


class TokenCache:
    """Token lookups for a few seconds, unknown tokens included, so that bad tokens cost no query."""

    def __init__(self, store: Store, ttl: float) -> None:
        self._store = store
        self._ttl = ttl
        self._entries: dict[str, tuple[float, TokenInfo | None]] = {}

    async def lookup(self, secret: str) -> TokenInfo | None:
        digest = hash_token(secret)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        info = await self._store.aread(lambda tx: tx.find_token(digest))
        if len(self._entries) >= _MAX_CACHED:
            self._entries.clear()
        self._entries[digest] = (now + self._ttl, info)
        return info

    def forget(self) -> None:
        self._entries.clear()


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


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
    return info


def require_scope(*any_of: Scope) -> Callable[[TokenInfo], Awaitable[TokenInfo]]:
    """A dependency that admits tokens holding at least one of `any_of`."""
    wanted = frozenset(any_of)

    async def check(caller: Annotated[TokenInfo, Depends(authenticate)]) -> TokenInfo:
        if caller.scopes.isdisjoint(wanted):
            raise ApiError(
                403,
                "This app hasn't been granted all required scopes to make this call. "
                "Read more about required scopes here: https://developers.hubspot.com/scopes.",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": sorted(wanted)},
                    }
                ],
                links=SCOPES_LINK,
            )
        return caller

    return check


ReadCaller = Annotated[TokenInfo, Depends(require_scope(Scope.READ, Scope.READ_WRITE))]
WriteCaller = Annotated[TokenInfo, Depends(require_scope(Scope.WRITE, Scope.READ_WRITE))]
AdminCaller = Annotated[TokenInfo, Depends(require_scope(Scope.ADMIN))]
