"""Portals, brands, API tokens and subscription definitions: setting a portal up."""

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import replace

from commprefs.domain.enums import Scope
from commprefs.domain.errors import Conflict, NotFound, RuleViolation
from commprefs.domain.model import BusinessUnit, Definition, Portal, TokenInfo
from commprefs.store import Tx

TOKEN_PREFIX = "cp_"

# What a new HubSpot portal starts with (seen on live portals).
HUBSPOT_DEFAULT_DEFINITIONS = (
    ("Marketing Information", "Marketing offers and updates.", "Marketing", False),
    ("Customer Service Communication", "Receive feedback requests and customer service information.", "Service", True),
    ("One to One", "One to One emails", "Sales", True),
)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random_id(low: int, high: int) -> int:
    return low + secrets.randbelow(high - low)


def create_portal(tx: Tx, name: str, *, gdpr_enabled: bool, now: int, with_defaults: bool = True) -> Portal:
    """A new portal with its default brand (id 0) and, like HubSpot, its three default definitions."""
    portal_id = _random_id(10_000_000, 99_999_999)
    while tx.portals.portal_exists(portal_id):
        portal_id = _random_id(10_000_000, 99_999_999)
    tx.portals.insert_portal(portal_id, name, gdpr_enabled, secrets.token_urlsafe(32), secrets.token_urlsafe(32), now)
    tx.portals.insert_business_unit(portal_id, 0, name, now)
    if with_defaults:
        for order, (def_name, description, purpose, internal) in enumerate(HUBSPOT_DEFAULT_DEFINITIONS):
            # One millisecond apart, so that listings keep HubSpot's order.
            create_definition(
                tx,
                portal_id,
                def_name,
                description,
                purpose=purpose,
                is_internal=internal,
                is_default=True,
                now=now + order,
            )
    portal = tx.portals.get_portal(portal_id)
    assert portal is not None
    return portal


def update_portal(
    tx: Tx,
    portal_id: int,
    *,
    name: str | None = None,
    gdpr_enabled: bool | None = None,
    hubspot_strict: bool | None = None,
    default_language: str | None = None,
    public_base_url: str | None = None,
) -> Portal:
    values = {
        key: value
        for key, value in {
            "name": name,
            "gdpr_enabled": gdpr_enabled,
            "hubspot_strict": hubspot_strict,
            "default_language": default_language,
            "public_base_url": public_base_url,
        }.items()
        if value is not None
    }
    if public_base_url is not None and not public_base_url.startswith(("http://", "https://")):
        raise RuleViolation("the public URL must start with http:// or https://", field="publicBaseUrl")
    if values:
        tx.portals.update_portal(portal_id, **values)
    portal = tx.portals.get_portal(portal_id)
    if portal is None:
        raise NotFound(f"portal {portal_id} does not exist")
    return portal


def rotate_signing_secret(tx: Tx, portal_id: int) -> Portal:
    """A new secret for the portal's contact links: every link issued before stops working."""
    require_portal(tx, portal_id)
    tx.portals.update_portal(portal_id, signing_secret=secrets.token_urlsafe(32))
    return require_portal(tx, portal_id)


def require_portal(tx: Tx, portal_id: int) -> Portal:
    portal = tx.portals.get_portal(portal_id)
    if portal is None:
        raise NotFound(f"portal {portal_id} does not exist")
    return portal


def create_business_unit(tx: Tx, portal_id: int, name: str, now: int) -> BusinessUnit:
    require_portal(tx, portal_id)
    unit_id = tx.portals.max_business_unit_id(portal_id) + 1
    tx.portals.insert_business_unit(portal_id, unit_id, name, now)
    return BusinessUnit(portal_id, unit_id, name)


def rename_business_unit(tx: Tx, portal_id: int, unit_id: int, name: str) -> BusinessUnit:
    if tx.portals.get_business_unit(portal_id, unit_id) is None:
        raise NotFound(f"business unit {unit_id} does not exist", field="businessUnitId")
    tx.portals.rename_business_unit(portal_id, unit_id, name)
    return BusinessUnit(portal_id, unit_id, name)


