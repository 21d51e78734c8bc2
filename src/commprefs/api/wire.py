"""Domain values in HubSpot's wire shapes, shared by every API version."""

from typing import Annotated, Any

from pydantic import BeforeValidator

from commprefs.clock import iso
from commprefs.consent import V3View
from commprefs.domain.model import Definition

INT64_MAX = 2**63 - 1


def _subscription_id(value: object) -> int:
    """HubSpot documents a string id and accepts a number; both mean the same definition."""
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


def v3_status_json(view: V3View) -> dict[str, Any]:
    definition = view.definition
    body: dict[str, Any] = {
        "id": str(definition.id),
        "name": definition.name,
        "description": definition.description,
        "status": view.status.value,
        "sourceOfStatus": view.source_of_status.value,
        "brandId": definition.business_unit_id,
    }
    if view.legal_basis is not None:
        body["legalBasis"] = view.legal_basis.value
    if view.legal_basis_explanation is not None:
        body["legalBasisExplanation"] = view.legal_basis_explanation
    return body
