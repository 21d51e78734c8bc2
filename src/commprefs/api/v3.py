"""HubSpot's v3 Communication Preferences API: definitions, status, subscribe, unsubscribe (and the
dated versions' v3-shaped status operations, resubscribe included)."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictStr

from commprefs import consent
from commprefs.api.auth import ConsentDep, ReadCaller, TenancyDep, WriteCaller, api_actor
from commprefs.api.idempotency import idempotent
from commprefs.api.responses import JSON
from commprefs.api.wire import SubscriptionId, Text, check_batch_size, definition_json, v3_status_json
from commprefs.clock import now_ms
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import LegalBasis


class PublicUpdateSubscriptionStatusRequest(BaseModel):
    """Body of v3 subscribe, unsubscribe and resubscribe."""

    model_config = ConfigDict(extra="ignore")

    emailAddress: Text = Field(description="Contact's email address.")
    subscriptionId: SubscriptionId = Field(description="ID of the subscription being updated (string or number).")
    legalBasis: LegalBasis | None = None
    legalBasisExplanation: Text | None = None


async def get_definitions(caller: ReadCaller, tenancy: TenancyDep) -> Any:
    definitions = await tenancy.definitions(caller.portal_id)
    return JSON({"subscriptionDefinitions": [definition_json(d) for d in definitions]})


async def get_email_status(emailAddress: str, caller: ReadCaller, service: ConsentDep) -> Any:
    views = await service.statuses(caller.portal_id, normalize_email(emailAddress))
    return JSON({"recipient": emailAddress.strip(), "subscriptionStatuses": [v3_status_json(v) for v in views]})


class EmailAddresses(RootModel[list[StrictStr]]):
    """Body of the bulk status read: a JSON array of email addresses, at most 1,000."""


async def bulk_email_statuses(body: EmailAddresses, caller: ReadCaller, service: ConsentDep) -> Any:
    """The subscription statuses of up to 1,000 addresses, by address as given (HubSpot's v3 document of
    2024-03-18). The answer has no place for an error: an address that is not one is left out of it, and an
    address given twice is answered once."""
    check_batch_size(body.root, "body")
    accepted, _ = consent.normalize_inputs(body.root)
    found = await service.statuses_of(caller.portal_id, [address for _, _, address in accepted])
    statuses = {raw: [v3_status_json(v) for v in views] for (_, raw, _), views in zip(accepted, found, strict=True)}
    return JSON({"recipientToSubscriptionStatuses": statuses})


def _change(rule: Callable[[consent.Changes, consent.StatusInput], consent.Effective]) -> Callable[..., Any]:
    """The endpoint of a v3 change: `rule` (which decides the new state) applied to the body's subscription."""

    async def endpoint(
        body: PublicUpdateSubscriptionStatusRequest, request: Request, caller: WriteCaller, service: ConsentDep
    ) -> Any:
        change = consent.StatusInput(
            normalize_email(body.emailAddress),
            body.subscriptionId,
            legal_basis=body.legalBasis,
            legal_basis_explanation=body.legalBasisExplanation,
        )
        return await idempotent(
            request,
            caller,
            service,
            api_actor(request, caller),
            now_ms(),
            lambda changes: JSON(v3_status_json(rule(changes, change))),
            address=change.address,
        )

    endpoint.__doc__ = rule.__doc__
    return endpoint


def router(prefix: str, *, with_definitions: bool, with_bulk: bool = False) -> APIRouter:
    """v3's operations under `prefix`: for v3 itself, every one its documents list (the 2024-03-18 edition
    also lists resubscribe and the bulk status read, which integrations generated from it still call); for
    the dated versions, the status operations with resubscribe."""
    api = APIRouter(prefix=prefix, tags=[prefix.rsplit("/", 1)[-1]])
    if with_definitions:
        api.add_api_route(
            "/definitions", get_definitions, methods=["GET"], summary="Retrieve all subscription status definitions"
        )
    if with_bulk:
        api.add_api_route(
            "/status/email/bulk",
            bulk_email_statuses,
            methods=["POST"],
            summary="Get the subscription statuses of many email addresses",
        )
    api.add_api_route(
        "/status/email/{emailAddress:path}",
        get_email_status,
        methods=["GET"],
        summary="Get the subscription statuses of an email address",
    )
    api.add_api_route(
        "/subscribe",
        _change(consent.subscribe_v3),
        methods=["POST"],
        summary="Subscribe a contact to a subscription",
    )
    api.add_api_route(
        "/unsubscribe",
        _change(consent.unsubscribe_v3),
        methods=["POST"],
        summary="Unsubscribe a contact from a subscription",
    )
    api.add_api_route(
        "/resubscribe",
        _change(consent.resubscribe_v3),
        methods=["POST"],
        summary="Resubscribe a contact, lifting their opt-out from all in the subscription's scope",
    )
    return api
