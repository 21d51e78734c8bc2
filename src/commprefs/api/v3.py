"""HubSpot's v3 Communication Preferences API: definitions, status, subscribe, unsubscribe."""

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from commprefs import consent
from commprefs.api.auth import ReadCaller, StoreDep, WriteCaller
from commprefs.api.responses import JSON
from commprefs.api.wire import SubscriptionId, definition_json, v3_status_json
from commprefs.clock import now_ms
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import LegalBasis, Source
from commprefs.domain.model import Actor, TokenInfo


class PublicUpdateSubscriptionStatusRequest(BaseModel):
    """Body of v3 subscribe and unsubscribe."""

    model_config = ConfigDict(extra="ignore")

    emailAddress: StrictStr = Field(description="Contact's email address.")
    subscriptionId: SubscriptionId = Field(description="ID of the subscription being updated (string or number).")
    legalBasis: LegalBasis | None = None
    legalBasisExplanation: StrictStr | None = None


def api_actor(request: Request, caller: TokenInfo) -> Actor:
    return Actor(source=Source.API, token_id=caller.id, request_id=getattr(request.state, "request_id", None))


async def get_definitions(caller: ReadCaller, store: StoreDep) -> Any:
    definitions = await store.aread(lambda tx: tx.list_definitions(caller.portal_id))
    return JSON({"subscriptionDefinitions": [definition_json(d) for d in definitions]})


async def get_email_status(emailAddress: str, caller: ReadCaller, store: StoreDep) -> Any:
    address = normalize_email(emailAddress)
    views = await store.aread(lambda tx: consent.v3_statuses(tx, caller.portal_id, address))
    return JSON({"recipient": emailAddress.strip(), "subscriptionStatuses": [v3_status_json(v) for v in views]})


async def subscribe(
    body: PublicUpdateSubscriptionStatusRequest, request: Request, caller: WriteCaller, store: StoreDep
) -> Any:
    address = normalize_email(body.emailAddress)
    actor = api_actor(request, caller)
    view = await store.write(
        lambda tx: consent.subscribe_v3(
            tx,
            caller.portal_id,
            address,
            body.subscriptionId,
            body.legalBasis,
            body.legalBasisExplanation,
            actor,
            now_ms(),
        )
    )
    return JSON(v3_status_json(view))


async def unsubscribe(
    body: PublicUpdateSubscriptionStatusRequest, request: Request, caller: WriteCaller, store: StoreDep
) -> Any:
    address = normalize_email(body.emailAddress)
    actor = api_actor(request, caller)
    view = await store.write(
        lambda tx: consent.unsubscribe_v3(
            tx,
            caller.portal_id,
            address,
            body.subscriptionId,
            body.legalBasis,
            body.legalBasisExplanation,
            actor,
            now_ms(),
        )
    )
    return JSON(v3_status_json(view))


def router(prefix: str, *, with_definitions: bool) -> APIRouter:
    """v3's operations under `prefix`: all four for v3, the status three for the dated versions."""
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
    api.add_api_route("/subscribe", subscribe, methods=["POST"], summary="Subscribe a contact to a subscription")
    api.add_api_route(
        "/unsubscribe", unsubscribe, methods=["POST"], summary="Unsubscribe a contact from a subscription"
    )
    return api
