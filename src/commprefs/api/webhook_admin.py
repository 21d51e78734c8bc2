"""Webhook endpoints through the admin API (scope commprefs.admin): register, list, update,
disable, delete, read the delivery log, replay."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from commprefs.api.auth import AdminCaller, WebhooksDep
from commprefs.api.records import delivery_json, endpoint_json
from commprefs.api.responses import JSON
from commprefs.api.wire import ObjectId, Text
from commprefs.webhooks.payload import EventType

router = APIRouter(prefix="/commprefs/v1/webhooks", tags=["webhooks"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Body):
    url: Text = Field(max_length=2000, description="http(s) URL that receives the events.")
    events: list[EventType] = Field(default_factory=list, description="Event types to send; empty sends all.")
    description: Text = Field("", max_length=500)


class EndpointUpdate(_Body):
    url: Text | None = Field(None, max_length=2000)
    events: list[EventType] | None = None
    description: Text | None = Field(None, max_length=500)
    enabled: StrictBool | None = None


class Replay(_Body):
    since: datetime = Field(description="Send again every event that occurred at or after this time.")


def _allow_private(request: Request) -> bool:
    return bool(request.app.state.settings.webhook_allow_private_networks)


@router.post("", summary="Register an endpoint (its secret is shown once)", status_code=201)
async def create(body: EndpointCreate, request: Request, caller: AdminCaller, webhooks: WebhooksDep) -> Any:
    endpoint, secret = await webhooks.create_endpoint(
        caller.portal_id,
        body.url,
        events=body.events,
        description=body.description,
        allow_private=_allow_private(request),
    )
    return JSON(endpoint_json(endpoint, secret), status_code=201)


@router.get("", summary="List endpoints")
async def list_endpoints(caller: AdminCaller, webhooks: WebhooksDep) -> Any:
    rows = await webhooks.endpoints(caller.portal_id)
    return JSON({"results": [endpoint_json(r) for r in rows]})


@router.get("/{endpointId}", summary="One endpoint")
async def get_endpoint(endpointId: ObjectId, caller: AdminCaller, webhooks: WebhooksDep) -> Any:
    return JSON(endpoint_json(await webhooks.endpoint(caller.portal_id, endpointId)))


@router.patch("/{endpointId}", summary="Change, disable or re-enable an endpoint")
async def update_endpoint(
    endpointId: ObjectId, body: EndpointUpdate, request: Request, caller: AdminCaller, webhooks: WebhooksDep
) -> Any:
    row = await webhooks.update_endpoint(
        caller.portal_id,
        endpointId,
        allow_private=_allow_private(request),
        url=body.url,
        events=body.events,
        description=body.description,
        enabled=body.enabled,
    )
    return JSON(endpoint_json(row))


@router.delete(
    "/{endpointId}", summary="Delete an endpoint and its delivery log", status_code=204, response_class=Response
)
async def delete_endpoint(endpointId: ObjectId, caller: AdminCaller, webhooks: WebhooksDep) -> Response:
    await webhooks.delete_endpoint(caller.portal_id, endpointId)
    return Response(status_code=204)


@router.get("/{endpointId}/deliveries", summary="The endpoint's delivery attempts, newest first")
async def deliveries(
    endpointId: ObjectId,
    caller: AdminCaller,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    endpoint, rows = await webhooks.deliveries(caller.portal_id, endpointId, limit)
    return JSON({"endpoint": endpoint_json(endpoint), "results": [delivery_json(r) for r in rows]})


@router.post("/{endpointId}/replay", summary="Send again the events since a time, in order")
async def replay(endpointId: ObjectId, body: Replay, caller: AdminCaller, webhooks: WebhooksDep) -> Any:
    moment = body.since if body.since.tzinfo else body.since.replace(tzinfo=UTC)
    since = int(moment.timestamp() * 1000)
    return JSON(endpoint_json(await webhooks.replay(caller.portal_id, endpointId, since)))
