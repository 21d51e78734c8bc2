"""The `commprefs` command through real subprocesses on a SQLite file, checked against a live server."""

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
import pytest
from click.testing import CliRunner

from commprefs.cli import main
from commprefs.clock import now_ms
from commprefs.domain.enums import Scope
from commprefs.store import Store
from commprefs.tenancy import setup as tenancy
from tests.conftest import Server, run_server
from tests.procs import run_cli

V3 = "/communication-preferences/v3"
DEFAULT_NAMES = ["Marketing Information", "Customer Service Communication", "One to One"]


@dataclass
class Cli:
    """The command on one database, with a live server (token cache off) and a store on the same file."""

    url: str
    workdir: Path
    server: Server

    @property
    def store(self) -> Store:
        return self.server.store

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.url, *args, cwd=self.workdir)

    def ok(self, *args: str) -> str:
        """Stdout of a command that must succeed quietly (nothing but the answer)."""
        done = self.run(*args)
        assert done.returncode == 0, f"commprefs {' '.join(args)} exited {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr
        return done.stdout

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def token_id(self, secret: str) -> str:
        info = self.store.read(lambda tx: tx.tokens.find_token(tenancy.hash_token(secret)))
        assert info is not None, "the printed token is not known to the database"
        return info.id

    def admin_token(self, portal_id: int) -> str:
        """A token with every scope, minted in-process (the CLI's own `token create` is tested on its own)."""
        with self.store.transaction() as tx:
            return tenancy.create_token(tx, portal_id, list(Scope), "test", now_ms())[1]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    workdir = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{workdir / 'cli.db'}"
    with run_server(url, "sqlite", cache_seconds=0) as server:  # the CLI changes it from another process
        yield Cli(url, workdir, server)


@pytest.fixture(scope="module")
def created(cli: Cli) -> tuple[str, int]:
    """`portal create`'s raw stdout and the portal id it names."""
    out = cli.ok("portal", "create", "--name", "CLI portal")
    return out, int(out.strip())


@pytest.fixture(scope="module")
def portal_id(created: tuple[str, int]) -> int:
    return created[1]


def statuses(api: httpx.Client, email: str) -> dict[str, dict[str, object]]:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    return {str(s["id"]): s for s in response.json()["subscriptionStatuses"]}


def subscribe(api: httpx.Client, email: str, subscription_id: int) -> httpx.Response:
    return api.post(f"{V3}/subscribe", json={"emailAddress": email, "subscriptionId": str(subscription_id)})


# -- portals ------------------------------------------------------------------------------


def test_portal_create_prints_only_the_new_id(cli: Cli, created: tuple[str, int]) -> None:
    out, portal_id = created
    assert out == f"{portal_id}\n"
    portal = cli.store.read(lambda tx: tx.portals.get_portal(portal_id))
    assert portal is not None and portal.name == "CLI portal" and portal.gdpr_enabled is False
    names = [d.name for d in cli.store.read(lambda tx: tx.portals.list_definitions(portal_id))]
    assert names == DEFAULT_NAMES


def test_portal_create_gdpr_requires_a_legal_basis(cli: Cli) -> None:
    out = cli.ok("portal", "create", "--name", "GDPR portal", "--gdpr")
    assert out.strip().isdigit() and out == f"{out.strip()}\n"
    gdpr_id = int(out)
    portal = cli.store.read(lambda tx: tx.portals.get_portal(gdpr_id))
    assert portal is not None and portal.gdpr_enabled is True
    marketing = cli.store.read(lambda tx: tx.portals.list_definitions(gdpr_id))[0].id
    with cli.client(cli.admin_token(gdpr_id)) as api:
        response = subscribe(api, "gdpr@example.com", marketing)
    assert response.status_code == 400
    assert "legalBasis" in response.json()["message"]


