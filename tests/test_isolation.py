"""Tenant isolation: portal A's token and links, aimed at portal B, never read or change B.

Portal B is given distinctive state (a brand, a translated definition, a subscriber with a legal
basis and a brand opt-out, an idempotency key, a disabled webhook endpoint, an import with a
rejected row, history). Every string B's data holds carries the marker "b-only", so one search
over a response finds any of it. Then A's all-scopes token calls every operation of the served
OpenAPI document (so a new endpoint is probed without touching this file), with B's identifiers
in its path, its query and its body, and A's links are replayed against B's pages. Afterwards
every row of B in every table, and B's own view through its API, must be as they were.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from commprefs.store import Tx, schema
from tests.conftest import PortalFixture, Server, make_portal
from tests.pages.kit import csrf_of, old_link

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
ADMIN = "/commprefs/v1"
VICTIM = "victim@b.example"
# Every string of B's data contains this, in any case; A's requests never send it.
MARKER = "b-only"
# B's portal name is not secret from a page visitor (B's own "email me a link" page shows it), so it
# has its own marker, searched for in API answers only.
B_PORTAL_NAME = "Portal-B-name"
B_HOOK_URL = "https://hooks.example.com/b-only-hook"
# Columns that change when B's own token is used to read B's views.
VOLATILE_COLUMNS = {("token", "last_used_at")}
# Keys of B's API views that hold the time of the read itself.
VOLATILE_KEYS = {"exportedAt", "requestedAt", "startedAt", "completedAt"}
STATUS_KEYS = {"status", "newStatus", "statusState"}


@dataclass
class PortalB:
    """Portal B, its client and the identifiers A will aim at."""

    fixture: PortalFixture
    api: httpx.Client
    brand: int
    definition: int
    endpoint: str
    import_id: str
    feed_cursor: str
    history_cursor: str
    webhook_secret: str
    manage_url: str

    @property
    def id(self) -> int:
        return self.fixture.id

    def ids(self) -> list[str]:
        """B's identifiers long enough that finding one in an answer means something."""
        return [
            str(self.id),
            self.endpoint,
            self.import_id,
            *(str(d) for d in [self.definition, *self.fixture.definitions.values()]),
        ]

    def secrets(self) -> list[str]:
        return [self.webhook_secret, self.fixture.token]


@dataclass
class World:
    a: PortalFixture
    api: httpx.Client
    b: PortalB


def plain_client(server: Server, token: str) -> httpx.Client:
    """No contract check: a probe's odd answer is judged here, not aborted by the OpenAPI hook."""
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else None


