"""Crash safety under load: every acknowledged write survives SIGKILLs of `commprefs serve` on both
stores, and a PostgreSQL crash-restart turns into 503s and then heals without restarting commprefs.

The kill moments are random but seeded: COMMPREFS_CRASH_SEED replays a run (each test prints it).
"""

import contextlib
import glob
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from commprefs.domain.enums import Channel, Status
from commprefs.store import Store, Tx
from tests.conftest import STORES, database_url, free_port
from tests.procs import ServeProcess

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
SEED = int(os.environ.get("COMMPREFS_CRASH_SEED", "20240917"))
WRITERS = 8
BATCH = 4
KILLS = 3  # SIGKILLs per store; the server is started KILLS + 1 times
KILL_DELAY = (0.05, 1.0)  # seconds of load on a server before it is killed, drawn from the seeded generator
OUTAGE_SECONDS = 2.5
HANG_SECONDS = 5.0  # no answer may take longer, the database up or down
RECOVERY_SECONDS = 5.0  # after PostgreSQL is back, commprefs must write again within this

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
            result: T = store.read(work)
            return result
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
    emails = list(emails)
    found: dict[str, Status | None] = {}
    for start in range(0, len(emails), 500):  # keeps each IN list well under SQLite's parameter limit
        subscribers = tx.statuses.get_subscribers(portal_id, emails[start : start + 500], Channel.EMAIL)
        for email, subscriber in subscribers.items():
            stored = subscriber.statuses.get(subscription)
            found[email] = stored.status if stored else None
    return found


def client(server: ServeProcess, token: str, timeout: float = 10) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def marketing_id(api: httpx.Client) -> int:
    response = api.get(f"{V3}/definitions")
    assert response.status_code == 200, response.text
    return int(response.json()["subscriptionDefinitions"][0]["id"])


def unsubscribe(api: httpx.Client, email: str, subscription_id: int) -> httpx.Response:
    return api.post(f"{V3}/unsubscribe", json={"emailAddress": email, "subscriptionId": str(subscription_id)})


def v3_status(api: httpx.Client, email: str, subscription_id: int) -> str:
    response = api.get(f"{V3}/status/email/{email}")
    assert response.status_code == 200, response.text
    return str(next(s["status"] for s in response.json()["subscriptionStatuses"] if s["id"] == str(subscription_id)))


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
    events = launch.read(lambda tx: tx.feed.list_events(portal_id, email))
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


# -- load ------------------------------------------------------------------------------------------


@dataclass
class Ack:
    state: Status
    kind: str
    server: int  # which start of the server acknowledged it
    at: float


@dataclass
class Refusal:
    kind: str
    code: int
    body: str
    headers: httpx.Headers
    answered_at: float
    seconds: float


