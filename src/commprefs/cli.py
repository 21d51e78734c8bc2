"""The `commprefs` command: serve, and set portals, tokens and definitions up."""

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

import click
import uvicorn

from commprefs import __version__, links, tenancy, webhooks
from commprefs.clock import iso, now_ms
from commprefs.config import get_settings
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import SCOPE_ALIASES, Scope, parse_scope
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Portal
from commprefs.events import EventType
from commprefs.logs import log_config
from commprefs.store import Store, Tx

T = TypeVar("T")


@contextmanager
def _store() -> Iterator[Store]:
    store = Store(get_settings().database_url)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def _run(work: Callable[[Tx], T]) -> T:
    """Run one transaction against the configured database; rule violations become CLI errors."""
    with _store() as store, store.transaction() as tx:
        try:
            return work(tx)
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="commprefs")
def main() -> None:
    """commprefs: HubSpot's Communication Preferences API, self-hosted.

    Every command uses the database in COMMPREFS_DATABASE_URL (default sqlite:///commprefs.db).
    """


@main.command()
@click.option("--host", default=None, help="Address to listen on [default: COMMPREFS_HOST or 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [default: COMMPREFS_PORT or 8080].")
@click.option("--workers", type=int, default=None, help="API processes [default: COMMPREFS_WORKERS or 1].")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate the database, then serve the API (creating a demo portal on an empty database)."""
    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    workers = workers or settings.workers
    base = f"http://{host}:{port}"
    with _store() as store:
        click.echo(f"commprefs {__version__} on {_redacted(settings.database_url)}, serving {base}")
        if settings.demo:
            with store.transaction() as tx:
                demo = _create_demo(tx) if tx.count_portals() == 0 else None
            if demo is not None:
                portal_id, secret, page = demo
                click.echo(
                    f"Demo portal {portal_id} created with HubSpot's three default subscription definitions "
                    "and two more (with German and French translations)."
                )
                click.echo(f"Demo token, every scope (shown once; only its hash is stored):\n  {secret}")
                click.echo("Try:")
                header = shlex.quote(f"Authorization: Bearer {secret}")
                click.echo(f"  curl -H {header} {base}/communication-preferences/v3/definitions")
                click.echo(
                    f"Preference page of {DEMO_CONTACT}:\n  {links.link_url(settings.public_url or base, *page)}"
                )
            else:
                click.echo("Existing database: mint a token with `commprefs token create --portal ID --all-scopes`.")
    sys.stdout.flush()
    uvicorn.run(
        "commprefs.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config(settings.log_level),
        access_log=False,
        server_header=False,
    )


DEMO_CONTACT = "demo@example.com"
DEMO_DEFINITIONS = (
    (
        "Newsletter",
        "Our monthly newsletter.",
        [
            ("de", "Newsletter", "Unser monatlicher Newsletter."),
            ("fr", "Lettre d'information", "Notre lettre mensuelle."),
        ],
    ),
    (
        "Product updates",
        "New features and releases.",
        [
            ("de", "Produktneuigkeiten", "Neue Funktionen und Versionen."),
            ("fr", "Nouveautés produit", "Nouvelles fonctionnalités et versions."),
        ],
    ),
)


def _create_demo(tx: Tx) -> tuple[int, str, tuple[Portal, links.Purpose, links.LinkClaims]]:
    now = now_ms()
    portal = tenancy.create_portal(tx, "Demo portal", gdpr_enabled=False, now=now)
    for order, (name, description, translations) in enumerate(DEMO_DEFINITIONS, start=10):
        tenancy.create_definition(tx, portal.id, name, description, now=now + order, translations=translations)
    _, secret = tenancy.create_token(tx, portal.id, list(Scope), "demo", now)
    page = (portal, links.Purpose.MANAGE, links.LinkClaims(portal.id, DEMO_CONTACT))
    return portal.id, secret, page


def _redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":")[0]
        return f"{scheme}{sep}{user}@{host}"
    return url


@main.command()
def migrate() -> None:
    """Apply database migrations and exit."""
    with _store():
        click.echo("database is up to date")


# -- portals ------------------------------------------------------------------------------


@main.group()
def portal() -> None:
    """Create, list and configure portals (tenants)."""


@portal.command("create")
@click.option("--name", required=True, help="Portal name.")
@click.option("--gdpr", is_flag=True, help="Require a legal basis for subscribing (GDPR portal).")
@click.option("--no-defaults", is_flag=True, help="Skip HubSpot's three default subscription definitions.")
def portal_create(name: str, gdpr: bool, no_defaults: bool) -> None:
    """Create a portal; prints its id."""
    created = _run(
        lambda tx: tenancy.create_portal(tx, name, gdpr_enabled=gdpr, now=now_ms(), with_defaults=not no_defaults)
    )
    click.echo(created.id)


@portal.command("list")
def portal_list() -> None:
    """List portals."""
    for p in _run(lambda tx: tx.list_portals()):
        flags = " ".join(f for f, on in (("gdpr", p.gdpr_enabled), ("hubspot-strict", p.hubspot_strict)) if on)
        click.echo(f"{p.id}\t{p.name}\t{flags}")


@portal.command("update")
@click.argument("portal_id", type=int)
@click.option("--name", help="New name.")
@click.option("--gdpr/--no-gdpr", default=None, help="Turn GDPR rules on or off.")
@click.option("--hubspot-strict/--no-hubspot-strict", default=None, help="Reproduce HubSpot's exact refusals.")
@click.option("--default-language", help="Language of pages when the contact's is unknown (en, de, fr...).")
@click.option("--public-url", help="Base URL for links in emails, e.g. https://prefs.example.com.")
def portal_update(
    portal_id: int,
    name: str | None,
    gdpr: bool | None,
    hubspot_strict: bool | None,
    default_language: str | None,
    public_url: str | None,
) -> None:
    """Change a portal's settings."""
    p = _run(
        lambda tx: tenancy.update_portal(
            tx,
            portal_id,
            name=name,
            gdpr_enabled=gdpr,
            hubspot_strict=hubspot_strict,
            default_language=default_language,
            public_base_url=public_url,
        )
    )
    click.echo(f"{p.id}\t{p.name}\tgdpr={p.gdpr_enabled}\thubspot_strict={p.hubspot_strict}")


