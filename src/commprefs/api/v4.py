"""HubSpot's v4 Communication Preferences API (and the dated versions that carry it): definitions,
per-channel statuses, opt-outs from all, and batches of up to 1,000 inputs."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from commprefs import consent
from commprefs.api.auth import (
    ConsentDep,
    ReadCaller,
    TenancyDep,
    WriteCaller,
    api_actor,
    require_scope,
    require_scopes,
)
from commprefs.api.idempotency import idempotent
from commprefs.api.responses import JSON
from commprefs.api.wire import (
    INT64_MAX,
    MAX_BATCH,
    SubscriptionId,
    Text,
    batch_error,
    check_batch_size,
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

T = TypeVar("T")

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


def _accepted(inputs: list[str]) -> tuple[list[tuple[int, str, str]], list[dict[str, Any]]]:
    """A batch of addresses: at most MAX_BATCH (400 otherwise), the valid ones once each as (index, raw,
    normalised), and the invalid ones as the batch's per-input errors."""
    check_batch_size(inputs)
    accepted, refused = consent.normalize_inputs(inputs)
    return accepted, [batch_error(r.error, r.index, r.raw) for r in refused]


# -- single subscriber ----------------------------------------------------------------------------


async def get_definitions(
    caller: ReadCaller,
    tenancy: TenancyDep,
    businessUnitId: BusinessUnitQuery = None,
    includeTranslations: bool = False,
) -> Any:
    started = now_ms()
    definitions = await tenancy.definitions(
        caller.portal_id, business_unit_id=businessUnitId, with_translations=includeTranslations
    )
    return JSON(envelope([definition_json(d, with_translations=includeTranslations) for d in definitions], started))


