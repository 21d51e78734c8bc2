"""HubSpot's v3 Communication Preferences API: definitions, status, subscribe, unsubscribe (and the
dated versions' v3-shaped status operations, resubscribe included)."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from commprefs import consent
from commprefs.api.auth import ReadCaller, StoreDep, WriteCaller
from commprefs.api.idempotency import idempotent
from commprefs.api.responses import JSON
from commprefs.api.wire import SubscriptionId, Text, definition_json, v3_status_json
from commprefs.clock import now_ms
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Channel, LegalBasis, Source, Status
from commprefs.domain.model import Actor, TokenInfo


class PublicUpdateSubscriptionStatusRequest(BaseModel):
    """Body of v3 subscribe, unsubscribe and resubscribe."""

    model_config = ConfigDict(extra="ignore")

    emailAddress: Text = Field(description="Contact's email address.")
    subscriptionId: SubscriptionId = Field(description="ID of the subscription being updated (string or number).")
    legalBasis: LegalBasis | None = None
    legalBasisExplanation: Text | None = None


def api_actor(request: Request, caller: TokenInfo) -> Actor:
    return Actor(source=Source.API, token_id=caller.id, request_id=getattr(request.state, "request_id", None))


async def get_definitions(caller: ReadCaller, store: StoreDep) -> Any:
    definitions = await store.aread(lambda tx: tx.list_definitions(caller.portal_id))
    return JSON({"subscriptionDefinitions": [definition_json(d) for d in definitions]})


async def get_email_status(emailAddress: str, request: Request, caller: ReadCaller, store: StoreDep) -> Any:
    address = normalize_email(emailAddress)
    actor = api_actor(request, caller)
    views = await store.aread(
        lambda tx: consent.apply(tx, caller.portal_id, actor, now_ms(), consent.Changes.statuses, address),
        subscriber=(caller.portal_id, Channel.EMAIL, address),
    )
    return JSON({"recipient": emailAddress.strip(), "subscriptionStatuses": [v3_status_json(v) for v in views]})


def _change(
    operation: Callable[[consent.Changes, consent.StatusInput], consent.Effective], state: Status
) -> Callable[..., Any]:
    async def endpoint(
        body: PublicUpdateSubscriptionStatusRequest, request: Request, caller: WriteCaller, store: StoreDep
    ) -> Any:
        change = consent.StatusInput(
            normalize_email(body.emailAddress),
            body.subscriptionId,
            state,
            body.legalBasis,
            body.legalBasisExplanation,
        )
        actor = api_actor(request, caller)
        return await idempotent(
            request,
            caller,
            store,
            lambda tx: JSON(v3_status_json(consent.apply(tx, caller.portal_id, actor, now_ms(), operation, change))),
            subscriber=(caller.portal_id, Channel.EMAIL, change.address),
        )

    endpoint.__doc__ = operation.__doc__
    return endpoint


def router(prefix: str, *, with_definitions: bool, with_resubscribe: bool = False) -> APIRouter:
    """v3's operations under `prefix`: all four for v3; the status ones (and resubscribe) for dated versions."""
    api = APIRouter(prefix=prefix, tags=[prefix.rsplit("/", 1)[-1]])
    if with_definitions:
        api.add_api_route(
            "/definitions", get_definitions, methods=["GET"], summary="Retrieve all subscription status definitions"
        )
    api.add_api_route(
        "/status/email/{emailAddress:path}",
        get_email_status,
        methods=["GET"],
        summary="Get the subscription statuses of an email address",
    )
    api.add_api_route(
        "/subscribe",
        _change(consent.subscribe_v3, Status.SUBSCRIBED),
        methods=["POST"],
        summary="Subscribe a contact to a subscription",
    )
    api.add_api_route(
        "/unsubscribe",
        _change(consent.unsubscribe_v3, Status.UNSUBSCRIBED),
        methods=["POST"],
        summary="Unsubscribe a contact from a subscription",
    )
    if with_resubscribe:
        api.add_api_route(
            "/resubscribe",
            _change(consent.resubscribe_v3, Status.SUBSCRIBED),
            methods=["POST"],
            summary="Resubscribe a contact, lifting their opt-out from all in the subscription's scope",
        )
    return api