@portal.command("rotate-link-secret")
@click.argument("portal_id", type=int)
def portal_rotate_link_secret(portal_id: int) -> None:
    """Replace the secret that signs the portal's contact links: every link issued before stops working."""
    _run(lambda tx: tenancy.rotate_signing_secret(tx, portal_id))
    click.echo(f"portal {portal_id}: new link secret; earlier links no longer work")


# -- links --------------------------------------------------------------------------------


@main.group("links")
def links_group() -> None:
    """Signed links to a contact's preference and unsubscribe pages."""


@links_group.command("generate")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--language", help="Page language (en, de, fr...); else the browser's, else the portal's.")
@click.option("--subscription", "subscription_id", type=int, help="Adds a single-unsubscribe link for it.")
@click.option("--business-unit", "business_unit_id", type=int, default=0, show_default=True, help="Brand.")
@click.argument("email")
def links_generate(
    portal_id: int, language: str | None, subscription_id: int | None, business_unit_id: int, email: str
) -> None:
    """Print EMAIL's manage, unsubscribe-all and (with --subscription) single-unsubscribe links."""
    settings = get_settings()

    def make(tx: Tx) -> links.Links:
        return links.issue(
            tx,
            portal_id,
            normalize_email(email),
            business_unit_id=business_unit_id,
            language=language,
            subscription_id=subscription_id,
            configured_url=settings.public_url,
            fallback_url=f"http://{settings.host}:{settings.port}",
        )

    made = _run(make)
    click.echo(f"manage\t{made.manage}")
    click.echo(f"unsubscribe-all\t{made.unsubscribe_all}")
    if made.unsubscribe_one:
        click.echo(f"unsubscribe\t{made.unsubscribe_one}")


@main.group("business-units")
def business_units() -> None:
    """Create and list brands (business units); 0 is the portal's default brand."""


@business_units.command("create")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--name", required=True, help="Brand name.")
def business_unit_create(portal_id: int, name: str) -> None:
    """Create a brand; prints its id."""
    click.echo(_run(lambda tx: tenancy.create_business_unit(tx, portal_id, name, now_ms())).id)


@business_units.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def business_unit_list(portal_id: int) -> None:
    """List a portal's brands."""
    for unit in _run(lambda tx: tx.list_business_units(portal_id)):
        click.echo(f"{unit.id}\t{unit.name}")