def test_portal_update_turns_gdpr_on(cli: Cli) -> None:
    with cli.store.transaction() as tx:
        target = tenancy.create_portal(tx, "Soon GDPR", gdpr_enabled=False, now=now_ms())
    marketing = cli.store.read(lambda tx: tx.portals.list_definitions(target.id))[0].id
    with cli.client(cli.admin_token(target.id)) as api:
        assert subscribe(api, "before@example.com", marketing).status_code == 200
        out = cli.ok("portal", "update", str(target.id), "--gdpr")
        assert out.split("\t")[0] == str(target.id) and "gdpr=True" in out
        after = subscribe(api, "after@example.com", marketing)
    assert after.status_code == 400, after.text
    assert after.json()["errors"][0]["in"] == "legalBasis"
    portal = cli.store.read(lambda tx: tx.portals.get_portal(target.id))
    assert portal is not None and portal.gdpr_enabled is True


# -- tokens -------------------------------------------------------------------------------


def test_read_token_reads_but_cannot_write(cli: Cli, portal_id: int) -> None:
    out = cli.ok("token", "create", "--portal", str(portal_id), "--scope", "communication_preferences.read")
    secret = out.strip()
    assert out == f"{secret}\n" and secret.startswith("cp_") and len(secret) > 20
    info = cli.store.read(lambda tx: tx.tokens.find_token(tenancy.hash_token(secret)))
    assert info is not None and info.portal_id == portal_id and info.scopes == {Scope.READ}
    with cli.client(secret) as api:
        definitions = api.get(f"{V3}/definitions")
        assert definitions.status_code == 200
        assert [d["name"] for d in definitions.json()["subscriptionDefinitions"]] == DEFAULT_NAMES
        assert len(statuses(api, "reader@example.com")) == 3
        marketing = definitions.json()["subscriptionDefinitions"][0]["id"]
        refused = subscribe(api, "reader@example.com", marketing)
    assert refused.status_code == 403
    assert refused.json()["category"] == "MISSING_SCOPES"


@pytest.fixture(scope="module")
def listed(cli: Cli, portal_id: int) -> tuple[str, str, str]:
    """A named token, used once over HTTP, then `token list`: (token id, secret, listing)."""
    scope = "communication_preferences.read_write"
    secret = cli.ok("token", "create", "--portal", str(portal_id), "--scope", scope, "--name", "nightly-sync").strip()
    with cli.client(secret) as api:
        assert api.get(f"{V3}/definitions").status_code == 200
    return cli.token_id(secret), secret, cli.ok("token", "list", "--portal", str(portal_id))


def test_token_list_shows_id_and_name_but_never_the_secret(listed: tuple[str, str, str]) -> None:
    token_id, secret, listing = listed
    rows = [line.split("\t") for line in listing.splitlines()]
    mine = [row for row in rows if row[0] == token_id]
    assert len(mine) == 1, listing
    assert mine[0][1] == "nightly-sync" and mine[0][2] == "active"
    assert "communication_preferences.read_write" in mine[0][-1]
    assert secret not in listing
    assert secret.removeprefix("cp_") not in listing
    assert tenancy.hash_token(secret) not in listing


def test_token_list_records_last_use(listed: tuple[str, str, str]) -> None:
    """`token list` has a last-used column; a token that has just answered a request must not read 'never used'."""
    token_id, _, listing = listed
    row = next(line.split("\t") for line in listing.splitlines() if line.startswith(f"{token_id}\t"))
    assert row[3] != "never used", f"token {token_id} was used over HTTP but is listed as {row[3]!r}"


def test_token_revoke_stops_the_token(cli: Cli, portal_id: int) -> None:
    secret = cli.ok("token", "create", "--portal", str(portal_id), "--all-scopes", "--name", "to-revoke").strip()
    token_id = cli.token_id(secret)
    with cli.client(secret) as api:
        assert api.get(f"{V3}/definitions").status_code == 200
        assert cli.ok("token", "revoke", token_id) == f"revoked {token_id}\n"
        response = api.get(f"{V3}/definitions")
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"
    rows = cli.store.read(lambda tx: tx.tokens.list_tokens(portal_id))
    assert [r.revoked_at is not None for r in rows if r.id == token_id] == [True]


