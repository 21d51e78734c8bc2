"""Domain values in HubSpot's wire shapes, shared by every API version."""

from typing import Annotated, Any

from fastapi import Path as PathParam
from pydantic import AfterValidator, BeforeValidator, Field, StrictStr

from commprefs.api.errors import CATEGORY_BY_STATUS, ApiError, domain_status, field_error
from commprefs.clock import iso, now_ms
from commprefs.consent import Effective
from commprefs.domain.enums import Channel
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Definition, WideStatus

INT64_MAX = 2**63 - 1


def no_nul(value: str) -> str:
    """PostgreSQL cannot store NUL in text, and no name or explanation needs one."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every free-text field of a request body: a JSON string, without NUL characters.
Text = Annotated[StrictStr, AfterValidator(no_nul)]
# Numeric ids (definitions, brands) in bodies and paths (queries: le=INT64_MAX): the stores keep 64-bit integers, so a
# larger number cannot name anything and is refused as input (it reached the driver as a 500 before).
Id = Annotated[int, Field(ge=0, le=INT64_MAX)]
IdPath = Annotated[int, PathParam(ge=0, le=INT64_MAX)]
# The ids commprefs hands out (ep_..., imp_...) in paths: anything else cannot name one.
ObjectId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def _subscription_id(value: object) -> int:
    """HubSpot documents a string id in v3 and a number in v4, and accepts both; so do we."""
    if isinstance(value, bool):
        raise ValueError("must be a subscription id (digits)")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError("must be a subscription id (digits)")
    if not 0 < number <= INT64_MAX:
        raise ValueError("must be a positive 64-bit subscription id")
    return number


SubscriptionId = Annotated[int, BeforeValidator(_subscription_id)]


def definition_json(definition: Definition, *, with_translations: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(definition.id),
        "name": definition.name,
        "description": definition.description,
        "purpose": definition.purpose,
        "communicationMethod": definition.communication_method,
        "isActive": definition.is_active,
        "isDefault": definition.is_default,
        "isInternal": definition.is_internal,
        "createdAt": iso(definition.created_at),
        "updatedAt": iso(definition.updated_at),
        "businessUnitId": definition.business_unit_id,
    }
    if with_translations:
        body["subscriptionTranslations"] = [
            {
                "subscriptionId": definition.id,
                "languageCode": t.language_code,
                "name": t.name,
                "description": t.description,
                "createdAt": t.created_at,
                "updatedAt": t.updated_at,
            }
            for t in definition.translations
        ]
    return body


def v3_status_json(status: Effective) -> dict[str, Any]:
    definition = status.definition
    body: dict[str, Any] = {
        "id": str(definition.id),
        "name": definition.name,
        "description": definition.description,
        "status": status.v3_status.value,
        "sourceOfStatus": status.source_of_status.value,
        "brandId": definition.business_unit_id,
    }
    if status.legal_basis is not None:
        body["legalBasis"] = status.legal_basis.value
    if status.legal_basis_explanation is not None:
        body["legalBasisExplanation"] = status.legal_basis_explanation
    return body


def public_status_json(status: Effective, subscriber_id: str, channel: Channel = Channel.EMAIL) -> dict[str, Any]:
    """v4's PublicStatus. Optional fields without a value are left out: HubSpot's documents do
    not mark them nullable, so an explicit null would break strict clients.

    The enums are left as they are (StrEnum members are strings, and JSON writes their values): a batch read
    makes five thousand of these, and reading an enum member's `.value` costs as much as the rest of a field."""
    definition = status.definition
    body: dict[str, Any] = {
        "subscriberIdString": subscriber_id,
        "subscriptionId": definition.id,
        "subscriptionName": definition.name,
        "channel": channel,
        "status": status.status,
        "source": status.source,
        "timestamp": iso(status.timestamp),
        "businessUnitId": definition.business_unit_id,
    }
    if status.legal_basis is not None:
        body["legalBasis"] = status.legal_basis
    if status.legal_basis_explanation is not None:
        body["legalBasisExplanation"] = status.legal_basis_explanation
    if status.reason is not None:
        body["setStatusSuccessReason"] = status.reason
    return body


def wide_status_json(wide: WideStatus, subscriber_id: str, channel: Channel = Channel.EMAIL) -> dict[str, Any]:
    return {
        "subscriberIdString": subscriber_id,
        "wideStatusType": wide.scope.value,
        "businessUnitId": wide.business_unit_id,
        "channel": channel,
        "status": wide.status.value,
        "timestamp": iso(wide.updated_at),
    }


MAX_BATCH = 1000


def check_batch_size(inputs: list[Any], field: str = "inputs") -> None:
    """A batch takes at most MAX_BATCH inputs: more is a 400 for the whole call, naming the field."""
    if len(inputs) > MAX_BATCH:
        message = f"{field} holds {len(inputs)} items; a batch takes at most {MAX_BATCH}"
        raise ApiError(400, message, errors=[field_error(message, field, "TOO_MANY")])


def envelope(results: list[Any], started_at: int, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """HubSpot's ActionResponse/BatchResponse envelope (always COMPLETE: work is synchronous)."""
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "requestedAt": iso(started_at),
        "startedAt": iso(started_at),
        "completedAt": iso(now_ms()),
    }
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    return body


def batch_error(error: DomainError, index: int, raw: str, **context: list[str]) -> dict[str, Any]:
    """One input's refusal, as HubSpot's StandardError."""
    return {
        "status": "error",
        "category": CATEGORY_BY_STATUS[domain_status(error)],
        "message": error.message,
        "context": {"inputIndex": [str(index)], "subscriberIdString": [raw], **context},
        "errors": [{"message": error.message, "in": error.field or "inputs", "code": "INVALID"}],
        "links": {},
    }
