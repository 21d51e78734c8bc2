"""Data-subject erasure over HTTP and the CLI, on both stores. The acceptance: an erased address
cannot be emailed again through any import or v3 call, and its data is gone; only a new explicit
consent (v4 with a legal basis, or the preference page) brings it back."""

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from commprefs.domain.enums import Scope
from tests.client import V4, set_status, unsubscribe_all
from tests.conftest import PortalFixture, make_portal
from tests.pages.kit import links_for, submit
from tests.procs import run_cli
from tests.transfer.test_api import (
    EXPORT,
    SAMPLES,
    assert_hubspot_error,
    counts,
    history,
    run_import,
    v4_statuses,
    wide_statuses,
)

SUBJECTS = "/commprefs/v1/subjects/{}"
V3 = "/communication-preferences/v3"
EMAIL = {"channel": "EMAIL"}
TOMBSTONE_RE = re.compile(r"^erased:[0-9a-f]{64}$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ERASURE_SOURCE = "Data subject erasure"
ADDRESS = "erin.erased@example.com"
NEIGHBOUR = "nina.kept@example.com"
# Every column that could hold an address, per table the erasure must clear.
HOLDERS = {
    "subscription_status": ["subscriber"],
    "wide_status": ["subscriber"],
    "consent_event": ["subscriber", "legal_basis_explanation", "reason"],
    "import_reject": ["email", "raw"],
}


# -- helpers -------------------------------------------------------------------------------------------


def rows_holding(portal: PortalFixture, address: str) -> dict[str, int]:
    """How many rows of the portal mention `address`, per table (any case, anywhere in the column)."""

    def count(tx: Any) -> dict[str, int]:
        found = {}
        for table, columns in HOLDERS.items():
            where = " or ".join(f"lower({c}) like :pattern" for c in columns)
            query = text(f"select count(*) from {table} where portal_id = :portal and ({where})")
            found[table] = tx.conn.execute(query, {"portal": portal.id, "pattern": f"%{address}%"}).scalar_one()
        return found

    found: dict[str, int] = portal.server.store.read(count)
    return found


def assert_gone(portal: PortalFixture, address: str = ADDRESS) -> None:
    assert rows_holding(portal, address) == dict.fromkeys(HOLDERS, 0)


def tombstones(portal: PortalFixture) -> list[tuple[Any, ...]]:
    query = text(
        "select subscriber, channel, scope, business_unit_id, status, source from wide_status "
        "where portal_id = :portal and subscriber like 'erased:%' order by subscriber"
    )
    rows: list[tuple[Any, ...]] = portal.server.store.read(
        lambda tx: [tuple(r) for r in tx.conn.execute(query, {"portal": portal.id})]
    )
    return rows


def erase(api: httpx.Client, address: str = ADDRESS) -> dict[str, Any]:
    response = api.delete(SUBJECTS.format(address))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def subject(api: httpx.Client, address: str = ADDRESS) -> dict[str, Any]:
    response = api.get(SUBJECTS.format(address))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def feed_until(api: httpx.Client, subscriber: str, timeout: float = 15) -> list[dict[str, Any]]:
    """The portal's change feed up to the first event of `subscriber`. On PostgreSQL the feed holds
    an event back while any older transaction of the cluster is still open, so it is polled."""
    found: list[dict[str, Any]] = []
    after = None
    deadline = time.monotonic() + timeout
    while True:
        response = api.get("/commprefs/v1/events", params={"limit": 1000, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        found.extend(response.json()["results"])
        after = response.json()["paging"]["next"]["after"]
        if any(e["subscriberIdString"] == subscriber for e in found):
            return found
        assert time.monotonic() < deadline, f"no event of {subscriber} in the feed after {timeout}s"
        time.sleep(0.05)


def erasure_events(portal: PortalFixture) -> list[dict[str, Any]]:
    """The portal's recorded erasures (consent_event rows, committed or not yet in the feed)."""
    return [e for e in portal.events() if e["source"] == ERASURE_SOURCE]


def v3_statuses(api: httpx.Client, address: str = ADDRESS) -> dict[str, tuple[str, str]]:
    response = api.get(f"{V3}/status/email/{address}")
    assert response.status_code == 200, response.text
    return {s["name"]: (s["status"], s["sourceOfStatus"]) for s in response.json()["subscriptionStatuses"]}


def build_state(portal: PortalFixture, address: str = ADDRESS) -> None:
    """A consent with its legal basis, an opt-out from all, and a rejected import line, for `address`."""
    api = portal.client()
    set_status(
        api,
        address,
        portal.marketing,
        "SUBSCRIBED",
        legalBasis="CONSENT_WITH_NOTICE",
        legalBasisExplanation=f"Signed up at the stand as {address}",
    )
    unsubscribe_all(api, address)
    future = f"email,subscription_name,status,timestamp\n{address},One to One,UNSUBSCRIBED,2999-01-01T00:00:00Z\n"
    assert run_import(api, future.encode())["counts"] == counts(rows=1, rejected=1)


@dataclass
class Erased:
    portal: PortalFixture
    api: httpx.Client
    erasure: dict[str, Any]


@pytest.fixture
def erased(portal: PortalFixture) -> Erased:
    """A portal where ADDRESS had a history and was then erased; NEIGHBOUR keeps theirs."""
    build_state(portal)
    api = portal.client()
    set_status(api, NEIGHBOUR, portal.marketing, "SUBSCRIBED")
    assert all(rows_holding(portal, ADDRESS).values()), "the state to erase is not all there"
    return Erased(portal, api, erase(api))


# -- the erasure ---------------------------------------------------------------------------------------


def test_erasure_deletes_everything_held_and_leaves_only_a_tombstone(erased: Erased) -> None:
    portal, api, erasure = erased.portal, erased.api, erased.erasure
    assert set(erasure) == {"erased", "alreadyErased", "tombstone", "erasedAt", "deleted"}
    assert (erasure["erased"], erasure["alreadyErased"]) == (True, False)
    assert TOMBSTONE_RE.match(erasure["tombstone"]) and ISO_RE.match(erasure["erasedAt"])
    assert erasure["deleted"] == {
        "statuses": 1,
        "wideStatuses": 1,
        "events": 2,
        "importRejects": 1,
        "idempotentReplies": 0,
    }
    assert_gone(portal)
    assert portal.events(ADDRESS) == []
    assert tombstones(portal) == [(erasure["tombstone"], "EMAIL", "PORTAL_WIDE", 0, "UNSUBSCRIBED", ERASURE_SOURCE)]
    assert rows_holding(portal, NEIGHBOUR)["subscription_status"] == 1
    assert v4_statuses(api, NEIGHBOUR)["Marketing Information"]["status"] == "SUBSCRIBED"
    (recorded,) = erasure_events(portal)
    assert recorded["subscriber"] == erasure["tombstone"]
    everything = feed_until(api, erasure["tombstone"])
    (event,) = [e for e in everything if e["type"] == "subscriber.erased"]
    assert event["subscriberIdString"] == erasure["tombstone"]
    assert (event["source"], event["wideStatusType"], event["newStatus"]) == (
        ERASURE_SOURCE,
        "PORTAL_WIDE",
        "UNSUBSCRIBED",
    )
    assert event["occurredAt"] == erasure["erasedAt"]
    assert ADDRESS not in json.dumps(event).lower()
    assert ADDRESS not in json.dumps(everything).lower()
    assert history(api, ADDRESS) == []
    record = subject(api)
    assert record["erasedAt"] == erasure["erasedAt"] and record["emailAddress"] == ADDRESS
    assert (record["storedStatuses"], record["history"], record["importRejects"]) == ([], [], [])
    assert record["wideStatuses"] == [
        {
            "wideStatusType": "PORTAL_WIDE",
            "businessUnitId": 0,
            "status": "UNSUBSCRIBED",
            "source": ERASURE_SOURCE,
            "timestamp": erasure["erasedAt"],
        }
    ]
    assert {(s["status"], s["optedOutOfAll"]) for s in record["statuses"]} == {("UNSUBSCRIBED", "PORTAL_WIDE")}
    assert len(record["statuses"]) == 3
    exported = api.get(EXPORT).text
    assert ADDRESS not in exported and "erased:" not in exported and NEIGHBOUR in exported


def test_the_address_in_any_case_is_one_subject(erased: Erased) -> None:
    again = erase(erased.api, ADDRESS.upper())
    assert (again["alreadyErased"], again["tombstone"]) == (True, erased.erasure["tombstone"])
    assert subject(erased.api, ADDRESS.title())["erasedAt"] == erased.erasure["erasedAt"]


def test_erasing_twice_records_nothing_new(erased: Erased) -> None:
    api, erasure = erased.api, erased.erasure
    events_before = len(erased.portal.events())
    again = erase(api)
    assert again == {
        "erased": True,
        "alreadyErased": True,
        "tombstone": erasure["tombstone"],
        "erasedAt": erasure["erasedAt"],
        "deleted": {"statuses": 0, "wideStatuses": 0, "events": 0, "importRejects": 0, "idempotentReplies": 0},
    }
    assert len(erased.portal.events()) == events_before
    assert len(erasure_events(erased.portal)) == 1
    assert len(tombstones(erased.portal)) == 1


def test_an_address_never_seen_can_be_erased(portal: PortalFixture) -> None:
    api = portal.client()
    erasure = erase(api, "never.seen@example.com")
    assert erasure["alreadyErased"] is False and erasure["deleted"] == dict.fromkeys(erasure["deleted"], 0)
    assert {s["status"] for s in v4_statuses(api, "never.seen@example.com").values()} == {"UNSUBSCRIBED"}


def test_an_erased_address_reads_as_opted_out_of_all(erased: Erased) -> None:
    api = erased.api
    assert set(v3_statuses(api).values()) == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")}
    assert len(v3_statuses(api)) == 3
    assert {s["status"] for s in v4_statuses(api, ADDRESS).values()} == {"UNSUBSCRIBED"}
    (wide,) = wide_statuses(api, ADDRESS)
    assert (wide["wideStatusType"], wide["status"], wide["businessUnitId"]) == ("PORTAL_WIDE", "UNSUBSCRIBED", 0)
    assert wide["timestamp"] == erased.erasure["erasedAt"] and wide["subscriberIdString"] == ADDRESS
    read = api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": [ADDRESS]})
    assert {s["status"] for s in read.json()["results"][0]["statuses"]} == {"UNSUBSCRIBED"}
    api.post("/commprefs/v1/definitions", json={"name": "Launched after the erasure"})
    assert v3_statuses(api)["Launched after the erasure"] == ("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")
    assert_gone(erased.portal)


def test_no_v3_call_subscribes_an_erased_address(erased: Erased) -> None:
    api, marketing = erased.api, erased.portal.marketing
    body = {"emailAddress": ADDRESS, "subscriptionId": str(marketing)}
    with_basis = {**body, "legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "said yes on the phone"}
    for payload in (body, with_basis):
        refused = assert_hubspot_error(api.post(f"{V3}/subscribe", json=payload), 400)
        assert "cannot be updated because they have unsubscribed" in refused["message"]
    assert "already unsubscribed" in assert_hubspot_error(api.post(f"{V3}/unsubscribe", json=body), 400)["message"]
    for version in ("2025-09", "2026-09"):
        dated = f"/communication-preferences/{version}"
        refused = assert_hubspot_error(api.post(f"{dated}/subscribe", json=with_basis), 400)
        assert "unsubscribed" in refused["message"]
        resubscribe = assert_hubspot_error(api.post(f"{dated}/resubscribe", json=body), 400, "legalBasis")
        assert "erased" in resubscribe["message"]
    assert set(v3_statuses(api).values()) == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")}
    assert subject(api)["erasedAt"] == erased.erasure["erasedAt"]
    assert_gone(erased.portal)


def test_v4_subscribe_without_a_legal_basis_is_refused(erased: Erased) -> None:
    api, marketing = erased.api, erased.portal.marketing
    write = {"statusState": "SUBSCRIBED", "subscriptionId": marketing, "channel": "EMAIL"}
    refused = assert_hubspot_error(api.post(f"{V4}/statuses/{ADDRESS}", json=write), 400, "legalBasis")
    assert "erased" in refused["message"]
    half = {**write, "legalBasis": "CONSENT_WITH_NOTICE", "legalBasisExplanation": "  "}
    assert_hubspot_error(api.post(f"{V4}/statuses/{ADDRESS}", json=half), 400, "legalBasisExplanation")
    dated = api.post(f"/communication-preferences/2026-03/statuses/{ADDRESS}", json=write)
    assert_hubspot_error(dated, 400, "legalBasis")
    batch = api.post(
        f"{V4}/statuses/batch/write",
        json={"inputs": [{**write, "subscriberIdString": ADDRESS}, {**write, "subscriberIdString": NEIGHBOUR}]},
    )
    assert batch.status_code == 207, batch.text
    (error,) = batch.json()["errors"]
    assert error["context"]["inputIndex"] == ["0"] and error["context"]["subscriberIdString"] == [ADDRESS]
    assert error["errors"][0]["in"] == "legalBasis" and "erased" in error["message"]
    assert [r["subscriberIdString"] for r in batch.json()["results"]] == [NEIGHBOUR]
    assert {s["status"] for s in v4_statuses(api, ADDRESS).values()} == {"UNSUBSCRIBED"}
    assert_gone(erased.portal)


def test_unsubscribing_an_erased_address_stores_nothing(erased: Erased) -> None:
    api, portal = erased.api, erased.portal
    events_before = len(portal.events())
    for state in ("UNSUBSCRIBED", "NOT_SPECIFIED"):
        assert set_status(api, ADDRESS, portal.marketing, state)["setStatusSuccessReason"] == "NO_STATUS_CHANGE"
    for params in ({}, {"businessUnitId": 0}):
        response = unsubscribe_all(api, ADDRESS, verbose="true", **params)
        assert {s["setStatusSuccessReason"] for s in response.json()["results"]} == {"NO_STATUS_CHANGE"}
    batch = api.post(
        f"{V4}/statuses/batch/write",
        json={
            "inputs": [
                {
                    "subscriberIdString": ADDRESS,
                    "subscriptionId": portal.definitions["One to One"],
                    "statusState": "UNSUBSCRIBED",
                    "channel": "EMAIL",
                }
            ]
        },
    )
    assert batch.status_code == 200 and batch.json()["results"][0]["setStatusSuccessReason"] == "NO_STATUS_CHANGE"
    batch_all = api.post(
        f"{V4}/statuses/batch/unsubscribe-all", params={**EMAIL, "verbose": "true"}, json={"inputs": [ADDRESS]}
    )
    assert batch_all.status_code == 200
    assert {s["setStatusSuccessReason"] for s in batch_all.json()["results"][0]["statuses"]} == {"NO_STATUS_CHANGE"}
    v3 = api.post(f"{V3}/unsubscribe", json={"emailAddress": ADDRESS, "subscriptionId": str(portal.marketing)})
    assert v3.status_code == 400
    links = links_for(api, ADDRESS, subscriptionId=portal.marketing)
    for url in (links["unsubscribeAllUrl"], links["unsubscribeSingleUrl"]):
        assert httpx.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert len(portal.events()) == events_before
    assert_gone(portal)
    assert subject(api)["erasedAt"] == erased.erasure["erasedAt"]


def test_imports_never_bring_an_erased_address_back(erased: Erased) -> None:
    api, portal = erased.api, erased.portal
    own_format = (
        "email,scope,business_unit_id,subscription_name,status,legal_basis,legal_basis_explanation,timestamp\n"
        f"{ADDRESS},SUBSCRIPTION,0,Marketing Information,SUBSCRIBED,CONSENT_WITH_NOTICE,Form,2020-01-01T00:00:00Z\n"
        f"{ADDRESS.upper()},,,Customer Service Communication,SUBSCRIBED,PERFORMANCE_OF_CONTRACT,Contract,\n"
        f"{ADDRESS},PORTAL_WIDE,,,SUBSCRIBED,,,\n"
        f"{ADDRESS},BUSINESS_UNIT_WIDE,0,,UNSUBSCRIBED,,,\n"
        f"{ADDRESS},,,One to One,UNSUBSCRIBED,,,\n"
        "fresh@example.com,,,Marketing Information,SUBSCRIBED,,,\n"
    )
    for dry_run in ("true", "false"):
        done = run_import(api, own_format.encode(), dryRun=dry_run)
        assert done["counts"] == counts(rows=6, erased=5, applied=1)
    mailchimp = (SAMPLES / "mailchimp-subscribed.csv").read_text().replace("ada@example.com", ADDRESS)
    assert run_import(api, mailchimp.encode())["counts"] == counts(rows=3, erased=1, applied=2)
    hubspot = (SAMPLES / "hubspot-contacts.csv").read_text().replace("grace@example.com", ADDRESS)
    assert run_import(api, hubspot.encode())["counts"] == counts(rows=4, erased=1, applied=3)
    assert {s["status"] for s in v4_statuses(api, ADDRESS).values()} == {"UNSUBSCRIBED"}
    assert set(v3_statuses(api).values()) == {("NOT_SUBSCRIBED", "PORTAL_WIDE_STATUS")}
    assert v4_statuses(api, "fresh@example.com")["Marketing Information"]["status"] == "SUBSCRIBED"
    assert subject(api)["erasedAt"] == erased.erasure["erasedAt"]
    assert history(api, ADDRESS) == []
    assert_gone(portal)


# -- a new consent lifts it -------------------------------------------------------------------------------


def test_a_new_consent_with_its_legal_basis_lifts_the_tombstone(erased: Erased) -> None:
    api, portal = erased.api, erased.portal
    back = set_status(
        api,
        ADDRESS,
        portal.marketing,
        "SUBSCRIBED",
        legalBasis="LEGITIMATE_INTEREST_CLIENT",
        legalBasisExplanation="Bought a subscription on 2025-01-02",
    )
    assert (back["setStatusSuccessReason"], back["status"]) == ("RESUBSCRIBE_OCCURRED", "SUBSCRIBED")
    found = v4_statuses(api, ADDRESS)
    assert {name: s["status"] for name, s in found.items()} == {
        "Marketing Information": "SUBSCRIBED",
        "Customer Service Communication": "UNSUBSCRIBED",
        "One to One": "UNSUBSCRIBED",
    }
    assert found["Marketing Information"]["legalBasis"] == "LEGITIMATE_INTEREST_CLIENT"
    assert v3_statuses(api)["Marketing Information"] == ("SUBSCRIBED", "SUBSCRIPTION_STATUS")
    assert [(w["wideStatusType"], w["status"]) for w in wide_statuses(api, ADDRESS)] == [("PORTAL_WIDE", "SUBSCRIBED")]
    assert tombstones(portal) == []
    events = history(api, ADDRESS)
    assert {e["subscriberIdString"] for e in events} == {ADDRESS}
    consent = [e for e in events if e["subscriptionName"] == "Marketing Information"]
    assert [(e["newStatus"], e["legalBasis"], e["legalBasisExplanation"]) for e in consent] == [
        ("SUBSCRIBED", "LEGITIMATE_INTEREST_CLIENT", "Bought a subscription on 2025-01-02")
    ]
    assert "Signed up at the stand" not in json.dumps(events), "history from before the erasure came back"
    record = subject(api)
    assert record["erasedAt"] is None and len(record["storedStatuses"]) == 3
    assert ADDRESS in api.get(EXPORT).text
    # Imports and v3 now see an ordinary address again.
    assert run_import(api, f"email,subscription_name,status\n{ADDRESS},One to One,UNSUBSCRIBED\n".encode())[
        "counts"
    ] == counts(rows=1, unchanged=1)
    # And it can be erased again.
    again = erase(api)
    assert again["alreadyErased"] is False and again["tombstone"] == erased.erasure["tombstone"]
    assert again["deleted"]["statuses"] == 3 and again["deleted"]["wideStatuses"] == 1
    assert again["deleted"]["events"] == len(events)
    assert_gone(portal)
    assert len(tombstones(portal)) == 1 and len(erasure_events(portal)) == 2
    assert {s["status"] for s in v4_statuses(api, ADDRESS).values()} == {"UNSUBSCRIBED"}


def test_a_batch_write_with_a_legal_basis_lifts_it_too(erased: Erased) -> None:
    api, portal = erased.api, erased.portal
    response = api.post(
        f"{V4}/statuses/batch/write",
        json={
            "inputs": [
                {
                    "subscriberIdString": ADDRESS,
                    "subscriptionId": portal.definitions["Customer Service Communication"],
                    "statusState": "SUBSCRIBED",
                    "channel": "EMAIL",
                    "legalBasis": "PERFORMANCE_OF_CONTRACT",
                    "legalBasisExplanation": "Support contract",
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["setStatusSuccessReason"] == "RESUBSCRIBE_OCCURRED"
    assert tombstones(portal) == []
    assert v3_statuses(api)["Customer Service Communication"] == ("SUBSCRIBED", "SUBSCRIPTION_STATUS")


def test_ticking_a_box_on_the_preference_page_lifts_it(erased: Erased) -> None:
    api, portal = erased.api, erased.portal
    manage = links_for(api, ADDRESS)["managePreferencesUrl"]
    with httpx.Client(headers={"User-Agent": "Mozilla/5.0 (test browser)"}, timeout=30) as browser:
        page = browser.get(manage)
        assert page.status_code == 200
        assert f'name="shown" value="{portal.marketing}:0"' in page.text, "the page must show it unsubscribed"
        assert submit(browser, manage, {"action": "unsubscribe_all"}).status_code == 200
        assert_gone(portal)
        ticked = [("action", "save"), ("shown", f"{portal.marketing}:0"), ("subscription", str(portal.marketing))]
        saved = submit(browser, manage, ticked)
        assert saved.status_code == 200
    found = v4_statuses(api, ADDRESS)
    assert found["Marketing Information"]["status"] == "SUBSCRIBED"
    assert (found["Marketing Information"]["legalBasis"], found["Marketing Information"]["source"]) == (
        "CONSENT_WITH_NOTICE",
        "Preference page",
    )
    assert found["Customer Service Communication"]["status"] == found["One to One"]["status"] == "UNSUBSCRIBED"
    assert tombstones(portal) == []
    assert subject(api)["erasedAt"] is None
    consent = next(e for e in history(api, ADDRESS) if e["subscriptionName"] == "Marketing Information")
    assert consent["source"] == "Preference page" and consent["actor"] == {"type": "contact"}
    assert consent["userAgent"] == "Mozilla/5.0 (test browser)"


# -- portals, scopes, the CLI -----------------------------------------------------------------------------


def test_erasure_stays_in_its_portal(portal: PortalFixture) -> None:
    other = make_portal(portal.server)
    build_state(portal)
    build_state(other)
    theirs = other.client()
    their_statuses = v4_statuses(theirs, ADDRESS)
    their_events = other.events(ADDRESS)
    mine = erase(portal.client())
    assert v4_statuses(theirs, ADDRESS) == their_statuses
    assert other.events(ADDRESS) == their_events and len(their_events) == 2
    assert subject(theirs)["erasedAt"] is None
    assert all(rows_holding(other, ADDRESS).values())
    assert tombstones(other) == []
    assert erasure_events(other) == []
    assert_gone(portal)
    theirs_erased = erase(theirs)
    assert theirs_erased["alreadyErased"] is False
    assert theirs_erased["tombstone"] != mine["tombstone"], "the tombstone key must be salted per portal"
    assert [t[0] for t in tombstones(portal)] == [mine["tombstone"]]
    assert [t[0] for t in tombstones(other)] == [theirs_erased["tombstone"]]


def test_data_subject_requests_need_the_admin_scope(portal: PortalFixture) -> None:
    build_state(portal)
    held = rows_holding(portal, ADDRESS)
    everything_else = [Scope.READ_WRITE, Scope.BATCH_READ, Scope.BATCH_WRITE, Scope.WRITE]
    api = portal.client(portal.token_with(*everything_else))
    for response in (api.delete(SUBJECTS.format(ADDRESS)), api.get(SUBJECTS.format(ADDRESS))):
        assert assert_hubspot_error(response, 403)["category"] == "MISSING_SCOPES"
        assert ADDRESS not in response.text
    assert rows_holding(portal, ADDRESS) == held
    assert tombstones(portal) == []
    admin = portal.client(portal.token_with(Scope.ADMIN))
    assert_hubspot_error(admin.delete(SUBJECTS.format("not-an-address")), 400, "emailAddress")
    assert_hubspot_error(admin.get(SUBJECTS.format("not-an-address")), 400, "emailAddress")
    assert tombstones(portal) == []


def test_the_subject_access_record_holds_everything(portal: PortalFixture) -> None:
    build_state(portal)
    api = portal.client()
    record = subject(api)
    assert record["portalId"] == portal.id and record["erasedAt"] is None
    assert [(s["subscriptionName"], s["status"], s["legalBasis"]) for s in record["storedStatuses"]] == [
        ("Marketing Information", "SUBSCRIBED", "CONSENT_WITH_NOTICE")
    ]
    assert [(w["wideStatusType"], w["status"]) for w in record["wideStatuses"]] == [("PORTAL_WIDE", "UNSUBSCRIBED")]
    assert {s["status"] for s in record["statuses"]} == {"UNSUBSCRIBED"}
    assert len(record["history"]) == 2 and {"ip", "userAgent"} <= set(record["history"][0])
    (reject,) = record["importRejects"]
    assert reject["line"] == 2 and "future" in reject["reason"] and ADDRESS in reject["values"]


def test_subject_export_and_erase_from_the_cli(portal: PortalFixture, tmp_path: Path) -> None:
    build_state(portal)
    url, pid = portal.server.store.url, str(portal.id)

    def cli_json(*args: str) -> dict[str, Any]:
        done = run_cli(url, "subject", *args, "--portal", pid, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    exported = cli_json("export", ADDRESS.upper())
    assert exported["emailAddress"] == ADDRESS and exported["erasedAt"] is None
    assert exported["storedStatuses"] == subject(portal.client())["storedStatuses"]
    assert len(exported["history"]) == 2 and len(exported["importRejects"]) == 1
    erasure = cli_json("erase", ADDRESS, "--yes")
    assert (erasure["erased"], erasure["alreadyErased"]) == (True, False)
    assert TOMBSTONE_RE.match(erasure["tombstone"])
    assert erasure["deleted"] == {
        "statuses": 1,
        "wideStatuses": 1,
        "events": 2,
        "importRejects": 1,
        "idempotentReplies": 0,
    }
    assert_gone(portal)
    api = portal.client()
    assert subject(api)["erasedAt"] == erasure["erasedAt"]
    assert {s["status"] for s in v4_statuses(api, ADDRESS).values()} == {"UNSUBSCRIBED"}
    after = cli_json("export", ADDRESS)
    assert after["erasedAt"] == erasure["erasedAt"]
    assert (after["storedStatuses"], after["history"], after["importRejects"]) == ([], [], [])
    assert [e["subscriber"] for e in erasure_events(portal)] == [erasure["tombstone"]]


# -- what erasure must also reach --------------------------------------------------------------------


def test_erasure_removes_rejected_lines_whatever_the_column_order(portal: PortalFixture) -> None:
    api = portal.client()
    hubspot = f"Record ID,Unsubscribed from all email,Email,Last Modified Date\n1,true,{ADDRESS},2999-01-01 00:00\n"
    assert run_import(api, hubspot.encode())["counts"] == counts(rows=1, rejected=1)
    assert rows_holding(portal, ADDRESS)["import_reject"] == 1
    erase(api)
    assert_gone(portal)


def test_erasure_removes_cached_idempotent_answers(portal: PortalFixture) -> None:
    api = portal.client()
    write = {"statusState": "SUBSCRIBED", "subscriptionId": portal.marketing, "channel": "EMAIL"}
    sent = api.post(f"{V4}/statuses/{ADDRESS}", json=write, headers={"Idempotency-Key": "erasure-cache"})
    assert sent.status_code == 200
    erase(api)
    query = text("select body from idempotency_key where portal_id = :portal")
    bodies = portal.server.store.read(lambda tx: [bytes(r.body) for r in tx.conn.execute(query, {"portal": portal.id})])
    assert not any(ADDRESS.encode() in body for body in bodies)
