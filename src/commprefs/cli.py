"""The `commprefs` command: serve, and set portals, tokens and definitions up."""

import csv
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import uvicorn

from commprefs import __version__
from commprefs.api.records import delivery_json, endpoint_json, erasure_json, subject_json
from commprefs.clock import iso
from commprefs.config import get_settings
from commprefs.consent import links
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import SCOPE_ALIASES, Scope, Source, parse_scope
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Actor
from commprefs.logs import log_config
from commprefs.metrics import MULTIPROC_ENV
from commprefs.services import Services
from commprefs.transfer import importer
from commprefs.transfer.exporter import ExportFormat, ExportRequest
from commprefs.transfer.formats import Format, HeaderError
from commprefs.transfer.importer import DEFAULT_MAILCHIMP_SUBSCRIPTION, ImportRequest, Reject
from commprefs.transfer.progress import ImportProgress
from commprefs.webhooks import EventType

T = TypeVar("T")


@contextmanager
def _services() -> Iterator[Services]:
    services = Services.open(get_settings().database_url, migrate=True)
    try:
        yield services
    finally:
        services.close()


def _call(call: Callable[[Services], Awaitable[T]]) -> T:
    """One call of a service face against the configured database; rule violations become CLI errors."""
    with _services() as services:
        try:
            return services.run(call)
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
    with _services() as services:
        click.echo(f"commprefs {__version__} on {_redacted(settings.database_url)}, serving {base}")
        if settings.demo:
            demo = services.run(lambda s: s.tenancy.create_demo(DEMO_DEFINITIONS)) if _empty(services) else None
            if demo is not None:
                portal, secret = demo
                portal_id = portal.id
                page = (portal, links.Purpose.MANAGE, links.LinkClaims(portal.id, DEMO_CONTACT))
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
        limited = settings.rate_limit_per_10s > 0 or settings.rate_limit_per_day > 0
        if limited and workers > 1 and services.dialect == "sqlite":
            click.echo(
                f"Rate limits on SQLite are counted by each of the {workers} processes: a token may make up to "
                f"{workers} times its limit. PostgreSQL gives every process one shared count."
            )
    sys.stdout.flush()
    with _metrics_directory(workers):
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


@contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """With several worker processes, prometheus_client's multiprocess mode in a fresh directory, so that
    /metrics, whichever worker answers it, reports them all. A directory the operator named is used as is."""
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    directory = tempfile.mkdtemp(prefix="commprefs-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # the workers are started afresh and inherit it
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(directory, ignore_errors=True)


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


def _empty(services: Services) -> bool:
    return services.run(lambda s: s.tenancy.is_empty())


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
    with _services():
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
    created = _call(lambda s: s.tenancy.create_portal(name, gdpr_enabled=gdpr, with_defaults=not no_defaults))
    click.echo(created.id)


@portal.command("list")
def portal_list() -> None:
    """List portals."""
    for p in _call(lambda s: s.tenancy.portals()):
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
    p = _call(
        lambda s: s.tenancy.update_portal(
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
    _call(lambda s: s.tenancy.rotate_link_secret(portal_id))
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

    def make(s: Services) -> Awaitable[links.Links]:
        return s.consent.links(
            portal_id,
            normalize_email(email),
            business_unit_id=business_unit_id,
            language=language,
            subscription_id=subscription_id,
            configured_url=settings.public_url,
            fallback_url=f"http://{settings.host}:{settings.port}",
        )

    made = _call(make)
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
    click.echo(_call(lambda s: s.tenancy.create_business_unit(portal_id, name)).id)


@business_units.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def business_unit_list(portal_id: int) -> None:
    """List a portal's brands."""
    for unit in _call(lambda s: s.tenancy.business_units(portal_id)):
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
    _, secret = _call(lambda s: s.tenancy.create_token(portal_id, chosen, name))
    click.echo(secret)


@token.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def token_list(portal_id: int) -> None:
    """List a portal's tokens (ids and scopes, never secrets)."""
    for row in _call(lambda s: s.tenancy.tokens(portal_id)):
        state = f"revoked {iso(row.revoked_at)}" if row.revoked_at else "active"
        used = iso(row.last_used_at) if row.last_used_at else "never used"
        click.echo(f"{row.id}\t{row.name}\t{state}\t{used}\t{row.scopes}")


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke a token by id (see `token list`); it stops working within seconds."""
    if not _call(lambda s: s.tenancy.revoke_token(token_id)):
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
    created = _call(
        lambda s: s.tenancy.create_definition(
            portal_id,
            name,
            description,
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
    for d in _call(lambda s: s.tenancy.definitions(portal_id)):
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
    d = _call(
        lambda s: s.tenancy.update_definition(
            portal_id,
            definition_id,
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
    _call(lambda s: s.tenancy.update_definition(portal_id, definition_id, is_active=False))
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
    endpoint, secret = _call(
        lambda s: s.webhooks.create_endpoint(
            portal_id, url, events=events, description=description, allow_private=allow
        )
    )
    click.echo(f"{endpoint.id}\t{secret}")


@webhooks_group.command("list")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def webhooks_list(portal_id: int) -> None:
    """List endpoints: id, state, failures, events, URL."""
    for row in _call(lambda s: s.webhooks.endpoints(portal_id)):
        shown = endpoint_json(row)
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
    row = _call(
        lambda s: s.webhooks.update_endpoint(
            portal_id,
            endpoint_id,
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
    _call(lambda s: s.webhooks.delete_endpoint(portal_id, endpoint_id))
    click.echo(f"deleted {endpoint_id}")


@webhooks_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many attempts.")
def webhooks_deliveries(endpoint_id: str, portal_id: int, limit: int) -> None:
    """The endpoint's delivery attempts, newest first: time, event, attempt, status, latency, next retry."""

    _, rows = _call(lambda s: s.webhooks.deliveries(portal_id, endpoint_id, limit))
    for d in map(delivery_json, rows):
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
    _call(lambda s: s.webhooks.replay(portal_id, endpoint_id, int(moment.timestamp() * 1000)))
    click.echo(f"{endpoint_id}: events since {moment.isoformat()} will be sent again")


# -- data in and out ------------------------------------------------------------------------


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option(
    "--format", "fmt", type=click.Choice([f.value for f in Format]), help="File format [default: told by the header]."
)
@click.option(
    "--subscription",
    help=f"Mailchimp: the subscription (id or name) the audience maps to [default: {DEFAULT_MAILCHIMP_SUBSCRIPTION}].",
)
@click.option("--dry-run", is_flag=True, help="Read and check every row, count what would happen, write nothing.")
@click.option(
    "--rejects", type=click.Path(dir_okay=False, path_type=Path), help="Rejected rows file [default: FILE.rejects.csv]."
)
@click.option(
    "--progress-every",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds between progress lines off a terminal.",
)
def import_file(
    file: Path,
    portal_id: int,
    fmt: str | None,
    subscription: str | None,
    dry_run: bool,
    rejects: Path | None,
    progress_every: float,
) -> None:
    """Import statuses and opt-outs from FILE (CSV; - reads standard input): commprefs' own format,
    a HubSpot contacts export or a Mailchimp audience export file. Original dates and sources are
    kept; a newer change in commprefs is never overridden, an opt-out never lifted, an erased
    address never brought back; running a file again changes nothing. Rejected rows go to the
    rejects file with their line and reason (fix them there and import that file).

    Exit status: 0 when every row was taken, 3 when some were rejected, 1 when the import failed."""
    reading_stdin = str(file) == "-"
    rejects_path = rejects or (Path("stdin.rejects.csv") if reading_stdin else file.with_suffix(".rejects.csv"))
    request = ImportRequest(
        portal_id=portal_id,
        actor=Actor(Source.IMPORT),
        format=Format(fmt) if fmt else None,
        subscription=subscription,
        dry_run=dry_run,
        file_name="-" if reading_stdin else file.name,
    )
    writer = _RejectsFile(rejects_path)
    with _services() as services:
        _require_portal(services, portal_id)
        with (
            click.open_file("-", "rb") if reading_stdin else file.open("rb") as stream,
            ImportProgress(None if reading_stdin else file.stat().st_size, progress_every) as progress,
            writer,
        ):
            try:
                job_id, counts = services.transfer.run_import(
                    request, stream, on_reject=writer.add, on_progress=progress
                )
            except (HeaderError, DomainError) as exc:
                raise click.ClickException(str(exc)) from exc
    what = "would be " if dry_run else ""
    click.echo(
        f"{job_id}: {counts.rows:,} rows read; {counts.applied:,} changes {what}applied, "
        f"{counts.unchanged:,} already there, {counts.newerKept:,} older than commprefs' own, "
        f"{counts.optOutKept:,} would have lifted an opt-out, {counts.erased:,} for erased addresses; "
        f"{counts.rejected:,} rows rejected"
    )
    if counts.rejected:
        click.echo(f"rejected rows: {rejects_path}")
        sys.exit(3)


class _RejectsFile:
    """The rejected rows as a CSV: line, reason, then the row's own columns, so that the file can be
    fixed and imported as it is. Written only when a row is rejected; a stale one is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None
        self.writer: Any = None

    def __enter__(self) -> "_RejectsFile":
        return self

    def add(self, reject: Reject) -> None:
        if self.writer is None:
            self.handle = self.path.open("w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.handle)
            self.writer.writerow([*importer.REJECT_COLUMNS, *reject.header])
        self.writer.writerow([reject.line, reject.reason, *reject.values])

    def __exit__(self, *_: object) -> None:
        if self.handle is not None:
            self.handle.close()
        else:
            self.path.unlink(missing_ok=True)


@main.command("export")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--format", "fmt", type=click.Choice([f.value for f in ExportFormat]), default="csv", show_default=True)
@click.option(
    "--suppressed-only", is_flag=True, help="Only unsubscribes and opt-outs from all: who must not get email."
)
@click.option("--business-unit", "business_unit_id", type=int, help="Only this brand (and the portal-wide opt-outs).")
@click.option(
    "--subscription", "subscription_id", type=int, help="Only this subscription (and the opt-outs covering it)."
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="File [default: stdout]."
)
def export_statuses(
    portal_id: int,
    fmt: str,
    suppressed_only: bool,
    business_unit_id: int | None,
    subscription_id: int | None,
    output: str,
) -> None:
    """Write every stored status and opt-out from all (or with --suppressed-only, only those that
    forbid email) as CSV (commprefs' import format) or JSON lines, streamed: memory stays flat.
    Erased addresses are not in it (their address is gone); the APIs read them as opted out."""
    request = ExportRequest(
        portal_id,
        ExportFormat(fmt),
        suppressed_only=suppressed_only,
        business_unit_id=business_unit_id,
        subscription_id=subscription_id,
    )
    with _services() as services:
        _require_portal(services, portal_id)
        try:
            chunks = services.transfer.export(request)
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc
        with click.open_file(output, "wb") as sink:
            for chunk in chunks:
                sink.write(chunk)


@main.group("subject")
def subject() -> None:
    """Data-subject requests (GDPR): what is held about an address, and its erasure."""


@subject.command("export")
@click.argument("email")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
def subject_export(email: str, portal_id: int) -> None:
    """Print, as JSON, everything held about EMAIL: statuses, opt-outs from all, the full history
    (with IPs and user agents where the person acted) and rejected import lines."""
    address = _address(email)
    record = _call(lambda s: s.consent.subject(portal_id, address))
    click.echo(json.dumps(subject_json(record), indent=2, ensure_ascii=False))


@subject.command("erase")
@click.argument("email")
@click.option("--portal", "portal_id", type=int, required=True, help="Portal id.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def subject_erase(email: str, portal_id: int, yes: bool) -> None:
    """Delete EMAIL's statuses, opt-outs and history, keeping only a salted-hash tombstone: the
    address then reads as opted out of all, no import or v3 call can subscribe it again, and only
    a new explicit consent (v4 SUBSCRIBED with a legal basis, or the preference page) lifts it."""
    address = _address(email)
    if not yes:
        click.confirm(f"Erase everything held about {address} in portal {portal_id}?", abort=True)
    erasure = _call(lambda s: s.consent.erase(portal_id, address, Actor(Source.ADMIN)))
    click.echo(json.dumps(erasure_json(erasure), indent=2))


def _address(email: str) -> str:
    try:
        return normalize_email(email, field="EMAIL")
    except DomainError as exc:
        raise click.ClickException(exc.message) from exc


def _require_portal(services: Services, portal_id: int) -> None:
    if services.run(lambda s: s.tenancy.portal(portal_id)) is None:
        raise click.ClickException(f"portal {portal_id} does not exist")
