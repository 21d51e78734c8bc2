"""The history API and the change feed: proof of every change, and a feed that never skips."""

import threading
import time
from typing import Any

import httpx
import pytest

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import Scope, Source, Status
from commprefs.domain.model import Actor
from tests.client import set_status
from tests.conftest import PortalFixture, make_portal
from tests.pages.kit import links_for

HISTORY = "/commprefs/v1/subscribers/{}/history"


def history(api: httpx.Client, email: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a subscriber's history, following paging.next.after."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        response = api.get(HISTORY.format(email), params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(body["results"])
        after = body.get("paging", {}).get("next", {}).get("after")
        if not after:
            return found


def feed(api: httpx.Client, after: str | None = None, limit: int = 100) -> tuple[list[dict[str, Any]], str]:
    params: dict[str, Any] = {"limit": limit}
    if after:
        params["after"] = after
    response = api.get("/commprefs/v1/events", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["results"], body["paging"]["next"]["after"]


def test_history_shows_every_change_newest_first_with_its_proof(api: httpx.Client, portal: PortalFixture) -> None:
    email = "proof@example.com"
    set_status(api, email, portal.marketing, "SUBSCRIBED")
    api.post(
        "/communication-preferences/v3/unsubscribe",
        json={
            "emailAddress": email,
            "subscriptionId": str(portal.marketing),
            "legalBasis": "LEGITIMATE_INTEREST_CLIENT",
            "legalBasisExplanation": "asked by phone",
        },
    )
    httpx.post(
        links_for(api, email)["unsubscribeAllUrl"],
        data={"List-Unsubscribe": "One-Click"},
        headers={"User-Agent": "Mail client"},
    )
    found = history(api, email)
    assert [(e["type"], e["newStatus"]) for e in found] == [
        ("subscription.opted_out_of_all", "UNSUBSCRIBED"),
        ("subscription.status_changed", "UNSUBSCRIBED"),
        ("subscription.status_changed", "SUBSCRIBED"),
    ]
    one_click, unsubscribe, subscribe = found
    assert one_click["source"] == "List-unsubscribe header" and one_click["actor"] == {"type": "contact"}
    assert one_click["ip"] == "127.0.0.1" and one_click["userAgent"] == "Mail client"
    assert one_click["wideStatusType"] == "PORTAL_WIDE" and one_click["subscriptionId"] is None
    assert unsubscribe["legalBasis"] == "LEGITIMATE_INTEREST_CLIENT"
    assert unsubscribe["legalBasisExplanation"] == "asked by phone"
    assert unsubscribe["subscriptionName"] == "Marketing Information"
    assert subscribe["actor"]["type"] == "token" and subscribe["actor"]["name"] == "test"
    assert subscribe["oldStatus"] == "NOT_SPECIFIED" and subscribe["source"] == "Public status API"
    assert [int(e["id"]) for e in found] == sorted((int(e["id"]) for e in found), reverse=True)
    assert found[0]["occurredAt"].endswith("Z")


def test_history_pages_are_complete_and_stable(api: httpx.Client, portal: PortalFixture) -> None:
    email = "pages@example.com"
    for state in ("SUBSCRIBED", "UNSUBSCRIBED") * 4:
        set_status(api, email, portal.marketing, state)
    first = api.get(HISTORY.format(email), params={"limit": 3}).json()
    after = first["paging"]["next"]["after"]
    # A change made while paging lands at the top, not inside the pages still to read.
    set_status(api, email, portal.marketing, "SUBSCRIBED")
    rest: list[dict[str, Any]] = []
    while after:
        page = api.get(HISTORY.format(email), params={"limit": 3, "after": after}).json()
        rest.extend(page["results"])
        after = page.get("paging", {}).get("next", {}).get("after")
    ids = [e["id"] for e in first["results"] + rest]
    assert len(ids) == len(set(ids)) == 8
    assert [e["id"] for e in history(api, email, limit=2)] == [str(e["id"]) for e in reversed(portal.events(email))]


def test_history_and_feed_need_a_read_scope_and_stay_in_the_portal(portal: PortalFixture) -> None:
    email = "scoped@example.com"
    with portal.client() as api:
        set_status(api, email, portal.marketing, "SUBSCRIBED")
    for scopes, allowed in (((Scope.READ,), True), ((Scope.ADMIN,), True), ((Scope.BATCH_READ,), False)):
        with portal.client(portal.token_with(*scopes)) as client:
            for path in (HISTORY.format(email), "/commprefs/v1/events"):
                assert client.get(path).status_code == (200 if allowed else 403), (scopes, path)
    other = make_portal(portal.server)
    with other.client() as theirs:
        assert theirs.get(HISTORY.format(email)).json()["results"] == []
        with portal.client() as mine:
            _, my_cursor = feed(mine)
        results, _ = feed(theirs, after=None)
        assert results == []
        assert feed(theirs, after=my_cursor)[0] == []


@pytest.mark.parametrize("cursor", ["not-a-cursor", "LTEuLTE", "%%%", "x" * 150])
def test_a_bad_cursor_is_a_400(api: httpx.Client, cursor: str) -> None:
    for path in ("/commprefs/v1/events", HISTORY.format("a@example.com")):
        response = api.get(path, params={"after": cursor})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["errors"][0]["in"] == "after"


def test_the_feed_never_skips_or_repeats_under_concurrent_writes(api: httpx.Client, portal: PortalFixture) -> None:
    """Writers in several threads while a consumer polls with small pages: it sees every change
    exactly once, and the same list as one read of the whole feed afterwards.

    Each writer records what it wrote and what failed (an error answer, a timeout, a contract
    check), so a failed write fails the test by name instead of as a short count."""
    _, start = feed(api)
    writers, per_writer = 6, 15
    lock = threading.Lock()
    written: list[str] = []  # addresses whose write was answered 200
    failures: list[str] = []  # "address: what went wrong", for every write that was not

    def write(n: int) -> None:
        with portal.client() as client:
            for i in range(per_writer):
                email = f"w{n}.{i}@example.com"
                try:  # set_status asserts a 200; the client may also time out or fail its contract check
                    set_status(client, email, portal.marketing, "SUBSCRIBED")
                except Exception as exc:
                    with lock:
                        failures.append(f"{email}: {type(exc).__name__}: {str(exc)[:300]}")
                else:
                    with lock:
                        written.append(email)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    seen: list[dict[str, Any]] = []
    cursor = start
    try:
        with portal.client() as poller:
            while True:
                finished = not any(t.is_alive() for t in threads)
                results, cursor = feed(poller, cursor, limit=7)
                seen.extend(results)
                if finished:
                    break
            while True:  # drain what committed after the writers stopped
                results, cursor = feed(poller, cursor, limit=50)
                if not results:
                    break
                seen.extend(results)
    finally:
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer thread did not finish"
    ids = [e["id"] for e in seen]
    assert len(ids) == len(set(ids)), "the feed repeated an event"
    everything, _ = feed(api, start, limit=1000)
    assert [e["id"] for e in everything] == ids, "polling in small pages saw a different list than one read"
    assert not failures, f"{len(failures)} of {writers * per_writer} writes failed:\n" + "\n".join(failures)
    assert len(written) == writers * per_writer
    assert sorted(e["subscriberIdString"] for e in seen) == sorted(written)


def test_a_transaction_that_commits_late_is_not_skipped(api: httpx.Client, portal: PortalFixture) -> None:
    """A change whose transaction began first but commits last (its event id is lower than ids
    already committed, on PostgreSQL) still reaches a consumer who polled in between."""
    _, cursor = feed(api)
    holding = threading.Event()

    def slow_change() -> None:
        with portal.server.store.transaction() as tx:
            change = consent.StatusInput("slow@example.com", portal.marketing, Status.SUBSCRIBED)
            consent.apply(tx, portal.id, Actor(Source.ADMIN), now_ms(), consent.set_status, change)
            holding.set()
            time.sleep(0.6)

    slow = threading.Thread(target=slow_change)
    slow.start()
    assert holding.wait(5)
    fast = threading.Thread(target=lambda: set_status(api, "fast@example.com", portal.marketing, "SUBSCRIBED"))
    fast.start()
    seen: list[str] = []
    while slow.is_alive() or fast.is_alive():
        results, cursor = feed(api, cursor)
        seen.extend(e["subscriberIdString"] for e in results)
        time.sleep(0.05)
    slow.join()
    fast.join()
    results, cursor = feed(api, cursor)
    seen.extend(e["subscriberIdString"] for e in results)
    assert sorted(seen) == ["fast@example.com", "slow@example.com"]