@dataclass
class Load:
    """WRITERS threads writing distinct addresses as fast as they can: v3 unsubscribes, v4 single writes
    and v4 batches of BATCH. Every address is written once, so its only possible event is NOT_SPECIFIED
    to the state sent. A thread that loses its server waits for the next one (`serve`) and goes on."""

    token: str
    subscription: int
    seed: str
    timeout: float = 10
    acknowledged: dict[str, Ack] = field(default_factory=dict)
    attempted: dict[str, Status] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    unanswered: list[tuple[str, str, float]] = field(default_factory=list)  # kind, error, seconds
    wrong: list[tuple[str, int, str]] = field(default_factory=list)  # 2xx answers that say something else
    acks_by_server: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self._changed = threading.Condition()
        self._server: ServeProcess | None = None
        self._generation = -1
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(WRITERS)]

    def serve(self, server: ServeProcess) -> int:
        """Point every writer at `server` (the first call starts them); returns its number."""
        with self._changed:
            self._server = server
            self._generation += 1
            self._changed.notify_all()
        if not self.threads[0].is_alive():
            for thread in self.threads:
                thread.start()
        return self._generation

    def wait_for_acks(self, generation: int, count: int, within: float = 20) -> None:
        deadline = time.monotonic() + within
        while self.acks_by_server[generation] < count:
            assert time.monotonic() < deadline, (
                f"server {generation}: {self.acks_by_server[generation]} writes acknowledged in {within}s; "
                f"refused {self.refused[-3:]}, unanswered {self.unanswered[-3:]}"
            )
            time.sleep(0.01)

    def _next_server(self, after: ServeProcess | None) -> tuple[ServeProcess, int] | None:
        with self._changed:
            self._changed.wait_for(lambda: self.stop.is_set() or self._server is not after)
            if self.stop.is_set() or self._server is None:
                return None
            return self._server, self._generation

    def _run(self, n: int) -> None:
        rng = random.Random(f"{self.seed}-writer-{n}")
        serial = 0
        server: ServeProcess | None = None
        while (current := self._next_server(server)) is not None:
            server, generation = current
            with client(server, self.token, self.timeout) as api:
                while not self.stop.is_set():
                    kind = rng.choice(["v3", "v4", "batch"])
                    size = BATCH if kind == "batch" else 1
                    writes = {
                        f"{kind}-{n}-{serial + k}@crash.example.com": (
                            Status.UNSUBSCRIBED
                            if kind == "v3"
                            else rng.choice([Status.SUBSCRIBED, Status.UNSUBSCRIBED])
                        )
                        for k in range(size)
                    }
                    serial += size
                    self.attempted.update(writes)
                    started = time.monotonic()
                    try:
                        response = self._send(api, kind, writes)
                    except httpx.TransportError as exc:
                        self.unanswered.append((kind, repr(exc), time.monotonic() - started))
                        break  # the server is gone (or hangs): wait for the next one
                    answered = time.monotonic()
                    self.slowest = max(self.slowest, answered - started)
                    if not response.is_success:
                        refusal = Refusal(
                            kind, response.status_code, response.text, response.headers, answered, answered - started
                        )
                        self.refused.append(refusal)
                        continue
                    if not self._says_written(kind, writes, response):
                        self.wrong.append((kind, response.status_code, response.text))
                        continue
                    for address, state in writes.items():
                        self.acknowledged[address] = Ack(state, kind, generation, answered)
                    self.acks_by_server[generation] += 1

    def _send(self, api: httpx.Client, kind: str, writes: dict[str, Status]) -> httpx.Response:
        if kind == "v3":
            (address,) = writes
            return unsubscribe(api, address, self.subscription)
        if kind == "v4":
            ((address, state),) = writes.items()
            body = {"channel": "EMAIL", "statusState": state.value, "subscriptionId": self.subscription}
            return api.post(f"{V4}/statuses/{address}", json=body)
        inputs = [
            {"subscriberIdString": a, "channel": "EMAIL", "statusState": s.value, "subscriptionId": self.subscription}
            for a, s in writes.items()
        ]
        return api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})

    def _says_written(self, kind: str, writes: dict[str, Status], response: httpx.Response) -> bool:
        body = response.json()
        if kind == "v3":
            return response.status_code == 200 and body.get("status") == "NOT_SUBSCRIBED"
        answered = {(r["subscriberIdString"], r["subscriptionId"], r["status"]) for r in body.get("results", [])}
        expected = {(a, self.subscription, s.value) for a, s in writes.items()}
        return response.status_code == 200 and answered == expected and not body.get("errors")

    def __enter__(self) -> "Load":
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "writer threads did not stop"


def check_durable(launch: Launcher, portal_id: int, load: Load, replay: str) -> None:
    """Read straight from the database: every acknowledged write has its status and its one event, and
    every write that was sent has both or neither (a status and its event are one transaction)."""
    subscription = load.subscription
    events = launch.read(lambda tx: tx.feed.list_events(portal_id))
    stored = launch.read(lambda tx: stored_statuses(tx, portal_id, subscription, load.attempted))
    history: dict[str, list[tuple[int, str, str]]] = {}
    for e in events:
        history.setdefault(e.subscriber, []).append((e.subscription_id, e.old_status, e.new_status))

    strays = [a for a in history if a.endswith("@crash.example.com") and a not in load.attempted]
    assert strays == [], f"events for addresses nobody wrote: {strays[:5]} {replay}"
    lost_status = [a for a, ack in load.acknowledged.items() if stored[a] is not ack.state]
    lost_event = [
        a
        for a, ack in load.acknowledged.items()
        if history.get(a) != [(subscription, "NOT_SPECIFIED", ack.state.value)]
    ]
    detail = [(a, load.acknowledged[a], stored[a], history.get(a)) for a in (lost_status + lost_event)[:5]]
    assert lost_status == [], (
        f"{len(lost_status)} of {len(load.acknowledged)} acknowledged statuses lost: {detail} {replay}"
    )
    assert lost_event == [], (
        f"{len(lost_event)} of {len(load.acknowledged)} acknowledged events lost: {detail} {replay}"
    )
    # Sent but never acknowledged (in flight at a kill, or refused during an outage): all or nothing.
    torn = [
        (a, stored[a], history.get(a))
        for a, state in load.attempted.items()
        if (stored[a], history.get(a)) not in ((None, None), (state, [(subscription, "NOT_SPECIFIED", state.value)]))
    ]
    assert torn == [], f"{len(torn)} writes with a status and no event, or the reverse: {torn[:5]} {replay}"