# -- business units and definitions -------------------------------------------------------


@pytest.fixture(scope="module")
def brand(cli: Cli, portal_id: int) -> int:
    out = cli.ok("business-units", "create", "--portal", str(portal_id), "--name", "Second brand")
    assert out == f"{out.strip()}\n"
    return int(out)


def test_business_units_create_and_list(cli: Cli, portal_id: int, brand: int) -> None:
    assert brand == 1  # 0 is the portal's default brand
    listing = cli.ok("business-units", "list", "--portal", str(portal_id))
    assert listing.splitlines() == ["0\tCLI portal", f"{brand}\tSecond brand"]


def test_definitions_create_list_update_deactivate(cli: Cli, portal_id: int, brand: int) -> None:
    p = str(portal_id)
    out = cli.ok(
        "definitions",
        "create",
        "--portal",
        p,
        "--name",
        "Product news",
        "--description",
        "New features.",
        "--purpose",
        "Product",
        "--business-unit",
        str(brand),
    )
    assert out == f"{out.strip()}\n"
    definition_id = int(out)
    key = str(definition_id)
    with cli.client(cli.admin_token(portal_id)) as api:
        found = statuses(api, "cli-defs@example.com")
        assert found[key]["name"] == "Product news" and found[key]["brandId"] == brand
        assert found[key]["status"] == "NOT_SUBSCRIBED"

        listing = cli.ok("definitions", "list", "--portal", p)
        rows = {line.split("\t")[0]: line.split("\t") for line in listing.splitlines()}
        assert rows[key] == [key, "Product news", f"brand={brand}", "active"]
        assert len(rows) == 4

        updated = cli.ok("definitions", "update", key, "--portal", p, "--name", "Product updates", "--description", "D")
        assert updated == f"{key}\tProduct updates\tactive=True\n"
        published = {d["id"]: d for d in api.get(f"{V3}/definitions").json()["subscriptionDefinitions"]}
        assert published[key]["name"] == "Product updates" and published[key]["description"] == "D"
        assert published[key]["purpose"] == "Product"

        assert cli.ok("definitions", "deactivate", key, "--portal", p) == f"deactivated {key}\n"
        after = statuses(api, "cli-defs@example.com")
        assert key not in after and len(after) == 3
        listed = {d["id"]: d for d in api.get(f"{V3}/definitions").json()["subscriptionDefinitions"]}
    assert key not in listed or listed[key]["isActive"] is False
    stored = cli.store.read(lambda tx: tx.portals.get_definition(portal_id, definition_id))
    assert stored is not None and stored.is_active is False and stored.name == "Product updates"


# -- links --------------------------------------------------------------------------------


def test_links_generate_prints_working_links_and_rotation_revokes_them(cli: Cli, portal_id: int) -> None:
    cli.ok("portal", "update", str(portal_id), "--public-url", cli.server.base_url)
    marketing = next(d.id for d in cli.store.read(lambda tx: tx.portals.list_definitions(portal_id)) if d.is_default)
    out = cli.ok("links", "generate", "--portal", str(portal_id), "--subscription", str(marketing), "CLI@Example.com")
    printed = dict(line.split("\t") for line in out.splitlines())
    assert set(printed) == {"manage", "unsubscribe-all", "unsubscribe"}
    for kind, url in printed.items():
        assert url.startswith(f"{cli.server.base_url}/preferences/{portal_id}/{kind}/")
        assert httpx.get(url).status_code == 200
    assert "cli@example.com" in httpx.get(printed["manage"]).text

    assert "earlier links no longer work" in cli.ok("portal", "rotate-link-secret", str(portal_id))
    for url in printed.values():
        assert httpx.get(url).status_code == 400
    done = cli.run("links", "generate", "--portal", str(portal_id), "--subscription", "12345", "a@example.com")
    assert done.returncode == 1 and "subscription 12345 does not exist" in done.stderr


