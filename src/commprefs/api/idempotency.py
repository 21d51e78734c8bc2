"""Idempotent retries: a write sent again with the same `Idempotency-Key` and body within 24 hours
gets the first answer back without writing again; the same key with another body is a 422.

The first answer is stored in the same transaction as the write, so a key never exists without
its change, nor a change without its key. Refused writes are not stored: retrying them is
harmless and gives the same refusal.
"""

import asyncio
import hashlib
import logging
from collections.abc import Callable

from fastapi import Request
from starlette.responses import Response

from commprefs.api.errors import ApiError, field_error
from commprefs.api.responses import JSON
from commprefs.clock import now_ms
from commprefs.domain.model import TokenInfo
from commprefs.store import Store, Tx

log = logging.getLogger(__name__)
HEADER = "idempotency-key"
TTL_MS = 24 * 3600 * 1000
MAX_KEY = 255


async def idempotent(
    request: Request,
    caller: TokenInfo,
    store: Store,
    work: Callable[[Tx], JSON],
    *,
    subscriber: tuple[int, str, str] | None = None,
) -> Response:
    """Run `work` through the writer, honouring the request's Idempotency-Key if it has one; `subscriber` as
    `Store.write` takes it (a change of one subscriber's statuses)."""
    key = request.headers.get(HEADER)
    if key is None:
        return await store.write(work, subscriber=subscriber)
    if not key.strip() or len(key) > MAX_KEY:
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {MAX_KEY} characters",
            errors=[field_error("invalid Idempotency-Key", "Idempotency-Key", "INVALID")],
        )
    body = await request.body()
    fingerprint = hashlib.sha256(
        b"\0".join([request.method.encode(), request.url.path.encode(), request.url.query.encode(), body])
    ).hexdigest()

    def once(tx: Tx) -> Response:
        now = now_ms()
        first = tx.get_idempotent(caller.portal_id, key)
        if first is not None and first.created_at > now - TTL_MS:
            if first.fingerprint != fingerprint:
                raise ApiError(422, "This Idempotency-Key was already used with a different request")
            return Response(
                bytes(first.body),
                status_code=first.status_code,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        response = work(tx)
        tx.save_idempotent(caller.portal_id, key, fingerprint, response.status_code, bytes(response.body), now)
        return response

    return await store.write(once, subscriber=subscriber)


async def purge_expired_keys(store: Store, every_seconds: float = 3600) -> None:
    """Delete keys older than 24 hours, once at start and then every `every_seconds`; runs until cancelled."""
    while True:
        try:
            removed = await store.write(lambda tx: tx.purge_idempotent(now_ms() - TTL_MS))
            if removed:
                log.info("purged expired idempotency keys", extra={"count": removed})
        except Exception as exc:  # the database may be down for a while; try again next round
            log.warning("could not purge idempotency keys: %s", type(exc).__name__)
        await asyncio.sleep(every_seconds)
