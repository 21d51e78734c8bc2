"""Crash safety: every acknowledged write survives a SIGKILL of `commprefs serve`, on both stores."""

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from commprefs.domain.enums import Channel, Status
from commprefs.store import Store, Tx
from tests.conftest import STORES, database_url
from tests.procs import ServeProcess

V3 = "/communication-preferences/v3"
WRITERS = 8
STREAM_SECONDS = 2.0

T = TypeVar("T")


class Launcher:
    """Starts `commprefs serve` on one database, each time on a fresh port; remembers them to kill them all."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.started: list[ServeProcess] = []

    def __call__(self) -> ServeProcess:
        server = ServeProcess(self.url, self.workdir, f"serve-{len(self.started)}")
        self.started.append(server)
        server.wait_ready()
        return server

    def read(self, work: Callable[[Tx], T]) -> T:
        """One read transaction on the database, from this process."""
        store = Store(self.url)
        try:
            return store.read(work)
        finally:
            store.close()

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()


@pytest.fixture(params=STORES)
def launch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Launcher]:
    """A launcher on a fresh database (SQLite file or PostgreSQL); every server it started is SIGKILLed at the end."""
    with database_url(request.param, tmp_path) as url:
        launcher = Launcher(url, tmp_path)
        try:
            yield launcher
        finally:
            launcher.kill_all()


def stored_statuses(tx: Tx, portal_id: int, subscription: int, emails: Iterable[str]) -> dict[str, Status | None]:
    """The stored status (not v3's two-valued view) of each address for one subscription."""
    found = {e: tx.get_subscriber(portal_id, e, Channel.EMAIL).statuses.get(subscription) for e in emails}
    return {e: s.status if s else None for e, s in found.items()}


def client(server: ServeProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def marketing_id(api: httpx.Client) -> int:
    response = api.get(f"{V3}/definitions")
    assert response.status_code == 200, response.text
    return int(response.json()["subscriptionDefinitions"][0]["id"])


def unsubscribe(api: httpx.Client, email: str, subscription_id: int) -> httpx.Response:
    return api.post(f"{V3}/unsubscribe", json={"emailAddress": email, "subscriptionId": str(subscription_id)})


def v3_status(api: httpx.Client, email: str, subscription_id: int) -> str:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    return next(s["status"] for s in response.json()["subscriptionStatuses"] if s["id"] == str(subscription_id))


def test_acknowledged_unsubscribe_survives_sigkill(launch: Launcher) -> None:
    first = launch()
    portal_id, token = first.demo()
    email = "killed-right-after@example.com"
    with client(first, token) as api:
        subscription = marketing_id(api)
        response = unsubscribe(api, email, subscription)
        first.kill()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "NOT_SUBSCRIBED"

    second = launch()
    assert "Demo portal" not in second.output(), "a restart must find the database, not start over"
    events = launch.read(lambda tx: tx.list_events(portal_id, email))
    stored = launch.read(lambda tx: stored_statuses(tx, portal_id, subscription, [email]))
    assert [(e.subscription_id, e.old_status, e.new_status) for e in events] == [
        (subscription, "NOT_SPECIFIED", "UNSUBSCRIBED")
    ]
    assert stored == {email: Status.UNSUBSCRIBED}
    with client(second, token) as api:
        assert v3_status(api, email, subscription) == "NOT_SUBSCRIBED"
        # v3 reads NOT_SUBSCRIBED for never-seen addresses too; only a stored UNSUBSCRIBED refuses a repeat.
        again = unsubscribe(api, email, subscription)
    assert again.status_code == 400 and "already unsubscribed" in again.json()["message"]


class Stream:
    """Writer threads unsubscribing distinct addresses as fast as they can, until the server dies."""

    def __init__(self, server: ServeProcess, token: str, subscription: int) -> None:
        self.server, self.token, self.subscription = server, token, subscription
        self.acknowledged: list[str] = []
        self.unexpected: list[tuple[str, int, str]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(WRITERS)]

    def _write(self, n: int) -> None:
        with client(self.server, self.token) as api:
            i = 0
            while not self.stop.is_set():
                email = f"w{n}-{i}@crash.example.com"
                i += 1
                try:
                    response = unsubscribe(api, email, self.subscription)
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code == 200:
                    self.acknowledged.append(email)
                else:
                    self.unexpected.append((email, response.status_code, response.text))

    def __enter__(self) -> "Stream":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "writer threads did not stop"


def test_every_acknowledged_write_survives_sigkill_mid_stream(launch: Launcher) -> None:
    first = launch()
    portal_id, token = first.demo()
    with client(first, token) as api:
        subscription = marketing_id(api)
    with Stream(first, token, subscription) as stream:
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline or len(stream.acknowledged) < WRITERS:
            assert time.monotonic() < deadline + 20, "no writes were acknowledged"
            time.sleep(0.05)
        in_flight = len(stream.acknowledged)
        first.kill()  # mid-stream: every writer is still sending
    acknowledged = list(stream.acknowledged)
    assert stream.unexpected == []
    assert len(acknowledged) >= in_flight > 0
    assert len(set(acknowledged)) == len(acknowledged)

    second = launch()
    # The stored rows first: the API checks below write whatever was lost, which would hide it.
    events = launch.read(lambda tx: tx.list_events(portal_id))
    stored = launch.read(lambda tx: stored_statuses(tx, portal_id, subscription, acknowledged))
    unsubscribed = {
        e.subscriber for e in events if e.new_status == "UNSUBSCRIBED" and e.subscription_id == subscription
    }
    missing_events = [e for e in acknowledged if e not in unsubscribed]
    assert missing_events == [], f"{len(missing_events)} of {len(acknowledged)} acknowledged writes lost their event"
    lost = [e for e, s in stored.items() if s is not Status.UNSUBSCRIBED]
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged writes lost their status"
    # Status and event are one transaction: no event survived without its status, acknowledged or not.
    with_event = launch.read(lambda tx: stored_statuses(tx, portal_id, subscription, unsubscribed))
    assert [e for e, s in with_event.items() if s is not Status.UNSUBSCRIBED] == []

    with client(second, token) as api:
        wrong = [e for e in acknowledged if v3_status(api, e, subscription) != "NOT_SUBSCRIBED"]
        assert wrong == []
        # v3 reads NOT_SUBSCRIBED for never-seen addresses too; only a stored UNSUBSCRIBED refuses a repeat.
        # The last acknowledged writes are the ones closest to the kill.
        for email in acknowledged[-WRITERS * 2 :]:
            again = unsubscribe(api, email, subscription)
            assert again.status_code == 400 and "already unsubscribed" in again.json()["message"], email