async def get_statuses(
    subscriberIdString: str,
    channel: ChannelQuery,
    caller: ReadCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    started = now_ms()
    found = await service.statuses(caller.portal_id, normalize_email(subscriberIdString), channel, businessUnitId)
    return JSON(envelope([public_status_json(s, subscriberIdString, channel) for s in found], started))


async def set_status(
    subscriberIdString: str,
    body: PartialPublicStatusRequest,
    request: Request,
    caller: WriteCaller,
    service: ConsentDep,
) -> Any:
    started = now_ms()
    change = consent.StatusInput(
        normalize_email(subscriberIdString),
        body.subscriptionId,
        body.statusState,
        body.legalBasis,
        body.legalBasisExplanation,
    )

    def plan(changes: consent.Changes) -> JSON:
        result = consent.set_status(changes, change)
        return JSON(envelope([public_status_json(result, subscriberIdString, body.channel)], started))

    actor = api_actor(request, caller)
    return await idempotent(request, caller, service, actor, started, plan, address=change.address)


async def get_unsubscribe_all(
    subscriberIdString: str,
    channel: ChannelQuery,
    caller: ReadCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    started = now_ms()
    rows = await service.opt_outs(caller.portal_id, normalize_email(subscriberIdString), channel, businessUnitId)
    return JSON(envelope([wide_status_json(w, subscriberIdString, channel) for w in rows], started))


async def unsubscribe_all(
    subscriberIdString: str,
    channel: ChannelQuery,
    request: Request,
    caller: WriteCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    started = now_ms()
    address = normalize_email(subscriberIdString)

    def plan(changes: consent.Changes) -> JSON:
        affected = consent.unsubscribe_from_all(changes, address, businessUnitId)
        results = [public_status_json(s, subscriberIdString, channel) for s in affected] if verbose else []
        return JSON(envelope(results, started))

    actor = api_actor(request, caller)
    return await idempotent(request, caller, service, actor, started, plan, channel=channel, address=address)


async def generate_links(
    body: LinkGenerationRequest,
    channel: ChannelQuery,
    request: Request,
    caller: LinksCaller,
    service: ConsentDep,
    businessUnitId: Annotated[int, Query(ge=0, le=INT64_MAX, description="The brand whose pages the links open.")] = 0,
) -> Any:
    """Signed links to the contact's preference page, unsubscribe-all and (with a subscriptionId)
    single-unsubscribe pages; each also takes an RFC 8058 one-click POST where it unsubscribes."""
    made = await service.links(
        caller.portal_id,
        normalize_email(body.subscriberIdString, field="subscriberIdString"),
        business_unit_id=businessUnitId,
        language=body.language,
        subscription_id=body.subscriptionId,
        configured_url=request.app.state.settings.public_url,
        fallback_url=str(request.base_url),
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


def _per_address(
    accepted: Sequence[tuple[int, str, str]], found: Sequence[Any], item: Callable[[str, Any], dict[str, Any]]
) -> list[dict[str, Any]]:
    """A batch's results: `item` of each accepted input (its raw string) and what was found for its address."""
    return [item(raw, each) for (_, raw, _), each in zip(accepted, found, strict=True)]


async def _read_batch(
    inputs: list[str],
    read: Callable[[list[str]], Awaitable[Sequence[T]]],
    item: Callable[[str, T], dict[str, Any]],
) -> JSON:
    """A batch read: its addresses checked, `read` of the valid ones, `item` of each, the invalid ones' errors."""
    started = now_ms()
    accepted, errors = _accepted(inputs)
    found = await read([address for _, _, address in accepted])
    return _batch_json(_per_address(accepted, found, item), errors, started)


async def batch_read(
    body: BatchInputString,
    channel: ChannelQuery,
    caller: BatchReadCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    """Statuses of up to 1,000 addresses; an address given twice is answered once."""
    return await _read_batch(
        body.inputs,
        lambda addresses: service.statuses_of(caller.portal_id, addresses, channel, businessUnitId),
        lambda raw, statuses: {
            "subscriberIdString": raw,
            "statuses": [public_status_json(s, raw, channel) for s in statuses],
        },
    )


async def batch_read_unsubscribe_all(
    body: BatchInputString,
    channel: ChannelQuery,
    caller: BatchReadCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
) -> Any:
    """Opt-out-from-all records of up to 1,000 addresses."""
    return await _read_batch(
        body.inputs,
        lambda addresses: service.opt_outs_of(caller.portal_id, addresses, channel, businessUnitId),
        lambda raw, rows: {
            "subscriberIdString": raw,
            "wideStatuses": [wide_status_json(w, raw, channel) for w in rows],
        },
    )


async def batch_unsubscribe_all(
    body: BatchInputString,
    channel: ChannelQuery,
    request: Request,
    caller: BatchWriteCaller,
    service: ConsentDep,
    businessUnitId: BusinessUnitQuery = None,
    verbose: VerboseQuery = False,
) -> Any:
    """Opt up to 1,000 addresses out of all email, portal-wide or for one brand."""
    started = now_ms()
    accepted, errors = _accepted(body.inputs)

    def plan(changes: consent.Changes) -> JSON:
        changes.load(address for _, _, address in accepted)
        affected = [consent.unsubscribe_from_all(changes, address, businessUnitId) for _, _, address in accepted]

        def item(raw: str, statuses: list[consent.Effective]) -> dict[str, Any]:
            shown: dict[str, Any] = {"subscriberIdString": raw}
            if verbose:
                shown["statuses"] = [public_status_json(s, raw, channel) for s in statuses]
            return shown

        return _batch_json(_per_address(accepted, affected, item), errors, started)

    actor = api_actor(request, caller)
    return await idempotent(request, caller, service, actor, started, plan, channel=channel)


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
    body: BatchInputPublicStatusRequest, request: Request, caller: BatchWriteCaller, service: ConsentDep
) -> Any:
    """Up to 1,000 status changes, applied in input order (a later input sees the earlier ones),
    each on its own: an input a rule refuses is reported in `errors` and the others are applied."""
    started = now_ms()
    check_batch_size(body.inputs)
    parsed = [(item.subscriberIdString, _status_input(item)) for item in body.inputs]

    def plan(changes: consent.Changes) -> JSON:
        results, errors = [], []
        for index, raw, outcome in consent.write_batch(changes, parsed):
            if isinstance(outcome, DomainError):
                errors.append(batch_error(outcome, index, raw))
            else:
                results.append(public_status_json(outcome, raw))
        return _batch_json(results, errors, started)

    actor = api_actor(request, caller)
    return await idempotent(request, caller, service, actor, started, plan)


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
    # An earlier v4 document's spelling of the batch opt-out, which older integrations still call: the same
    # operation, left out of the served document.
    api.add_api_route(
        "/statuses/batch/unsubscribe-all/write", batch_unsubscribe_all, methods=["POST"], include_in_schema=False
    )
    return api
