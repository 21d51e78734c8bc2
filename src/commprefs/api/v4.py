"""HubSpot's v4 Communication Preferences API (and the dated versions that carry it): definitions,
per-channel statuses, opt-outs from all, and batches of up to 1,000 inputs."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from commprefs import consent, links
from commprefs.api.auth import ReadCaller, StoreDep, WriteCaller, require_scope, require_scopes
from commprefs.api.errors import ApiError, field_error
from commprefs.api.idempotency import idempotent
from commprefs.api.responses import JSON
from commprefs.api.v3 import api_actor
from commprefs.api.wire import (
    INT64_MAX,
    SubscriptionId,
    Text,
    batch_error,
    definition_json,
    envelope,
    public_status_json,
    wide_status_json,
)
from commprefs.clock import now_ms
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Channel, LegalBasis, Scope, Status
from commprefs.domain.errors import DomainError, InvalidEmail
from commprefs.domain.model import TokenInfo

MAX_BATCH = 1000

BatchReadCaller = Annotated[TokenInfo, Depends(require_scope(Scope.BATCH_READ))]
BatchWriteCaller = Annotated[TokenInfo, Depends(require_scope(Scope.BATCH_WRITE))]
LinksCaller = Annotated[
    TokenInfo, Depends(require_scopes(frozenset({Scope.READ, Scope.WRITE}), frozenset({Scope.READ_WRITE})))
]
ChannelQuery = Annotated[Channel, Query(description="The channel: EMAIL.")]
BusinessUnitQuery = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description="A brand; without it, the whole portal.")
]
VerboseQuery = Annotated[bool, Query(description="Return the affected statuses.")]


class PartialPublicStatusRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    statusState: Status
    subscriptionId: SubscriptionId
    channel: Channel
    legalBasis: LegalBasis | None = None
    legalBasisExplanation: Text | None = None


class PublicStatusRequest(PartialPublicStatusRequest):
    # Any string: whether it is an address is a rule (normalize_email), answered per input in a batch.
    subscriberIdString: StrictStr = Field(description="The contact's email address.")


# A batch body is checked whole, as HubSpot's deserializer does: an input that does not match the
# schema (a missing field, a wrong type, an unknown enum value) is a 400 for the call, naming it as
# `inputs[i].field`, and nothing is written. Only well-formed inputs that a rule refuses (an invalid
# address, an unknown or inactive subscription) are per-input errors in a 207.
class BatchInputString(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: list[StrictStr] = Field(description=f"Email addresses, at most {MAX_BATCH}.")


class BatchInputPublicStatusRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: list[PublicStatusRequest] = Field(description=f"Status changes, at most {MAX_BATCH}.")


class LinkGenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subscriberIdString: Text = Field(description="The contact's email address.")
    language: Text | None = Field(
        None,
        max_length=16,
        pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
        description="Language of the pages (en, de, fr; a subscription's translation where present).",
    )
    subscriptionId: SubscriptionId | None = Field(None, description="Adds an unsubscribeSingleUrl for it.")


def _check_size(inputs: list[Any]) -> None:
    if len(inputs) > MAX_BATCH:
        message = f"inputs holds {len(inputs)} items; a batch takes at most {MAX_BATCH}"
        raise ApiError(400, message, errors=[field_error(message, "inputs", "TOO_MANY")])


# -- single subscriber ----------------------------------------------------------------------------


async def get_definitions(
    caller: ReadCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
    includeTranslations: bool = False,
) -> Any:
    started = now_ms()
    definitions = await store.aread(
        lambda tx: tx.list_definitions(
            caller.portal_id, business_unit_id=businessUnitId, with_translations=includeTranslations
        )
    )
    return JSON(envelope([definition_json(d, with_translations=includeTranslations) for d in definitions], started))


async def get_statuses(
    subscriberIdString: str,
    channel: ChannelQuery,
    request: Request,
    caller: ReadCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    started = now_ms()
    address = normalize_email(subscriberIdString)
    actor = api_actor(request, caller)
    found = await store.aread(
        lambda tx: consent.apply(
            tx, caller.portal_id, actor, started, consent.Changes.statuses, address, businessUnitId
        ),
        subscriber=(caller.portal_id, channel, address),
    )
    return JSON(envelope([public_status_json(s, subscriberIdString) for s in found], started))


async def set_status(
    subscriberIdString: str, body: PartialPublicStatusRequest, request: Request, caller: WriteCaller, store: StoreDep
) -> Any:
    started = now_ms()
    change = consent.StatusInput(
        normalize_email(subscriberIdString),
        body.subscriptionId,
        body.statusState,
        body.legalBasis,
        body.legalBasisExplanation,
    )
    actor = api_actor(request, caller)

    def work(tx: Any) -> JSON:
        result = consent.apply(tx, caller.portal_id, actor, started, consent.set_status, change)
        return JSON(envelope([public_status_json(result, subscriberIdString)], started))

    return await idempotent(request, caller, store, work, subscriber=(caller.portal_id, Channel.EMAIL, change.address))


async def get_unsubscribe_all(
    subscriberIdString: str,
    channel: ChannelQuery,
    caller: ReadCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    started = now_ms()
    address = normalize_email(subscriberIdString)
    subscriber = await store.aread(
        lambda tx: tx.get_subscriber(caller.portal_id, address, channel),
        subscriber=(caller.portal_id, channel, address),
    )
    rows = consent.wide_statuses(subscriber, businessUnitId)
    return JSON(envelope([wide_status_json(w, subscriberIdString) for w in rows], started))


async def unsubscribe_all(
    subscriberIdString: str,
    channel: ChannelQuery,
    request: Request,
    caller: WriteCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    started = now_ms()
    address = normalize_email(subscriberIdString)
    actor = api_actor(request, caller)

    def work(tx: Any) -> JSON:
        affected = consent.apply(
            tx, caller.portal_id, actor, started, consent.unsubscribe_from_all, address, businessUnitId
        )
        results = [public_status_json(s, subscriberIdString) for s in affected] if verbose else []
        return JSON(envelope(results, started))

    return await idempotent(request, caller, store, work, subscriber=(caller.portal_id, channel, address))


async def generate_links(
    body: LinkGenerationRequest,
    channel: ChannelQuery,
    request: Request,
    caller: LinksCaller,
    store: StoreDep,
    businessUnitId: Annotated[int, Query(ge=0, le=INT64_MAX, description="The brand whose pages the links open.")] = 0,
) -> Any:
    """Signed links to the contact's preference page, unsubscribe-all and (with a subscriptionId)
    single-unsubscribe pages; each also takes an RFC 8058 one-click POST where it unsubscribes."""
    address = normalize_email(body.subscriberIdString, field="subscriberIdString")
    made = await store.aread(
        lambda tx: links.issue(
            tx,
            caller.portal_id,
            address,
            business_unit_id=businessUnitId,
            language=body.language,
            subscription_id=body.subscriptionId,
            configured_url=request.app.state.settings.public_url,
            fallback_url=str(request.base_url),
        )
    )
    result = {
        "subscriberIdString": body.subscriberIdString,
        "managePreferencesUrl": made.manage,
        "unsubscribeAllUrl": made.unsubscribe_all,
    }
    if made.unsubscribe_one is not None:
        result["unsubscribeSingleUrl"] = made.unsubscribe_one
    return JSON(result)


# -- batches --------------------------------------------------------------------------------------


def _batch_json(results: list[Any], errors: list[dict[str, Any]], started: int) -> JSON:
    return JSON(envelope(results, started, errors), status_code=207 if errors else 200)


async def batch_read(
    body: BatchInputString,
    channel: ChannelQuery,
    request: Request,
    caller: BatchReadCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    """Statuses of up to 1,000 addresses; an address given twice is answered once."""
    started = now_ms()
    _check_size(body.inputs)
    accepted, refused = consent.normalize_inputs(body.inputs)
    actor = api_actor(request, caller)

    def read(tx: Any) -> list[tuple[str, list[consent.Effective]]]:
        changes = consent.Changes(tx, caller.portal_id, actor, started, channel)
        changes.load(address for _, _, address in accepted)
        return [(raw, changes.statuses(address, businessUnitId)) for _, raw, address in accepted]

    found = await store.aread(read)
    results = [
        {"subscriberIdString": raw, "statuses": [public_status_json(s, raw) for s in statuses]}
        for raw, statuses in found
    ]
    return _batch_json(results, [batch_error(r.error, r.index, r.raw) for r in refused], started)


async def batch_read_unsubscribe_all(
    body: BatchInputString,
    channel: ChannelQuery,
    caller: BatchReadCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    """Opt-out-from-all records of up to 1,000 addresses."""
    started = now_ms()
    _check_size(body.inputs)
    accepted, refused = consent.normalize_inputs(body.inputs)
    subscribers = await store.aread(
        lambda tx: tx.get_subscribers(caller.portal_id, [address for _, _, address in accepted], channel)
    )
    results = [
        {
            "subscriberIdString": raw,
            "wideStatuses": [
                wide_status_json(w, raw) for w in consent.wide_statuses(subscribers[address], businessUnitId)
            ],
        }
        for _, raw, address in accepted
    ]
    return _batch_json(results, [batch_error(r.error, r.index, r.raw) for r in refused], started)


async def batch_unsubscribe_all(
    body: BatchInputString,
    channel: ChannelQuery,
    request: Request,
    caller: BatchWriteCaller,
    store: StoreDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    """Opt up to 1,000 addresses out of all email, portal-wide or for one brand."""
    started = now_ms()
    _check_size(body.inputs)
    accepted, refused = consent.normalize_inputs(body.inputs)
    actor = api_actor(request, caller)

    def work(tx: Any) -> JSON:
        changes = consent.Changes(tx, caller.portal_id, actor, started, channel)
        changes.load(address for _, _, address in accepted)
        results = []
        for _, raw, address in accepted:
            affected = consent.unsubscribe_from_all(changes, address, businessUnitId)
            item: dict[str, Any] = {"subscriberIdString": raw}
            if verbose:
                item["statuses"] = [public_status_json(s, raw) for s in affected]
            results.append(item)
        changes.flush()
        return _batch_json(results, [batch_error(r.error, r.index, r.raw) for r in refused], started)

    return await idempotent(request, caller, store, work)


def _status_input(item: PublicStatusRequest) -> consent.StatusInput | DomainError:
    """One well-formed input as a change, or the refusal of its address (that input's error)."""
    try:
        address = normalize_email(item.subscriberIdString, field="subscriberIdString")
    except InvalidEmail as exc:
        return exc
    return consent.StatusInput(
        address, item.subscriptionId, item.statusState, item.legalBasis, item.legalBasisExplanation
    )


async def batch_write(
    body: BatchInputPublicStatusRequest, request: Request, caller: BatchWriteCaller, store: StoreDep
) -> Any:
    """Up to 1,000 status changes, applied in input order (a later input sees the earlier ones),
    each on its own: an input a rule refuses is reported in `errors` and the others are applied."""
    started = now_ms()
    _check_size(body.inputs)
    parsed = [(item.subscriberIdString, _status_input(item)) for item in body.inputs]
    actor = api_actor(request, caller)

    def work(tx: Any) -> JSON:
        changes = consent.Changes(tx, caller.portal_id, actor, started)
        outcomes = consent.write_batch(changes, parsed)
        changes.flush()
        results, errors = [], []
        for index, raw, outcome in outcomes:
            if isinstance(outcome, DomainError):
                errors.append(batch_error(outcome, index, raw))
            else:
                results.append(public_status_json(outcome, raw))
        return _batch_json(results, errors, started)

    return await idempotent(request, caller, store, work)


def router(prefix: str) -> APIRouter:
    """The v4 operations under `prefix` (v4 itself and each dated version)."""
    api = APIRouter(prefix=prefix, tags=[prefix.rsplit("/", 1)[-1]])
    routes: list[tuple[str, Any, str, str]] = [
        ("/definitions", get_definitions, "GET", "Subscription definitions, by brand, with translations"),
        ("/statuses/batch/read", batch_read, "POST", "Statuses of many subscribers"),
        ("/statuses/batch/write", batch_write, "POST", "Set many statuses"),
        ("/statuses/batch/unsubscribe-all", batch_unsubscribe_all, "POST", "Opt many subscribers out of all"),
        ("/statuses/batch/unsubscribe-all/read", batch_read_unsubscribe_all, "POST", "Opt-out-from-all records"),
        ("/statuses/{subscriberIdString}/unsubscribe-all", get_unsubscribe_all, "GET", "Opt-out-from-all records"),
        ("/statuses/{subscriberIdString}/unsubscribe-all", unsubscribe_all, "POST", "Opt out of all email"),
        ("/statuses/{subscriberIdString}", get_statuses, "GET", "A subscriber's statuses"),
        ("/statuses/{subscriberIdString}", set_status, "POST", "Set one subscription's status"),
        ("/links/generate", generate_links, "POST", "Signed preference and unsubscribe links"),
    ]
    for path, endpoint, method, summary in routes:
        api.add_api_route(path, endpoint, methods=[method], summary=summary)
    return api