def test_acknowledged_writes_survive_repeated_sigkill_under_load(launch: Launcher) -> None:
    store = "postgresql" if launch.url.startswith("postgresql") else "sqlite"
    rng = random.Random(f"{SEED}-{store}")
    delays = [round(rng.uniform(*KILL_DELAY), 3) for _ in range(KILLS)]
    replay = f"(replay: COMMPREFS_CRASH_SEED={SEED}, kill delays {delays})"
    print(f"crash test on {store}: {replay}")

    server = launch()
    portal_id, token = server.demo()
    with client(server, token) as api:
        subscription = marketing_id(api)
    with Load(token, subscription, f"{SEED}-{store}") as load:
        generation = load.serve(server)
        for delay in delays:
            load.wait_for_acks(generation, 1)  # the writers reached this server: the kill lands under load
            time.sleep(delay)
            assert server.proc.poll() is None, f"server {generation} died before its kill:\n{server.errors()}"
            server.kill()
            server = launch()
            assert "Demo portal" not in server.output(), "a restart must find the database, not start over"
            generation = load.serve(server)
        load.wait_for_acks(generation, WRITERS)  # the writers came back to the last server
    assert load.refused == [] and load.wrong == [], f"{load.refused[:3]} {load.wrong[:3]} {replay}"
    assert all(load.acks_by_server[g] > 0 for g in range(KILLS + 1)), load.acks_by_server
    # Each kill cut some writes short; more unanswered ones than writers means a server was lost otherwise.
    assert 0 < len(load.unanswered) <= WRITERS * KILLS, f"{load.unanswered[:3]} {replay}"
    print(f"{len(load.acknowledged)} acknowledged of {len(load.attempted)} sent, per server {load.acks_by_server}")

    # The stored rows first: the API checks below write, which would hide a loss.
    check_durable(launch, portal_id, load, replay)
    last_killed = [a for a, ack in load.acknowledged.items() if ack.server == KILLS - 1]
    with client(server, token) as api:
        # The writes acknowledged last before the final kill, read back through the restarted server.
        for address in [a for a in last_killed if load.acknowledged[a].kind == "v3"][-WRITERS:]:
            assert v3_status(api, address, subscription) == "NOT_SUBSCRIBED", replay
            again = unsubscribe(api, address, subscription)
            assert again.status_code == 400 and "already unsubscribed" in again.json()["message"], replay
        for address in [a for a in last_killed if load.acknowledged[a].kind != "v3"][-WRITERS:]:
            response = api.get(f"{V4}/statuses/{address}", params={"channel": "EMAIL"})
            assert response.status_code == 200, response.text
            states = {r["subscriptionId"]: r["status"] for r in response.json()["results"]}
            assert states[subscription] == load.acknowledged[address].state.value, (address, replay)


# -- a PostgreSQL crash-restart ----------------------------------------------------------------------


class PrivatePostgres:
    """A throwaway PostgreSQL cluster of our own (fsync on, trust auth, 127.0.0.1 only) that can be
    crashed and restarted without touching the machine's shared server. As root it runs as the
    `postgres` user: PostgreSQL refuses to run as root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.version = int(bindir.parts[-2])  # /usr/lib/postgresql/<version>/bin
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="commprefs-crash-pg-"))
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.as_postgres, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{tool} failed: {done.stdout}\n{done.stderr}\n{self.log()}"

    def log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def initdb(self) -> None:
        # --no-sync only spares initdb's own final sync; the server itself runs with fsync on.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
        )
        if self.version >= 14:  # before replaying WAL after a crash, one syncfs() instead of an fsync() a file
            options += " -c recovery_init_sync_method=syncfs"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.logfile), "-o", options)

    def crash(self) -> None:
        """Stop at once, without a checkpoint: what remains is what a crash leaves (WAL replay on start)."""
        self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        """Stop the cluster whatever its state (pg_ctl, else SIGKILL to its postmaster), then remove it."""
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            stop = [
                *self.as_postgres,
                str(self.bindir / "pg_ctl"),
                "stop",
                "-w",
                "-m",
                "immediate",
                "-D",
                str(self.data),
            ]
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(stop, capture_output=True, timeout=30, check=False)
        if pidfile.exists():  # pg_ctl could not stop it: kill our postmaster (its backends follow it)
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                time.sleep(0.5)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) to run a private cluster")
    cluster = PrivatePostgres(Path(found[-1]).parent)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
    leftovers = subprocess.run(["pgrep", "-f", str(cluster.data)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == "", f"PostgreSQL processes left behind: {leftovers.stdout}"
    assert not cluster.root.exists()


def logged_errors(server: ServeProcess) -> str:
    """The server's error-level log lines (not its warnings), shortened."""
    lines = [line[:1500] for line in server.errors().splitlines() if '"level": "warning"' not in line]
    return "\n".join(lines[:5])


