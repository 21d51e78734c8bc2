"""commprefs' own admin API (/commprefs/v1, scope commprefs.admin): set a portal up over HTTP."""

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from commprefs.api.auth import AdminCaller, TenancyDep
from commprefs.api.responses import JSON
from commprefs.api.wire import Id, IdPath, Text, definition_json
from commprefs.domain.model import BusinessUnit, Portal

router = APIRouter(prefix="/commprefs/v1", tags=["admin"])
Language = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{2,16}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranslationIn(_Body):
    languageCode: Text = Field(min_length=2, max_length=16)
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field(max_length=10_000)


class DefinitionCreate(_Body):
    name: Text = Field(min_length=1, max_length=200)
    description: Text = Field("", max_length=10_000)
    purpose: Text = Field("", max_length=200)
    communicationMethod: Text = Field("Email", max_length=50)
    businessUnitId: Id = 0
    isInternal: StrictBool = False
    translations: list[TranslationIn] = Field(default_factory=list, max_length=200)


class DefinitionUpdate(_Body):
    name: Text | None = Field(None, min_length=1, max_length=200)
    description: Text | None = Field(None, max_length=10_000)
    purpose: Text | None = Field(None, max_length=200)
    communicationMethod: Text | None = Field(None, max_length=50)
    isActive: StrictBool | None = None
    isInternal: StrictBool | None = None
    translations: list[TranslationIn] = Field(default_factory=list, max_length=200)


class PortalUpdate(_Body):
    name: Text | None = Field(None, min_length=1, max_length=200)
    gdprEnabled: StrictBool | None = None
    hubspotStrict: StrictBool | None = None
    defaultLanguage: Text | None = Field(None, min_length=2, max_length=16)
    publicBaseUrl: Text | None = Field(None, pattern=r"^https?://", max_length=500)


class BusinessUnitIn(_Body):
    name: Text = Field(min_length=1, max_length=200)


def portal_json(portal: Portal) -> dict[str, Any]:
    return {
        "id": portal.id,
        "name": portal.name,
        "gdprEnabled": portal.gdpr_enabled,
        "hubspotStrict": portal.hubspot_strict,
        "defaultLanguage": portal.default_language,
        "publicBaseUrl": portal.public_base_url,
    }


def unit_json(unit: BusinessUnit) -> dict[str, Any]:
    return {"id": unit.id, "name": unit.name}


def _translations(items: list[TranslationIn]) -> list[tuple[str, str, str]]:
    return [(t.languageCode.lower(), t.name, t.description) for t in items]


@router.get("/portal", summary="This token's portal and its settings")
async def get_portal(caller: AdminCaller, tenancy: TenancyDep) -> Any:
    return JSON(portal_json(await tenancy.require_portal(caller.portal_id)))


@router.patch("/portal", summary="Change the portal's settings")
async def patch_portal(body: PortalUpdate, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    portal = await tenancy.update_portal(
        caller.portal_id,
        name=body.name,
        gdpr_enabled=body.gdprEnabled,
        hubspot_strict=body.hubspotStrict,
        default_language=body.defaultLanguage,
        public_base_url=body.publicBaseUrl,
    )
    return JSON(portal_json(portal))


@router.post("/portal/rotate-link-secret", summary="New secret for contact links; earlier links stop working")
async def rotate_link_secret(caller: AdminCaller, tenancy: TenancyDep) -> Any:
    portal = await tenancy.rotate_link_secret(caller.portal_id)
    return JSON(portal_json(portal))


@router.get("/business-units", summary="List the portal's brands")
async def list_business_units(caller: AdminCaller, tenancy: TenancyDep) -> Any:
    units = await tenancy.business_units(caller.portal_id)
    return JSON({"results": [unit_json(u) for u in units]})


@router.post("/business-units", summary="Create a brand", status_code=201)
async def create_business_unit(body: BusinessUnitIn, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    unit = await tenancy.create_business_unit(caller.portal_id, body.name)
    return JSON(unit_json(unit), status_code=201)


@router.patch("/business-units/{unit_id}", summary="Rename a brand")
async def rename_business_unit(unit_id: IdPath, body: BusinessUnitIn, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    unit = await tenancy.rename_business_unit(caller.portal_id, unit_id, body.name)
    return JSON(unit_json(unit))


@router.get("/definitions", summary="List subscription definitions, with translations")
async def list_definitions(caller: AdminCaller, tenancy: TenancyDep) -> Any:
    definitions = await tenancy.definitions(caller.portal_id, with_translations=True)
    return JSON({"results": [definition_json(d, with_translations=True) for d in definitions]})


@router.post("/definitions", summary="Create a subscription definition", status_code=201)
async def create_definition(body: DefinitionCreate, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    definition = await tenancy.create_definition(
        caller.portal_id,
        body.name,
        body.description,
        purpose=body.purpose,
        business_unit_id=body.businessUnitId,
        communication_method=body.communicationMethod,
        is_internal=body.isInternal,
        translations=_translations(body.translations),
    )
    return JSON(definition_json(definition, with_translations=True), status_code=201)


@router.get("/definitions/{definition_id}", summary="One subscription definition")
async def get_definition(definition_id: IdPath, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    definition = await tenancy.definition(caller.portal_id, definition_id)
    return JSON(definition_json(definition, with_translations=True))


@router.patch("/definitions/{definition_id}", summary="Change a subscription definition")
async def update_definition(
    definition_id: IdPath, body: DefinitionUpdate, caller: AdminCaller, tenancy: TenancyDep
) -> Any:
    definition = await tenancy.update_definition(
        caller.portal_id,
        definition_id,
        name=body.name,
        description=body.description,
        purpose=body.purpose,
        communication_method=body.communicationMethod,
        is_active=body.isActive,
        is_internal=body.isInternal,
        translations=_translations(body.translations),
    )
    return JSON(definition_json(definition, with_translations=True))


@router.post("/definitions/{definition_id}/deactivate", summary="Archive a definition (statuses are kept)")
async def deactivate_definition(definition_id: IdPath, caller: AdminCaller, tenancy: TenancyDep) -> Any:
    definition = await tenancy.update_definition(caller.portal_id, definition_id, is_active=False)
    return JSON(definition_json(definition, with_translations=True))


@router.delete("/definitions/{definition_id}/translations/{language}", summary="Remove one translation")
async def delete_translation(
    definition_id: IdPath, language: Language, caller: AdminCaller, tenancy: TenancyDep
) -> Any:
    definition = await tenancy.remove_translation(caller.portal_id, definition_id, language.lower())
    return JSON(definition_json(definition, with_translations=True))
