"""Which routes exist, in every version, and which scopes each one needs.

The table below is written out by hand on purpose: a renamed, dropped or added path, or a changed
scope, fails a test here instead of silently changing the API (or falling off a fast path). It is
checked against the served /openapi.json and against real requests, never against routing internals.
"""

import re

import httpx

from commprefs.domain.enums import Scope
from tests.conftest import PortalFixture

# The scope strings, spelled out (not taken from the enum) so that renaming a scope fails too.
READ = "communication_preferences.read"
WRITE = "communication_preferences.write"
READ_WRITE = "communication_preferences.read_write"
BATCH_READ = "communication_preferences.statuses.batch.read"
BATCH_WRITE = "communication_preferences.statuses.batch.write"
ADMIN = "commprefs.admin"
ALL_SCOPES = frozenset({READ, WRITE, READ_WRITE, BATCH_READ, BATCH_WRITE, ADMIN})

# What an operation needs: alternatives, each a set of scopes a token must hold all of.
Need = tuple[frozenset[str], ...]
NEEDS_READ: Need = (frozenset({READ}), frozenset({READ_WRITE}))
NEEDS_WRITE: Need = (frozenset({WRITE}), frozenset({READ_WRITE}))
NEEDS_READ_AND_WRITE: Need = (frozenset({READ, WRITE}), frozenset({READ_WRITE}))
NEEDS_BATCH_READ: Need = (frozenset({BATCH_READ}),)
NEEDS_BATCH_WRITE: Need = (frozenset({BATCH_WRITE}),)
NEEDS_ADMIN: Need = (frozenset({ADMIN}),)
NEEDS_READ_OR_ADMIN: Need = (frozenset({READ}), frozenset({READ_WRITE}), frozenset({ADMIN}))
NEEDS_BATCH_READ_OR_ADMIN: Need = (frozenset({BATCH_READ}), frozenset({ADMIN}))

