"""The pytest plugin (commprefs.testing): the example of docs/testing-plugin.md run the way a user runs it, and the
`commprefs_server` fixture's API, used directly (our own runs load the plugin through its entry point)."""

import re
from pathlib import Path

import pytest

from commprefs.store import Store
from commprefs.testing import CommprefsApiError, CommprefsServer
from tests.conftest import postgres_database

PLUGIN_DOC = Path(__file__).parents[1] / "docs" / "testing-plugin.md"
HEADING = "# Use commprefs as HubSpot in your tests"
DEFAULT_NAMES = {"Marketing Information", "Customer Service Communication", "One to One"}
V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
# Inner runs are a user's project: one test file, no conftest, the plugin found through its entry point only.
NO_CACHE = ("-p", "no:cacheprovider")


def documented_example() -> str:
    page = PLUGIN_DOC.read_text()
    assert page.startswith(f"{HEADING}\n"), f"{PLUGIN_DOC.name} does not start with {HEADING!r}"
    section = page.split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, f"no python block under {HEADING!r}"
    return block.group(1)


def test_documented_example_passes_in_a_project_without_conftest(pytester: pytest.Pytester) -> None:
    example = documented_example()
    tests = len(re.findall(r"^def test_", example, re.M))
    assert tests >= 1
    pytester.makepyfile(test_example=example)
    result = pytester.runpytest_subprocess(*NO_CACHE)
    result.assert_outcomes(passed=tests)


def test_a_server_that_cannot_start_fails_the_tests_with_its_output(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMPREFS_WORKERS", "many")  # the server's settings refuse it; the migration does not read it
    pytester.makepyfile("def test_uses_it(commprefs_server):\n    pass\n")
    result = pytester.runpytest_subprocess(*NO_CACHE)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*commprefs serve exited with code 1 before it was ready*", "*workers*"])


@pytest.mark.parametrize("where", ["option", "ini"])
def test_database_url_puts_the_server_on_postgresql(pytester: pytest.Pytester, where: str) -> None:
    with postgres_database() as url:  # skipped unless COMMPREFS_TEST_DATABASE_URL is set
        pytester.makepyfile(
            "def test_writes(commprefs_server):\n"
            "    commprefs_server.set_status('pg@example.com', commprefs_server.marketing_id, 'SUBSCRIBED')\n"
        )
        if where == "ini":
            pytester.makeini(f"[pytest]\ncommprefs_database_url = {url}\n")
            result = pytester.runpytest_subprocess(*NO_CACHE)
        else:
            result = pytester.runpytest_subprocess(*NO_CACHE, f"--commprefs-database-url={url}")
        # The write passing proves the server knew the portal the plugin created in this database.
        result.assert_outcomes(passed=1)
        store = Store(url)
        try:
            assert store.read(lambda tx: tx.portals.count_portals()) == 1
        finally:
            store.close()


SEEN_PORTALS: list[int] = []


@pytest.mark.parametrize("run", ["first", "second"])
def test_each_test_gets_a_fresh_portal(commprefs_server: CommprefsServer, run: str) -> None:
    assert set(commprefs_server.definition_ids) == DEFAULT_NAMES
    # The other run wrote this address; in a fresh portal it is still untouched.
    statuses = commprefs_server.statuses("fresh@example.com")
    assert statuses == dict.fromkeys(commprefs_server.definition_ids.values(), "NOT_SPECIFIED")
    commprefs_server.set_status("fresh@example.com", commprefs_server.marketing_id, "SUBSCRIBED")
    assert commprefs_server.portal_id not in SEEN_PORTALS
    SEEN_PORTALS.append(commprefs_server.portal_id)


def test_the_token_has_every_scope(commprefs_server: CommprefsServer) -> None:
    api = commprefs_server.client()
    subscribe = {"emailAddress": "scopes@example.com", "subscriptionId": str(commprefs_server.marketing_id)}
    write = {"subscriberIdString": "scopes@example.com", "channel": "EMAIL", "statusState": "UNSUBSCRIBED"}
    write["subscriptionId"] = commprefs_server.marketing_id
    calls = {
        "read": api.get(f"{V3}/definitions"),
        "write": api.post(f"{V3}/subscribe", json=subscribe),
        "batch read": api.post(f"{V4}/statuses/batch/read", params={"channel": "EMAIL"}, json={"inputs": ["a@b.io"]}),
        "batch write": api.post(f"{V4}/statuses/batch/write", params={"channel": "EMAIL"}, json={"inputs": [write]}),
        "admin": api.get("/commprefs/v1/portal"),
    }
    assert {scope: r.status_code for scope, r in calls.items()} == dict.fromkeys(calls, 200)
    assert calls["admin"].json()["id"] == commprefs_server.portal_id


def test_create_definition_is_listed_by_v3(commprefs_server: CommprefsServer) -> None:
    created = commprefs_server.create_definition("Webinars", "Invitations to our webinars.", purpose="Events")
    assert created not in commprefs_server.definition_ids.values()
    response = commprefs_server.client().get(f"{V3}/definitions")
    assert response.status_code == 200
    listed = {d["id"]: d for d in response.json()["subscriptionDefinitions"]}
    webinars = listed[str(created)]
    assert webinars["name"] == "Webinars" and webinars["description"] == "Invitations to our webinars."
    assert webinars["purpose"] == "Events" and webinars["isInternal"] is False


def test_set_status_then_statuses(commprefs_server: CommprefsServer) -> None:
    email = "Round.Trip+news@example.com"  # a `+` and capitals survive the path
    one_to_one = commprefs_server.definition_ids["One to One"]
    result = commprefs_server.set_status(email, commprefs_server.marketing_id, "SUBSCRIBED")
    assert (result["status"], result["setStatusSuccessReason"]) == ("SUBSCRIBED", "REQUESTED_CHANGE_OCCURRED")
    commprefs_server.set_status(email, one_to_one, "UNSUBSCRIBED")
    assert commprefs_server.statuses(email.lower()) == {
        commprefs_server.marketing_id: "SUBSCRIBED",
        one_to_one: "UNSUBSCRIBED",
        commprefs_server.definition_ids["Customer Service Communication"]: "NOT_SPECIFIED",
    }


def test_a_refused_call_raises_with_the_servers_answer(commprefs_server: CommprefsServer) -> None:
    with pytest.raises(CommprefsApiError) as refused:
        commprefs_server.set_status("x@example.com", 999_999_999, "SUBSCRIBED")
    assert refused.value.status_code == 404
    assert "OBJECT_NOT_FOUND" in str(refused.value)


def test_gdpr_portal_needs_a_legal_basis_to_subscribe(commprefs_gdpr_server: CommprefsServer) -> None:
    server = commprefs_gdpr_server
    with pytest.raises(CommprefsApiError) as refused:
        server.set_status("eu@example.com", server.marketing_id, "SUBSCRIBED")
    assert refused.value.status_code == 400
    why = "Ticked the box at the fair."
    basis = {"legal_basis": "CONSENT_WITH_NOTICE", "legal_basis_explanation": why}
    result = server.set_status("eu@example.com", server.marketing_id, "SUBSCRIBED", **basis)
    assert (result["legalBasis"], result["legalBasisExplanation"]) == ("CONSENT_WITH_NOTICE", why)
    assert server.statuses("eu@example.com")[server.marketing_id] == "SUBSCRIBED"
