"""commprefs' own history API: a subscriber's consent history (proof of consent) and the portal's
change feed, for systems that sync by polling. Scopes: communication_preferences.read (or
.read_write) or commprefs.admin."""

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from commprefs.api.auth import ConsentDep, require_scope
from commprefs.api.responses import JSON
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Scope
from commprefs.domain.model import TokenInfo
from commprefs.webhooks.payload import decode_cursor, encode_cursor, events_json

router = APIRouter(prefix="/commprefs/v1", tags=["history"])

HistoryCaller = Annotated[TokenInfo, Depends(require_scope(Scope.READ, Scope.READ_WRITE, Scope.ADMIN))]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (at most 1,000).")]
After = Annotated[str | None, Query(max_length=200, description="`paging.next.after` of the previous page.")]


@router.get("/subscribers/{emailAddress}/history", summary="A subscriber's consent history, newest first")
async def subscriber_history(
    emailAddress: str, caller: HistoryCaller, service: ConsentDep, limit: Limit = 100, after: After = None
) -> Any:
    """Every change recorded for the address: old and new status, subscription or opt-out scope,
    legal basis, source, actor, and the IP and user agent where a person acted on a page."""
    address = normalize_email(emailAddress)
    before = decode_cursor(after)[1] if after else None
    found = await service.history(caller.portal_id, address, before, limit + 1)
    rows = found.rows
    body: dict[str, Any] = {"results": events_json(replace(found, rows=rows[:limit]), with_person=True)}
    if len(rows) > limit:
        body["paging"] = {"next": {"after": encode_cursor((0, rows[limit - 1].id))}}
    return JSON(body)


@router.get("/events", summary="The portal's change feed, in commit order")
async def change_feed(caller: HistoryCaller, service: ConsentDep, limit: Limit = 100, after: After = None) -> Any:
    """Changes after the cursor, oldest first. `paging.next.after` is always returned: poll with it
    to get what came since. A change never appears behind a cursor already handed out, so a consumer
    that polls misses nothing and sees nothing twice (the cursor survives restarts and works
    across API processes)."""
    position = decode_cursor(after)
    found = await service.feed(caller.portal_id, position, limit)
    rows, results = found.rows, events_json(found, with_person=True)
    last = (rows[-1].txid, rows[-1].id) if rows else position
    return JSON({"results": results, "paging": {"next": {"after": encode_cursor(last)}}})