# -- tokens -------------------------------------------------------------------------------

_SCOPE_CHOICES = click.Choice([s.value for s in Scope] + sorted(SCOPE_ALIASES))


@main.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--scope", "scopes", multiple=True, type=_SCOPE_CHOICES, help="A scope; repeat for more.")
@click.option("--all-scopes", is_flag=True, help="Every scope, admin included.")
@click.option("--name", default="cli", show_default=True, help="A name to recognise the token by.")
def token_create(portal_id: int, scopes: tuple[str, ...], all_scopes: bool, name: str) -> None:
    """Create a token; prints only the token (shown once)."""
    if not scopes and not all_scopes:
        raise click.UsageError("give at least one --scope, or --all-scopes")
    chosen = list(Scope) if all_scopes else [parse_scope(s) for s in scopes]
    _, secret = _run(lambda tx: tenancy.create_token(tx, portal_id, chosen, name, now_ms()))
    click.echo(secret)


@token.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def token_list(portal_id: int) -> None:
    """List a portal's tokens (ids and scopes, never secrets)."""
    for row in _run(lambda tx: tx.list_tokens(portal_id)):
        state = f"revoked {iso(row.revoked_at)}" if row.revoked_at else "active"
        used = iso(row.last_used_at) if row.last_used_at else "never used"
        click.echo(f"{row.id}\t{row.name}\t{state}\t{used}\t{row.scopes}")


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by id (see `token list`); it stops working within seconds."""
    if not _run(lambda tx: tx.revoke_token(token_id, now_ms())):
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"revoked {token_id}")


# -- definitions --------------------------------------------------------------------------


@main.group()
def definitions() -> None:
    """Create, list, update and deactivate subscription definitions."""


@definitions.command("create")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--name", required=True, help="Name contacts see, e.g. 'Product updates'.")
@click.option("--description", required=True, help="What contacts get.")
@click.option("--purpose", default="", help="Purpose or department, e.g. Marketing.")
@click.option("--business-unit", type=int, default=0, show_default=True, help="Brand id.")
@click.option("--internal", is_flag=True, help="Internal: not shown on preference pages.")
def definitions_create(
    portal_id: int, name: str, description: str, purpose: str, business_unit: int, internal: bool
) -> None:
    """Create a definition; prints its id."""
    created = _run(
        lambda tx: tenancy.create_definition(
            tx,
            portal_id,
            name,
            description,
            now=now_ms(),
            purpose=purpose,
            business_unit_id=business_unit,
            is_internal=internal,
        )
    )
    click.echo(created.id)


@definitions.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def definitions_list(portal_id: int) -> None:
    """List a portal's definitions."""
    for d in _run(lambda tx: tx.list_definitions(portal_id)):
        flags = ",".join(
            f for f, on in (("active", d.is_active), ("internal", d.is_internal), ("default", d.is_default)) if on
        )
        click.echo(f"{d.id}\t{d.name}\tbrand={d.business_unit_id}\t{flags}")


@definitions.command("update")
@click.argument("definition_id", type=int)
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--name", help="New name.")
@click.option("--description", help="New description.")
@click.option("--purpose", help="New purpose.")
@click.option("--internal/--public", default=None, help="Hide from or show on preference pages.")
@click.option("--active/--inactive", default=None, help="Reactivate or archive.")
def definitions_update(
    definition_id: int,
    portal_id: int,
    name: str | None,
    description: str | None,
    purpose: str | None,
    internal: bool | None,
    active: bool | None,
) -> None:
    """Change a definition."""
    d = _run(
        lambda tx: tenancy.update_definition(
            tx,
            portal_id,
            definition_id,
            now=now_ms(),
            name=name,
            description=description,
            purpose=purpose,
            is_internal=internal,
            is_active=active,
        )
    )
    click.echo(f"{d.id}\t{d.name}\tactive={d.is_active}")


@definitions.command("deactivate")
@click.argument("definition_id", type=int)
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def definitions_deactivate(definition_id: int, portal_id: int) -> None:
    """Archive a definition: hidden from status reads, its history kept."""
    _run(lambda tx: tenancy.update_definition(tx, portal_id, definition_id, now=now_ms(), is_active=False))
    click.echo(f"deactivated {definition_id}")