CP = "/communication-preferences"
ROUTES: list[tuple[str, str, Need]] = [
    # v3
    ("GET", f"{CP}/v3/definitions", NEEDS_READ),
    ("GET", f"{CP}/v3/status/email/{{emailAddress}}", NEEDS_READ),
    ("POST", f"{CP}/v3/subscribe", NEEDS_WRITE),
    ("POST", f"{CP}/v3/unsubscribe", NEEDS_WRITE),
    # v3 as its document of 2024-03-18 had it too
    ("POST", f"{CP}/v3/status/email/bulk", NEEDS_READ),
    ("POST", f"{CP}/v3/resubscribe", NEEDS_WRITE),
    # v4
    ("GET", f"{CP}/v4/definitions", NEEDS_READ),
    ("POST", f"{CP}/v4/statuses/batch/read", NEEDS_BATCH_READ),
    ("POST", f"{CP}/v4/statuses/batch/write", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/v4/statuses/batch/unsubscribe-all", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/v4/statuses/batch/unsubscribe-all/read", NEEDS_BATCH_READ),
    ("GET", f"{CP}/v4/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_READ),
    ("POST", f"{CP}/v4/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_WRITE),
    ("GET", f"{CP}/v4/statuses/{{subscriberIdString}}", NEEDS_READ),
    ("POST", f"{CP}/v4/statuses/{{subscriberIdString}}", NEEDS_WRITE),
    ("POST", f"{CP}/v4/links/generate", NEEDS_READ_AND_WRITE),
    # 2026-03: v4's operations
    ("GET", f"{CP}/2026-03/definitions", NEEDS_READ),
    ("POST", f"{CP}/2026-03/statuses/batch/read", NEEDS_BATCH_READ),
    ("POST", f"{CP}/2026-03/statuses/batch/write", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2026-03/statuses/batch/unsubscribe-all", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2026-03/statuses/batch/unsubscribe-all/read", NEEDS_BATCH_READ),
    ("GET", f"{CP}/2026-03/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_READ),
    ("POST", f"{CP}/2026-03/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_WRITE),
    ("GET", f"{CP}/2026-03/statuses/{{subscriberIdString}}", NEEDS_READ),
    ("POST", f"{CP}/2026-03/statuses/{{subscriberIdString}}", NEEDS_WRITE),
    ("POST", f"{CP}/2026-03/links/generate", NEEDS_READ_AND_WRITE),
    # 2025-09: v4's operations, and v3's status operations with resubscribe
    ("GET", f"{CP}/2025-09/definitions", NEEDS_READ),
    ("POST", f"{CP}/2025-09/statuses/batch/read", NEEDS_BATCH_READ),
    ("POST", f"{CP}/2025-09/statuses/batch/write", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2025-09/statuses/batch/unsubscribe-all", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2025-09/statuses/batch/unsubscribe-all/read", NEEDS_BATCH_READ),
    ("GET", f"{CP}/2025-09/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_READ),
    ("POST", f"{CP}/2025-09/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_WRITE),
    ("GET", f"{CP}/2025-09/statuses/{{subscriberIdString}}", NEEDS_READ),
    ("POST", f"{CP}/2025-09/statuses/{{subscriberIdString}}", NEEDS_WRITE),
    ("POST", f"{CP}/2025-09/links/generate", NEEDS_READ_AND_WRITE),
    ("GET", f"{CP}/2025-09/status/email/{{emailAddress}}", NEEDS_READ),
    ("POST", f"{CP}/2025-09/subscribe", NEEDS_WRITE),
    ("POST", f"{CP}/2025-09/unsubscribe", NEEDS_WRITE),
    ("POST", f"{CP}/2025-09/resubscribe", NEEDS_WRITE),
    # 2026-09: the same as 2025-09
    ("GET", f"{CP}/2026-09/definitions", NEEDS_READ),
    ("POST", f"{CP}/2026-09/statuses/batch/read", NEEDS_BATCH_READ),
    ("POST", f"{CP}/2026-09/statuses/batch/write", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2026-09/statuses/batch/unsubscribe-all", NEEDS_BATCH_WRITE),
    ("POST", f"{CP}/2026-09/statuses/batch/unsubscribe-all/read", NEEDS_BATCH_READ),
    ("GET", f"{CP}/2026-09/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_READ),
    ("POST", f"{CP}/2026-09/statuses/{{subscriberIdString}}/unsubscribe-all", NEEDS_WRITE),
    ("GET", f"{CP}/2026-09/statuses/{{subscriberIdString}}", NEEDS_READ),
    ("POST", f"{CP}/2026-09/statuses/{{subscriberIdString}}", NEEDS_WRITE),
    ("POST", f"{CP}/2026-09/links/generate", NEEDS_READ_AND_WRITE),
    ("GET", f"{CP}/2026-09/status/email/{{emailAddress}}", NEEDS_READ),
    ("POST", f"{CP}/2026-09/subscribe", NEEDS_WRITE),
    ("POST", f"{CP}/2026-09/unsubscribe", NEEDS_WRITE),
    ("POST", f"{CP}/2026-09/resubscribe", NEEDS_WRITE),
    # commprefs' own admin API
    ("GET", "/commprefs/v1/portal", NEEDS_ADMIN),
    ("PATCH", "/commprefs/v1/portal", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/portal/rotate-link-secret", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/business-units", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/business-units", NEEDS_ADMIN),
    ("PATCH", "/commprefs/v1/business-units/{unit_id}", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/definitions", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/definitions", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/definitions/{definition_id}", NEEDS_ADMIN),
    ("PATCH", "/commprefs/v1/definitions/{definition_id}", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/definitions/{definition_id}/deactivate", NEEDS_ADMIN),
    ("DELETE", "/commprefs/v1/definitions/{definition_id}/translations/{language}", NEEDS_ADMIN),
    # history and the change feed
    ("GET", "/commprefs/v1/subscribers/{emailAddress}/history", NEEDS_READ_OR_ADMIN),
    ("GET", "/commprefs/v1/events", NEEDS_READ_OR_ADMIN),
    # webhooks
    ("GET", "/commprefs/v1/webhooks", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/webhooks", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/webhooks/{endpointId}", NEEDS_ADMIN),
    ("PATCH", "/commprefs/v1/webhooks/{endpointId}", NEEDS_ADMIN),
    ("DELETE", "/commprefs/v1/webhooks/{endpointId}", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/webhooks/{endpointId}/deliveries", NEEDS_ADMIN),
    ("POST", "/commprefs/v1/webhooks/{endpointId}/replay", NEEDS_ADMIN),
    # imports, exports and data subjects
    ("POST", "/commprefs/v1/imports", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/imports", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/imports/{importId}", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/imports/{importId}/rejects", NEEDS_ADMIN),
    ("GET", "/commprefs/v1/exports/statuses", NEEDS_BATCH_READ_OR_ADMIN),
    ("GET", "/commprefs/v1/subjects/{emailAddress}", NEEDS_ADMIN),
    ("DELETE", "/commprefs/v1/subjects/{emailAddress}", NEEDS_ADMIN),
]

# Served outside the document, without a token.
UNDOCUMENTED_GETS = ["/healthz", "/readyz", "/metrics", "/robots.txt"]

# Dummy values for path parameters: the requests need only reach the scope check.
PATH_VALUES = {
    "emailAddress": "routes@example.com",
    "subscriberIdString": "routes@example.com",
    "unit_id": "1",
    "definition_id": "1",
    "language": "de",
    "endpointId": "1",
    "importId": "1",
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def concrete(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: PATH_VALUES[m.group(1)], template)


def test_the_table_has_each_operation_once() -> None:
    operations = [(method, path) for method, path, _ in ROUTES]
    assert len(operations) == len(set(operations))
    assert {scope for _, _, need in ROUTES for scopes in need for scope in scopes} == ALL_SCOPES
    assert {s.value for s in Scope} == ALL_SCOPES, "a scope was added or renamed: pin it in ROUTES"


def test_the_served_document_has_exactly_the_pinned_operations(api: httpx.Client) -> None:
    response = api.get("/openapi.json")
    assert response.status_code == 200, response.text
    served = {
        (method.upper(), path)
        for path, item in response.json()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    pinned = {(method, path) for method, path, _ in ROUTES}
    unpinned, missing = sorted(served - pinned), sorted(pinned - served)
    assert not unpinned, f"served but not pinned: {unpinned}"
    assert not missing, f"pinned but not served: {missing}"


def test_every_operation_needs_exactly_its_pinned_scopes(portal: PortalFixture) -> None:
    """Without any of its scopes an operation answers HubSpot's 403 naming them; with one of its
    alternatives it does not (whatever else it answers to the dummy inputs); with only part of an
    alternative it is a 403 again. Requests carry no body, so nothing reaches a write."""
    clients: dict[frozenset[str], httpx.Client] = {}

    def client(scopes: frozenset[str]) -> httpx.Client:
        if scopes not in clients:
            clients[scopes] = portal.client(portal.token_with(*(Scope(s) for s in sorted(scopes))))
        return clients[scopes]

    problems: list[str] = []
    for method, template, need in ROUTES:
        path = concrete(template)
        named = sorted(set().union(*need))
        refused = [ALL_SCOPES - set(named)]
        refused += [alternative - {scope} for alternative in need if len(alternative) > 1 for scope in alternative]
        for scopes in refused:
            response = client(frozenset(scopes)).request(method, path)
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code != 403 or body.get("category") != "MISSING_SCOPES":
                problems.append(f"{method} {template} with {sorted(scopes)}: {response.status_code} {response.text}")
                continue
            required = body.get("errors", [{}])[0].get("context", {}).get("requiredGranularScopes")
            if required != named:
                problems.append(f"{method} {template}: the 403 names {required}, not {named}")
        for alternative in need:
            response = client(alternative).request(method, path)
            if response.status_code in (401, 403):
                problems.append(
                    f"{method} {template} with {sorted(alternative)}: {response.status_code} {response.text}"
                )
    assert not problems, "\n".join(problems)


def test_the_undocumented_routes_answer_without_a_token(portal: PortalFixture) -> None:
    with httpx.Client(base_url=portal.server.base_url) as anonymous:
        for path in UNDOCUMENTED_GETS:
            response = anonymous.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
