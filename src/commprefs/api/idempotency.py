"""Idempotent retries over HTTP: a write sent again with the same `Idempotency-Key` and body within 24 hours
gets the first answer back without writing again; the same key with another body is a 422.

The consent service keeps the first answer in the same transaction as the write (`Consent.change` with a
`Retry`), so a key never exists without its change, nor a change without its key. Refused writes are not
kept: retrying them is harmless and gives the same refusal.
"""

import asyncio
import hashlib
import logging
from collections.abc import Callable

from fastapi import Request
from starlette.responses import Response

from commprefs.api.errors import ApiError, field_error
from commprefs.api.responses import JSON
from commprefs.consent import Answer, Changes, Consent, Retry
from commprefs.domain.enums import Channel
from commprefs.domain.model import Actor, TokenInfo

log = logging.getLogger(__name__)
HEADER = "idempotency-key"
MAX_KEY = 255


async def idempotent(
    request: Request,
    caller: TokenInfo,
    consent: Consent,
    actor: Actor,
    now: int,
    plan: Callable[[Changes], JSON],
    *,
    channel: Channel = Channel.EMAIL,
    address: str | None = None,
) -> Response:
    """Run `plan` (rules on a unit of work, making the answer) as one change, honouring the request's
    Idempotency-Key if it has one; `address` names the one subscriber it changes, if only one."""
    key = request.headers.get(HEADER)
    if key is None:
        response = await consent.change(caller.portal_id, actor, now, plan, channel=channel, address=address)
        assert isinstance(response, Response)  # only a retry is answered with an Answer
        return response
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
    outcome = await consent.change(
        caller.portal_id,
        actor,
        now,
        plan,
        channel=channel,
        address=address,
        retry=Retry(key, fingerprint),
        answer=lambda response: Answer(response.status_code, bytes(response.body)),
    )
    if isinstance(outcome, Answer):
        return Response(
            outcome.body,
            status_code=outcome.status_code,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    return outcome


async def purge_expired_keys(consent: Consent, every_seconds: float = 3600) -> None:
    """Delete keys older than 24 hours, once at start and then every `every_seconds`; runs until cancelled."""
    while True:
        try:
            removed = await consent.purge_retries()
            if removed:
                log.info("purged expired idempotency keys", extra={"count": removed})
        except Exception as exc:  # the database may be down for a while; try again next round
            log.warning("could not purge idempotency keys: %s", type(exc).__name__)
        await asyncio.sleep(every_seconds)