# -- webhooks -----------------------------------------------------------------------------

_EVENT_CHOICES = click.Choice([t.value for t in EventType])


@main.group("webhooks")
def webhooks_group() -> None:
    """Endpoints that receive every consent change, signed per Standard Webhooks."""


@webhooks_group.command("add")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--url", required=True, help="http(s) URL that receives the events.")
@click.option("--event", "events", multiple=True, type=_EVENT_CHOICES, help="Only these event types (repeatable).")
@click.option("--description", default="", help="What the endpoint is for.")
def webhooks_add(portal_id: int, url: str, events: tuple[str, ...], description: str) -> None:
    """Register an endpoint; prints its id and its secret (shown once)."""
    allow = get_settings().webhook_allow_private_networks
    endpoint, secret = _run(
        lambda tx: webhooks.create_endpoint(
            tx, portal_id, url, events=events, description=description, now=now_ms(), allow_private=allow
        )
    )
    click.echo(f"{endpoint.id}\t{secret}")


@webhooks_group.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def webhooks_list(portal_id: int) -> None:
    """List endpoints: id, state, failures, events, URL."""
    for row in _run(lambda tx: tx.list_endpoints(portal_id)):
        shown = webhooks.endpoint_json(row)
        state = "enabled" if shown["enabled"] else f"disabled ({shown['disabledReason']})"
        click.echo(f"{row.id}\t{state}\tfailures={row.failures}\t{','.join(shown['events'])}\t{row.url}")


@webhooks_group.command("update")
@click.argument("endpoint_id")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--url", help="New URL.")
@click.option("--event", "events", multiple=True, type=_EVENT_CHOICES, help="Only these event types (repeatable).")
@click.option("--enable/--disable", "enabled", default=None, help="Re-enable (resumes where it stopped) or disable.")
def webhooks_update(
    endpoint_id: str, portal_id: int, url: str | None, events: tuple[str, ...], enabled: bool | None
) -> None:
    """Change, disable or re-enable an endpoint."""
    allow = get_settings().webhook_allow_private_networks
    row = _run(
        lambda tx: webhooks.update_endpoint(
            tx,
            portal_id,
            endpoint_id,
            now=now_ms(),
            allow_private=allow,
            url=url,
            events=events or None,
            enabled=enabled,
        )
    )
    click.echo(f"{row.id}\t{'enabled' if row.enabled else 'disabled'}\t{row.url}")


@webhooks_group.command("delete")
@click.argument("endpoint_id")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def webhooks_delete(endpoint_id: str, portal_id: int) -> None:
    """Delete an endpoint and its delivery log."""
    _run(lambda tx: webhooks.delete_endpoint(tx, portal_id, endpoint_id))
    click.echo(f"deleted {endpoint_id}")


@webhooks_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many attempts.")
def webhooks_deliveries(endpoint_id: str, portal_id: int, limit: int) -> None:
    """The endpoint's delivery attempts, newest first: time, event, attempt, status, latency, next retry."""

    def read(tx: Tx) -> list[dict[str, object]]:
        webhooks.require_endpoint(tx, portal_id, endpoint_id)
        return [webhooks.delivery_json(r) for r in tx.list_deliveries(portal_id, endpoint_id, limit)]

    for d in _run(read):
        outcome = d["statusCode"] if d["statusCode"] is not None else d["error"]
        retry = f"\tnext {d['nextAttemptAt']}" if d["nextAttemptAt"] else ""
        click.echo(
            f"{d['attemptedAt']}\t{d['webhookId']}\tattempt {d['attempt']}\t{outcome}\t{d['latencyMs']} ms{retry}"
        )


@webhooks_group.command("replay")
@click.argument("endpoint_id")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--since", required=True, type=click.DateTime(), help="Send again every event from this time (UTC).")
def webhooks_replay(endpoint_id: str, portal_id: int, since: datetime) -> None:
    """Send again, in order and with the same webhook-ids, every event since a time."""
    moment = since if since.tzinfo else since.replace(tzinfo=UTC)
    _run(lambda tx: webhooks.replay(tx, portal_id, endpoint_id, int(moment.timestamp() * 1000), now_ms()))
    click.echo(f"{endpoint_id}: events since {moment.isoformat()} will be sent again")