def wait_for_imports(api: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while True:
        jobs = ok(api.get(f"{ADMIN}/imports"))["results"]
        if all(job["state"] in ("COMPLETE", "FAILED") for job in jobs):
            return
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


def build_b(server: Server) -> PortalB:
    fixture = make_portal(server)
    api = plain_client(server, fixture.token)
    ok(api.patch(f"{ADMIN}/portal", json={"name": B_PORTAL_NAME}))
    for name in ("B-only brand one", "B-only brand two", "B-only brand"):
        brand = int(ok(api.post(f"{ADMIN}/business-units", json={"name": name}), 201)["id"])
    # Created before B has any event and disabled at once, so the sender never touches it.
    hook = ok(api.post(f"{ADMIN}/webhooks", json={"url": B_HOOK_URL, "description": "B-only hook"}), 201)
    ok(api.patch(f"{ADMIN}/webhooks/{hook['id']}", json={"enabled": False}))
    definition = {
        "name": "B-only secret list",
        "description": "B-only description",
        "purpose": "B-only purpose",
        "businessUnitId": brand,
        "translations": [{"languageCode": "de", "name": "B-only Liste", "description": "B-only Beschreibung"}],
    }
    definition_id = int(ok(api.post(f"{ADMIN}/definitions", json=definition), 201)["id"])
    consent = {"legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "B-only consent proof"}
    ok(
        api.post(
            f"{V4}/statuses/{VICTIM}",
            json={"statusState": "SUBSCRIBED", "subscriptionId": definition_id, "channel": "EMAIL", **consent},
            headers={"Idempotency-Key": "shared-key"},
        )
    )
    ok(
        api.post(
            f"{V4}/statuses/{VICTIM}",
            json={"statusState": "SUBSCRIBED", "subscriptionId": fixture.marketing, "channel": "EMAIL", **consent},
        )
    )
    ok(api.post(f"{V4}/statuses/{VICTIM}/unsubscribe-all", params={"channel": "EMAIL", "businessUnitId": brand}))
    rows = [
        "email,subscription_name,status,source,timestamp",
        "other@b.example,B-only secret list,UNSUBSCRIBED,B-only source,2020-01-01T00:00:00Z",
        f"{VICTIM},B-only secret list,MAYBE-B-only,B-only source,2020-01-01T00:00:00Z",
    ]
    job = ok(api.post(f"{ADMIN}/imports", params={"fileName": "b-only-import.csv"}, content="\n".join(rows)), 202)
    wait_for_imports(api)
    feed = ok(api.get(f"{ADMIN}/events"))
    history = ok(api.get(f"{ADMIN}/subscribers/{VICTIM}/history", params={"limit": 1}))
    links = ok(
        api.post(
            f"{V4}/links/generate",
            params={"channel": "EMAIL", "businessUnitId": brand},
            json={"subscriberIdString": VICTIM, "subscriptionId": definition_id},
        )
    )
    return PortalB(
        fixture,
        api,
        brand,
        definition_id,
        hook["id"],
        job["id"],
        feed["paging"]["next"]["after"],
        history["paging"]["next"]["after"],
        hook["secret"],
        links["managePreferencesUrl"],
    )


@pytest.fixture
def world(server: Server) -> Iterator[World]:
    a = make_portal(server)
    b = build_b(server)
    api = plain_client(server, a.token)
    # Brand ids count up per portal: A has a brand with B's brand's id, as real portals would.
    for name in ("A brand one", "A brand two", "A brand three"):
        assert int(ok(api.post(f"{ADMIN}/business-units", json={"name": name}), 201)["id"]) <= b.brand
    ok(api.post(f"{ADMIN}/definitions", json={"name": "A list", "description": "", "businessUnitId": b.brand}), 201)
    yield World(a, api, b)
    api.close()
    b.api.close()


# -- what B holds ------------------------------------------------------------------------------------


def stored_rows(server: Server, portal_id: int) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the portal in every table (its `portal` row by id)."""

    def read(tx: Tx) -> dict[str, list[tuple[Any, ...]]]:
        found: dict[str, list[tuple[Any, ...]]] = {}
        for table in schema.metadata.sorted_tables:
            key = table.c.id if table.name == "portal" else table.c.get("portal_id")
            assert key is not None, f"table {table.name} has no portal_id: its rows would escape this check"
            columns = [c for c in table.c if (table.name, c.name) not in VOLATILE_COLUMNS]
            rows = tx.conn.execute(select(*columns).where(key == portal_id)).all()
            found[table.name] = sorted((tuple(r) for r in rows), key=repr)
        return found

    return server.store.read(read)


def without_volatile(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: without_volatile(v) for k, v in body.items() if k not in VOLATILE_KEYS}
    if isinstance(body, list):
        return [without_volatile(v) for v in body]
    return body


def views_of_b(b: PortalB) -> dict[str, Any]:
    """What B sees of itself through its own token."""
    reads: dict[str, tuple[str, dict[str, Any]]] = {
        "portal": (f"{ADMIN}/portal", {}),
        "brands": (f"{ADMIN}/business-units", {}),
        "definitions": (f"{ADMIN}/definitions", {}),
        "definition": (f"{ADMIN}/definitions/{b.definition}", {}),
        "v4 definitions": (f"{V4}/definitions", {"includeTranslations": "true"}),
        "v3": (f"{V3}/status/email/{VICTIM}", {}),
        "v4": (f"{V4}/statuses/{VICTIM}", {"channel": "EMAIL"}),
        "v4 brand": (f"{V4}/statuses/{VICTIM}", {"channel": "EMAIL", "businessUnitId": b.brand}),
        "opt-outs": (f"{V4}/statuses/{VICTIM}/unsubscribe-all", {"channel": "EMAIL"}),
        "history": (f"{ADMIN}/subscribers/{VICTIM}/history", {}),
        "feed": (f"{ADMIN}/events", {"limit": 1000}),
        "hooks": (f"{ADMIN}/webhooks", {}),
        "hook": (f"{ADMIN}/webhooks/{b.endpoint}", {}),
        "deliveries": (f"{ADMIN}/webhooks/{b.endpoint}/deliveries", {}),
        "imports": (f"{ADMIN}/imports", {}),
        "rejects": (f"{ADMIN}/imports/{b.import_id}/rejects", {}),
        "export": (f"{ADMIN}/exports/statuses", {}),
        "subject": (f"{ADMIN}/subjects/{VICTIM}", {}),
    }
    views: dict[str, Any] = {}
    for name, (path, params) in reads.items():
        response = b.api.get(path, params=params)
        assert response.status_code == 200, f"{name}: {response.text}"
        is_json = response.headers.get("content-type", "").startswith("application/json")
        views[name] = without_volatile(response.json()) if is_json else response.text
    return views


def assert_b_untouched(world: World, rows: dict[str, list[tuple[Any, ...]]], views: dict[str, Any]) -> None:
    after = stored_rows(world.a.server, world.b.id)
    changed = sorted(table for table in rows if rows[table] != after[table])
    assert not changed, {table: (rows[table], after[table]) for table in changed}
    now = views_of_b(world.b)
    assert now == views, sorted(name for name in views if views[name] != now[name])


# -- judging an answer to A ------------------------------------------------------------------------------


def without_messages(body: Any) -> Any:
    """The body without its error messages, which may name an id the request itself gave."""
    if isinstance(body, dict):
        return {k: without_messages(v) for k, v in body.items() if k != "message"}
    if isinstance(body, list):
        return [without_messages(v) for v in body]
    return body


def statuses_in(body: Any) -> Iterator[str]:
    if isinstance(body, dict):
        for key, value in body.items():
            if key in STATUS_KEYS and isinstance(value, str):
                yield value
            else:
                yield from statuses_in(value)
    elif isinstance(body, list):
        for value in body:
            yield from statuses_in(value)


def problems_with(response: httpx.Response, b: PortalB, *, page_of_b: bool = False) -> list[str]:
    """What is wrong with an answer to A: a server error, or any of B's data in it.

    B's ids may appear only in an error message (echoing the request); B's names, URLs, secrets
    and statuses never. A page served at B's own path may name B's portal (B's pages are public).
    """
    found = []
    text = response.text
    if response.status_code >= 500:
        found.append(f"answered {response.status_code}")
    if MARKER in text.lower():
        found.append(f"B's data ({MARKER!r}) in the answer")
    if not page_of_b and B_PORTAL_NAME in text:
        found.append("B's portal name in the answer")
    found += [f"B's secret {s[:8]}... in the answer" for s in b.secrets() if s in text]
    if page_of_b:
        return found
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        text = json.dumps(without_messages(body))
        if "SUBSCRIBED" in set(statuses_in(body)):
            found.append("a SUBSCRIBED status: A never subscribed anyone")
    found += [f"B's id {i} outside an error message" for i in b.ids() if i in text]
    return found


# -- A's probes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    params: dict[str, str]
    body: Any = None
    content: str | None = None

    def send(self, api: httpx.Client) -> httpx.Response:
        return api.request(self.method, self.path, params=self.params, json=self.body, content=self.content)


def path_values(b: PortalB) -> dict[str, str]:
    return {
        "emailAddress": VICTIM,
        "subscriberIdString": VICTIM,
        "definition_id": str(b.definition),
        "unit_id": str(b.brand),
        "language": "de",
        "endpointId": b.endpoint,
        "importId": b.import_id,
    }


def query_values(b: PortalB) -> dict[str, str]:
    return {
        "businessUnitId": str(b.brand),
        "subscriptionId": str(b.definition),
        "subscription": str(b.definition),
        "after": b.feed_cursor,
        "includeTranslations": "true",
        "verbose": "true",
    }


def import_file(b: PortalB) -> str:
    """An A import aimed at B's ids (the victim only through B's brand id, so that A's own record of
    the victim never holds B's definition id)."""
    return "\n".join(
        [
            "email,scope,business_unit_id,subscription_id,status,timestamp",
            f"{VICTIM},BUSINESS_UNIT_WIDE,{b.brand},,UNSUBSCRIBED,2021-01-01T00:00:00Z",
            f"probe@a.example,SUBSCRIPTION,,{b.definition},UNSUBSCRIBED,2021-01-01T00:00:00Z",
        ]
    )


def body_for(method: str, path: str, b: PortalB) -> tuple[Any, str | None]:
    """A plausible body aimed at B: its definition and brand ids, its subscriber."""
    if method in ("GET", "DELETE"):
        return None, None
    consent = {"legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "asked by A"}
    v4_write = {"statusState": "SUBSCRIBED", "subscriptionId": b.definition, "channel": "EMAIL", **consent}
    unit = f"{ADMIN}/business-units"
    known: list[tuple[str, Any]] = [
        ("/subscribe", {"emailAddress": VICTIM, "subscriptionId": str(b.definition), **consent}),
        ("/unsubscribe", {"emailAddress": VICTIM, "subscriptionId": str(b.definition)}),
        ("/resubscribe", {"emailAddress": VICTIM, "subscriptionId": str(b.definition), **consent}),
        ("/statuses/batch/write", {"inputs": [{"subscriberIdString": VICTIM, **v4_write}]}),
        ("/statuses/batch/read", {"inputs": [VICTIM]}),
        ("/statuses/batch/unsubscribe-all", {"inputs": [VICTIM]}),
        ("/statuses/batch/unsubscribe-all/read", {"inputs": [VICTIM]}),
        ("/{subscriberIdString}/unsubscribe-all", None),
        ("/statuses/{subscriberIdString}", v4_write),
        ("/links/generate", {"subscriberIdString": VICTIM, "subscriptionId": b.definition}),
        (f"{ADMIN}/portal", {"name": "A renamed"}),
        ("/rotate-link-secret", None),
        (unit, {"name": "A brand"}),
        (f"{unit}/{{unit_id}}", {"name": "renamed by A"}),
        (f"{ADMIN}/definitions", {"name": "A definition", "description": "", "businessUnitId": b.brand}),
        (
            "/definitions/{definition_id}",
            {
                "name": "renamed by A",
                "isActive": False,
                "translations": [{"languageCode": "de", "name": "von A", "description": "von A"}],
            },
        ),
        ("/deactivate", None),
        (f"{ADMIN}/webhooks", {"url": "https://hooks.example.com/a"}),
        ("/webhooks/{endpointId}", {"url": "https://hooks.example.com/taken-by-a", "enabled": True}),
        ("/replay", {"since": "2000-01-01T00:00:00Z"}),
    ]
    if path == f"{ADMIN}/imports":
        return None, import_file(b)
    for suffix, body in known:
        if path.endswith(suffix):
            return body, None
    # An operation added after this file: every id of B at once.
    return {
        "subscriptionId": b.definition,
        "businessUnitId": b.brand,
        "subscriberIdString": VICTIM,
        "emailAddress": VICTIM,
    }, None


def probes_of(document: dict[str, Any], b: PortalB) -> tuple[list[Probe], list[str]]:
    """Probes of every operation: its path and body aimed at B; the same with B's value in each query
    parameter it takes, one at a time (so that one refusal does not hide another) and then all
    together. Also the path parameters no B value is known for."""
    paths, queries = path_values(b), query_values(b)
    probes, unknown = [], []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            method = method.upper()
            parameters = operation.get("parameters", [])
            path = template
            for p in (p for p in parameters if p["in"] == "path"):
                if p["name"] not in paths:
                    unknown.append(f"{method} {template}: {p['name']}")
                path = path.replace(f"{{{p['name']}}}", paths.get(p["name"], "0"))
            names = {p["name"] for p in parameters if p["in"] == "query"}
            bare = {"channel": "EMAIL"} if "channel" in names else {}
            body, content = body_for(method, template, b)
            probes.append(Probe(method, path, bare, body, content))
            aimed = {name: value for name, value in queries.items() if name in names}
            variants = [{name: value} for name, value in aimed.items()] + ([aimed] if len(aimed) > 1 else [])
            probes += [Probe(method, path, {**bare, **variant}, body, content) for variant in variants]
    return probes, unknown


def test_every_operation_with_a_token_of_a_neither_shows_nor_changes_b(world: World) -> None:
    a, b = world.api, world.b
    rows, views = stored_rows(world.a.server, b.id), views_of_b(b)
    document = ok(a.get("/openapi.json"))
    probes, unknown = probes_of(document, b)
    assert not unknown, f"path parameters with no B value to aim at: {unknown}"

    operations = {(p.method, p.path) for p in probes}
    problems = [f"{p.method} {p.path} {p.params}: {problem}" for p in probes for problem in problems_with(p.send(a), b)]
    wait_for_imports(a)

    assert not problems, "\n".join(problems)
    # The judge would see B's data, were it there.
    assert problems_with(b.api.get(f"{ADMIN}/definitions/{b.definition}"), b)
    assert problems_with(b.api.get(f"{V4}/statuses/{VICTIM}", params={"channel": "EMAIL"}), b)
    assert len(operations) >= 80 and len(probes) > len(operations)
    assert_b_untouched(world, rows, views)
    # A rotated its own link secret and renamed its own portal; B's links still work.
    assert httpx.get(b.manage_url).status_code == 200


def test_a_reads_its_own_never_seen_subscriber_where_b_has_one(world: World) -> None:
    a = world.api
    a_ids = {d["id"] for d in ok(a.get(f"{ADMIN}/definitions"))["results"]}
    v3 = ok(a.get(f"{V3}/status/email/{VICTIM}"))["subscriptionStatuses"]
    assert {s["id"] for s in v3} <= a_ids and {s["status"] for s in v3} == {"NOT_SUBSCRIBED"}
    v4 = ok(a.get(f"{V4}/statuses/{VICTIM}", params={"channel": "EMAIL"}))["results"]
    assert {str(s["subscriptionId"]) for s in v4} <= a_ids and {s["status"] for s in v4} == {"NOT_SPECIFIED"}
    assert ok(a.get(f"{V4}/statuses/{VICTIM}/unsubscribe-all", params={"channel": "EMAIL"}))["results"] == []
    assert ok(a.get(f"{ADMIN}/subscribers/{VICTIM}/history"))["results"] == []
    subject = ok(a.get(f"{ADMIN}/subjects/{VICTIM}"))
    assert subject["portalId"] == world.a.id
    assert [subject[k] for k in ("storedStatuses", "wideStatuses", "history", "importRejects")] == [[], [], [], []]
    export = a.get(f"{ADMIN}/exports/statuses")
    assert export.status_code == 200 and VICTIM not in export.text
    assert ok(a.get(f"{ADMIN}/imports"))["results"] == []
    assert ok(a.get(f"{ADMIN}/webhooks"))["results"] == []


def test_cursors_of_b_page_through_a_only(world: World) -> None:
    a, b = world.api, world.b
    rows, views = stored_rows(world.a.server, b.id), views_of_b(b)
    for address in ("a1@a.example", VICTIM):
        ok(a.post(f"{V4}/statuses/{address}/unsubscribe-all", params={"channel": "EMAIL"}))
    own = {str(e["id"]) for e in world.a.events()}

    feed = ok(a.get(f"{ADMIN}/events", params={"after": b.feed_cursor, "limit": 1000}))
    assert {e["id"] for e in feed["results"]} == own
    history = ok(a.get(f"{ADMIN}/subscribers/{VICTIM}/history", params={"after": b.history_cursor}))
    assert {e["id"] for e in history["results"]} <= own
    for answer in (feed, history):
        assert MARKER not in json.dumps(answer).lower() and str(b.id) not in json.dumps(answer)
    # And B's feed from its own cursor holds none of A's events.
    later = ok(b.api.get(f"{ADMIN}/events", params={"after": b.feed_cursor}))["results"]
    assert later == []
    assert_b_untouched(world, rows, views)


def test_an_idempotency_key_of_b_replays_nothing_to_a(world: World) -> None:
    b = world.b
    rows, views = stored_rows(world.a.server, b.id), views_of_b(b)
    consent = {"legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "B-only consent proof"}
    # B's first request, byte for byte, with B's key.
    response = world.api.post(
        f"{V4}/statuses/{VICTIM}",
        json={"statusState": "SUBSCRIBED", "subscriptionId": b.definition, "channel": "EMAIL", **consent},
        headers={"Idempotency-Key": "shared-key"},
    )
    assert response.status_code == 404, response.text
    assert "idempotent-replayed" not in response.headers
    assert "b-only secret list" not in response.text.lower()
    assert_b_untouched(world, rows, views)


# -- links and pages ------------------------------------------------------------------------------------


def with_portal(url: str, old: int, new: int) -> str:
    marker = f"/preferences/{old}/"
    assert marker in url, url
    return url.replace(marker, f"/preferences/{new}/")


def test_links_of_one_portal_are_refused_at_the_other(world: World) -> None:
    a, b = world.a, world.b
    rows, views = stored_rows(a.server, b.id), views_of_b(b)
    a_rows = stored_rows(a.server, a.id)
    params = {"channel": "EMAIL"}
    links_of_a = ok(
        world.api.post(
            f"{V4}/links/generate", params=params, json={"subscriberIdString": VICTIM, "subscriptionId": a.marketing}
        )
    )
    links_of_b = ok(
        b.api.post(
            f"{V4}/links/generate", params=params, json={"subscriberIdString": VICTIM, "subscriptionId": b.definition}
        )
    )
    purposes = ("managePreferencesUrl", "unsubscribeAllUrl", "unsubscribeSingleUrl")
    tampered = [with_portal(links_of_a[k], a.id, b.id) for k in purposes]
    tampered += [with_portal(links_of_b[k], b.id, a.id) for k in purposes]
    problems = []
    with httpx.Client(timeout=30) as browser:
        # A genuine page of A, for a CSRF cookie and token a browser would hold.
        csrf = csrf_of(browser.get(links_of_a["managePreferencesUrl"]).text)
        for url in tampered:
            at_b = f"/preferences/{b.id}/" in url
            for response in (
                browser.get(url),
                browser.post(url, data={"List-Unsubscribe": "One-Click"}),
                browser.post(url, data={"csrf_token": csrf, "action": "unsubscribe_all", "reason": "other"}),
            ):
                if response.status_code not in (400, 403, 404):
                    problems.append(f"{response.request.method} {url}: {response.status_code}")
                problems += [f"{url}: {p}" for p in problems_with(response, b, page_of_b=at_b)]
    assert not problems, "\n".join(problems)
    assert_b_untouched(world, rows, views)
    assert stored_rows(a.server, a.id) == a_rows


def test_links_of_a_naming_ids_of_b_change_nothing_of_b(world: World) -> None:
    """A link genuinely signed by A, but for B's brand and B's definition (as a bug in link
    generation could make one): its pages show nothing of B and its one-click changes nothing of B."""
    a, b = world.a, world.b
    rows, views = stored_rows(a.server, b.id), views_of_b(b)
    problems = []
    with httpx.Client(timeout=30) as browser:
        for purpose in ("manage", "unsubscribe-all", "unsubscribe"):
            url = old_link(a, purpose, VICTIM, age_days=0, business_unit_id=b.brand, subscription_id=b.definition)
            page = browser.get(url)
            responses = [page, browser.post(url, data={"List-Unsubscribe": "One-Click"})]
            if page.status_code == 200:
                responses.append(
                    browser.post(url, data={"csrf_token": csrf_of(page.text), "action": "unsubscribe_all"})
                )
            problems += [f"{r.request.method} {url}: {p}" for r in responses for p in problems_with(r, b)]
    assert not problems, "\n".join(problems)
    assert_b_untouched(world, rows, views)


def test_pages_at_the_path_of_b_with_tokens_of_a_show_nothing_of_b(world: World) -> None:
    """Every page route, by hand (the pages are not in the OpenAPI document), at B's portal id."""
    a, b = world.a, world.b
    rows, views = stored_rows(a.server, b.id), views_of_b(b)
    token = old_link(a, "manage", VICTIM, age_days=0).rsplit("/", 1)[1]
    base = f"{a.server.base_url}/preferences/{b.id}"
    urls = [f"{base}/{purpose}/{token}" for purpose in ("manage", "unsubscribe-all", "unsubscribe")]
    problems = []
    with httpx.Client(timeout=30) as browser:
        for url in urls:
            for response in (browser.get(url), browser.post(url, data={"List-Unsubscribe": "One-Click"})):
                if response.status_code not in (400, 403, 404):
                    problems.append(f"{response.request.method} {url}: {response.status_code}")
                problems += [f"{url}: {p}" for p in problems_with(response, b, page_of_b=True)]
        for response in (
            browser.get(f"{base}/request-link"),
            browser.post(f"{base}/request-link", data={"email": VICTIM}),
        ):
            problems += [f"request-link: {p}" for p in problems_with(response, b, page_of_b=True)]
    assert not problems, "\n".join(problems)
    assert_b_untouched(world, rows, views)