def create_token(tx: Tx, portal_id: int, scopes: Iterable[Scope], name: str, now: int) -> tuple[TokenInfo, str]:
    """A new API token; the secret is returned once and only its SHA-256 is stored."""
    require_portal(tx, portal_id)
    scope_set = frozenset(scopes)
    if not scope_set:
        raise RuleViolation("a token needs at least one scope", field="scope")
    token_id = secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{secrets.token_urlsafe(32)}"
    tx.tokens.insert_token(token_id, portal_id, name, hash_token(secret), scope_set, now)
    return TokenInfo(token_id, name, portal_id, scope_set), secret


def create_definition(
    tx: Tx,
    portal_id: int,
    name: str,
    description: str,
    *,
    now: int,
    purpose: str = "",
    business_unit_id: int = 0,
    communication_method: str = "Email",
    is_internal: bool = False,
    is_default: bool = False,
    translations: Iterable[tuple[str, str, str]] = (),
) -> Definition:
    """A new subscription definition with a fresh id (below 2^31, as HubSpot's documents allow)."""
    require_portal(tx, portal_id)
    if tx.portals.get_business_unit(portal_id, business_unit_id) is None:
        raise NotFound(f"business unit {business_unit_id} does not exist", field="businessUnitId")
    _check_name_free(tx, portal_id, business_unit_id, name)
    definition_id = _random_id(100_000_000, 2_147_483_647)
    while tx.portals.definition_id_taken(portal_id, definition_id):
        definition_id = _random_id(100_000_000, 2_147_483_647)
    definition = Definition(
        portal_id=portal_id,
        id=definition_id,
        business_unit_id=business_unit_id,
        name=name,
        description=description,
        purpose=purpose,
        communication_method=communication_method,
        is_active=True,
        is_default=is_default,
        is_internal=is_internal,
        created_at=now,
        updated_at=now,
    )
    tx.portals.insert_definition(definition)
    for language, t_name, t_description in translations:
        tx.portals.upsert_translation(portal_id, definition_id, language, t_name, t_description, now)
    created = tx.portals.get_definition(portal_id, definition_id)
    assert created is not None
    return created


def update_definition(
    tx: Tx,
    portal_id: int,
    definition_id: int,
    *,
    now: int,
    name: str | None = None,
    description: str | None = None,
    purpose: str | None = None,
    communication_method: str | None = None,
    is_active: bool | None = None,
    is_internal: bool | None = None,
    translations: Iterable[tuple[str, str, str]] = (),
) -> Definition:
    current = tx.portals.get_definition(portal_id, definition_id)
    if current is None:
        raise NotFound(f"subscription {definition_id} does not exist", field="subscriptionId")
    if name is not None and name != current.name:
        _check_name_free(tx, portal_id, current.business_unit_id, name)
    changes = {
        key: value
        for key, value in {
            "name": name,
            "description": description,
            "purpose": purpose,
            "communication_method": communication_method,
            "is_active": is_active,
            "is_internal": is_internal,
        }.items()
        if value is not None
    }
    translations = list(translations)
    if changes or translations:
        tx.portals.update_definition(portal_id, definition_id, updated_at=now, **changes)
    for language, t_name, t_description in translations:
        tx.portals.upsert_translation(portal_id, definition_id, language, t_name, t_description, now)
    updated = tx.portals.get_definition(portal_id, definition_id)
    assert updated is not None
    return updated


def remove_translation(tx: Tx, portal_id: int, definition_id: int, language: str, now: int) -> Definition:
    current = tx.portals.get_definition(portal_id, definition_id)
    if current is None:
        raise NotFound(f"subscription {definition_id} does not exist", field="subscriptionId")
    if not any(t.language_code == language for t in current.translations):
        raise NotFound(f"subscription {definition_id} has no {language!r} translation", field="languageCode")
    tx.portals.delete_translation(portal_id, definition_id, language)
    tx.portals.update_definition(portal_id, definition_id, updated_at=now)
    return replace(current, translations=tuple(t for t in current.translations if t.language_code != language))


def _check_name_free(tx: Tx, portal_id: int, business_unit_id: int, name: str) -> None:
    if not name.strip():
        raise RuleViolation("name must not be empty", field="name")
    for existing in tx.portals.list_definitions(portal_id, business_unit_id=business_unit_id):
        if existing.name.casefold() == name.casefold():
            raise Conflict(f"a subscription named {name!r} already exists (id {existing.id})", field="name")