def hubspot_503(status: int, body: str, headers: httpx.Headers, *, retry_after: bool = True) -> str | None:
    """Why this answer is not HubSpot's 503 error body (with a Retry-After), or None if it is."""
    if status != 503:
        return f"status {status}"
    if retry_after and not headers.get("retry-after", "").isdigit():
        return f"Retry-After {headers.get('retry-after')!r}"
    if "Traceback" in body or 'File "' in body:
        return "a traceback in the body"
    if not headers.get("content-type", "").startswith("application/json"):
        return f"content-type {headers.get('content-type')}"
    try:
        error = httpx.Response(status, content=body).json()
        uuid.UUID(error["correlationId"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"not an error body ({exc!r})"
    if error.get("status") != "error" or not error.get("message") or error.get("category") != "SERVICE_UNAVAILABLE":
        return "not HubSpot's error shape"
    return None


def test_postgresql_restart_under_load_answers_503_then_recovers(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    launch = Launcher(private_postgres.create_database("crash"), tmp_path)
    try:
        server = launch()
        portal_id, token = server.demo()
        with client(server, token) as api:
            subscription = marketing_id(api)
        replay = f"(replay: COMMPREFS_CRASH_SEED={SEED})"
        with Load(token, subscription, f"{SEED}-outage", timeout=HANG_SECONDS) as load:
            load.serve(server)
            load.wait_for_acks(0, 4 * WRITERS)  # at full speed: the crash lands on writes in flight
            before = len(load.acknowledged)

            down_at = time.monotonic()
            private_postgres.crash()
            ready_down: list[tuple[int, str, httpx.Headers, float]] = []
            with httpx.Client(base_url=server.base_url, timeout=HANG_SECONDS) as probe:
                while time.monotonic() < down_at + OUTAGE_SECONDS:
                    started = time.monotonic()
                    answer = probe.get("/readyz")
                    ready_down.append((answer.status_code, answer.text, answer.headers, time.monotonic() - started))
                    time.sleep(0.2)
                up_at = time.monotonic()
                private_postgres.start()
                started_at = time.monotonic()
                while (answer := probe.get("/readyz")).status_code != 200:
                    assert time.monotonic() < started_at + RECOVERY_SECONDS, (
                        f"/readyz: {answer.status_code} {answer.text}"
                    )
                    time.sleep(0.05)
                ready_at = time.monotonic()
            recovered_acks = sum(load.acks_by_server.values())
            deadline = time.monotonic() + RECOVERY_SECONDS
            while sum(load.acks_by_server.values()) < recovered_acks + WRITERS:
                assert time.monotonic() < deadline, (
                    f"no writes acknowledged {RECOVERY_SECONDS}s after PostgreSQL came back and /readyz "
                    f"answered 200; last refusals {load.refused[-3:]}, unanswered {load.unanswered[:3]} {replay}"
                )
                time.sleep(0.02)
            recovered_at = time.monotonic()
        print(
            f"outage: {before} acknowledged before, {len(load.refused)} refused; PostgreSQL started in "
            f"{started_at - up_at:.2f}s, then /readyz 200 after {ready_at - started_at:.2f}s, writes again after "
            f"{recovered_at - started_at:.2f}s; {len(load.acknowledged)} acknowledged of {len(load.attempted)} sent; "
            f"slowest answer {load.slowest:.2f}s"
        )

        bad_ready = [(s, why, b) for s, b, h, _ in ready_down if (why := hubspot_503(s, b, h, retry_after=False))]
        assert ready_down and bad_ready == [], f"/readyz while PostgreSQL was down: {bad_ready[:3]}"
        assert max(seconds for *_, seconds in ready_down) < HANG_SECONDS
        assert load.unanswered == [], f"requests without an answer (hung or dropped): {load.unanswered[:3]}"
        assert load.wrong == [], load.wrong[:3]
        assert load.slowest < HANG_SECONDS
        bad = [
            (r.kind, r.code, why, r.body[:300]) for r in load.refused if (why := hubspot_503(r.code, r.body, r.headers))
        ]
        assert bad == [], (
            f"{len(bad)} of {len(load.refused)} refusals are not 503 error bodies: {bad[:3]}\n{logged_errors(server)}"
        )
        assert len(load.refused) > 0, "the writers never noticed PostgreSQL was down"
        outside = [r for r in load.refused if not down_at <= r.answered_at <= recovered_at]
        assert outside == [], f"refusals while PostgreSQL was up: {outside[:3]}"
        assert server.proc.poll() is None, "commprefs must ride out the outage, not exit"
        logged = server.errors() + server.output()
        assert "Traceback" not in logged and "unhandled error" not in logged, logged_errors(server)

        check_durable(launch, portal_id, load, replay)
        assert sum(1 for ack in load.acknowledged.values() if ack.at > started_at) >= WRITERS
    finally:
        launch.kill_all()