# -- webhooks -----------------------------------------------------------------------------


def test_webhooks_add_list_update_deliveries_replay_delete(cli: Cli, portal_id: int) -> None:
    out = cli.ok("webhooks", "add", "--portal", str(portal_id), "--url", "https://hooks.example.org/consent")
    endpoint_id, secret = out.strip().split("\t")
    assert endpoint_id.startswith("ep_") and secret.startswith("whsec_")
    stored = cli.store.read(lambda tx: tx.webhooks.get_endpoint(portal_id, endpoint_id))
    assert stored is not None and stored.secret == secret and stored.enabled
    listed = cli.ok("webhooks", "list", "--portal", str(portal_id))
    assert endpoint_id in listed and "enabled" in listed and secret not in listed

    assert "disabled" in cli.ok("webhooks", "update", endpoint_id, "--portal", str(portal_id), "--disable")
    assert not cli.store.read(lambda tx: tx.webhooks.get_endpoint(portal_id, endpoint_id)).enabled
    cli.ok(
        "webhooks",
        "update",
        endpoint_id,
        "--portal",
        str(portal_id),
        "--enable",
        "--event",
        "subscription.opted_out_of_all",
    )
    row = cli.store.read(lambda tx: tx.webhooks.get_endpoint(portal_id, endpoint_id))
    assert row.enabled and row.event_types == "subscription.opted_out_of_all"

    assert cli.ok("webhooks", "deliveries", endpoint_id, "--portal", str(portal_id)) == ""
    assert "sent again" in cli.ok(
        "webhooks", "replay", endpoint_id, "--portal", str(portal_id), "--since", "2020-01-01"
    )
    assert cli.store.read(lambda tx: tx.webhooks.get_endpoint(portal_id, endpoint_id)).cursor_id == 0

    refused = cli.run("webhooks", "add", "--portal", str(portal_id), "--url", "http://127.0.0.1:9/hook")
    assert refused.returncode == 1 and "private" in refused.stderr
    assert "deleted" in cli.ok("webhooks", "delete", endpoint_id, "--portal", str(portal_id))
    assert cli.store.read(lambda tx: tx.webhooks.get_endpoint(portal_id, endpoint_id)) is None


# -- errors and help ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("token", "create", "--portal", "1", "--scope", "communication_preferences.read"), "portal 1 does not exist"),
        (
            ("definitions", "create", "--portal", "PORTAL", "--name", "marketing information", "--description", "x"),
            "already exists",
        ),
        (("portal", "update", "PORTAL", "--public-url", "javascript:alert(1)"), "must start with http"),
    ],
    ids=["unknown-portal", "duplicate-definition", "bad-public-url"],
)
def test_domain_error_exits_non_zero_without_traceback(
    cli: Cli, portal_id: int, args: tuple[str, ...], message: str
) -> None:
    done = cli.run(*(str(portal_id) if arg == "PORTAL" else arg for arg in args))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("Error: ") and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


def _command_paths(group: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


COMMAND_PATHS = _command_paths(main)


def test_command_tree_is_what_we_expect() -> None:
    assert {"serve", "migrate", "portal", "token", "definitions", "business-units"} <= {
        p[0] for p in COMMAND_PATHS if p
    }
    assert ("definitions", "deactivate") in COMMAND_PATHS and ("token", "revoke") in COMMAND_PATHS
    assert ("links", "generate") in COMMAND_PATHS and ("portal", "rotate-link-secret") in COMMAND_PATHS
    assert {("webhooks", name) for name in ("add", "list", "update", "delete", "deliveries", "replay")} <= set(
        COMMAND_PATHS
    )


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "commprefs")
def test_every_command_answers_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="commprefs")
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert result.output.startswith(f"Usage: {' '.join(('commprefs', *path))} ")
