"""Benchmark: v4 batch write and read (1,000 inputs a call) over HTTP beside the service in-process and raw SQL."""

import argparse
import asyncio
import functools
import itertools
import json
import secrets
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql
from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import SetStatusReason, Source, Status
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Actor
from commprefs.store import Store
from commprefs.store.engine import make_engine
from commprefs.store.schema import consent_event, subscription_status, wide_status
from procs import (
    INTERRUPTS,
    ROOT,
    BenchError,
    Server,
    clean_env,
    kill_leftovers,
    machine,
    parse_banner,
    prepare_output_and_signals,
    running,
)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
V4 = "/communication-preferences/v4"
WRITE_PATH = f"{V4}/statuses/batch/write"
READ_PATH = f"{V4}/statuses/batch/read"
DEFINITION_NAME = "Marketing Information"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 1000
HTTP_TIMEOUT = 120.0
# A run stops early once this many calls failed: the numbers would mean nothing.
MAX_FAILURES = 20
CHANGED = SetStatusReason.REQUESTED_CHANGE_OCCURRED.value
STORES = ("sqlite", "postgresql")
SCENARIOS = ("batch write", "batch read")


def find_subscription_id(base: str, token: str) -> int:
    request = urllib.request.Request(f"{base}{V4}/definitions", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"GET {V4}/definitions answered {exc.code}: {exc.read()!r}") from exc
    for definition in body.get("results", []):
        if definition.get("name") == DEFINITION_NAME:
            return int(definition["id"])
    raise BenchError(f"no definition named {DEFINITION_NAME!r} in {body}")


# -- databases ------------------------------------------------------------------------------------


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'batch.db'}"  # the temporary directory goes, and the file with it


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database next to `admin_url`'s, dropped on the way out whatever happened."""
    name = f"commprefs_bench_{secrets.token_hex(4)}"
    admin = psycopg_url(admin_url)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"cannot create database {name} on {redact(admin_url)}: {exc}") from exc
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        # Interrupts wait until the drop is done: a second Ctrl-C must not leave the database behind.
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in INTERRUPTS}
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            print(f"!! could not drop database {name}: {exc}", file=sys.stderr)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def no_settle() -> None:
    pass


def psycopg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_analyze(url: str) -> None:
    """What autovacuum would have done by then on a server that has it on: fresh planner statistics."""
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute("ANALYZE")


def pg_setting(url: str, name: str) -> str:
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
        return str(row[0]) if row else "?"


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def count_rows(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in (subscription_status, wide_status, consent_event)
            }
    finally:
        engine.dispose()


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Calls of `BATCH` inputs each, completed within `seconds` after the warm-up."""

    how: str
    calls: int
    inputs: int
    seconds: float
    failures: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    concurrency: int
    first_failure: str | None = None

    @property
    def statuses_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "statuses_per_s": round(self.statuses_per_s, 1),
            "calls_per_s": round(self.calls_per_s, 2),
        }


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(
    how: str,
    latencies: list[float],
    seconds: float,
    concurrency: int,
    failures: int = 0,
    first_failure: str | None = None,
) -> Measurement:
    ordered = sorted(latencies)
    return Measurement(
        how=how,
        calls=len(ordered),
        inputs=len(ordered) * BATCH,
        seconds=round(seconds, 3),
        failures=failures,
        p50_ms=round(percentile(ordered, 0.50) * 1000, 2),
        p90_ms=round(percentile(ordered, 0.90) * 1000, 2),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
        max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 2),
        concurrency=concurrency,
        first_failure=first_failure,
    )


class Addresses:
    """Fresh addresses, never seen before by any run: zero-padded so keys grow at the B-tree's right edge."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}-{secrets.token_hex(3)}"
        self._next = itertools.count()

    def take(self, n: int) -> list[str]:
        return [f"{self.prefix}-{i:09d}@example.com" for i in itertools.islice(self._next, n)]


def chunks(addresses: list[str]) -> Iterator[list[str]]:
    """Batches of `BATCH` distinct addresses, round and round the list."""
    if len(addresses) < BATCH:
        raise BenchError(f"only {len(addresses)} addresses were written; reads need {BATCH}")
    for start in itertools.cycle(range(0, len(addresses) - BATCH + 1, BATCH)):
        yield addresses[start : start + BATCH]


def timed_loop(
    step: Callable[[], None], warmup: float, duration: float, how: str, settle: Callable[[], None]
) -> Measurement:
    """Call `step` (one batch) back to back: for `warmup` seconds uncounted, then for `duration` seconds."""
    step()  # the first call fails loudly if the scenario is broken
    settle()
    until = time.perf_counter() + warmup
    while time.perf_counter() < until:
        step()
    latencies: list[float] = []
    began = time.perf_counter()
    end = began + duration
    while (started := time.perf_counter()) < end:
        step()
        latencies.append(time.perf_counter() - started)
    return summarize(how, latencies, time.perf_counter() - began, 1)


# -- over HTTP ------------------------------------------------------------------------------------


class HttpWrite:
    """POST .../statuses/batch/write: 1,000 fresh addresses a call, each a real change (none -> SUBSCRIBED)."""

    path = WRITE_PATH

    def __init__(self, subscription_id: int) -> None:
        self.subscription_id = subscription_id
        self.addresses = Addresses("http-w")
        self.written: list[str] = []

    def body(self) -> tuple[bytes, list[str]]:
        batch = self.addresses.take(BATCH)
        inputs = [
            {
                "subscriberIdString": a,
                "subscriptionId": self.subscription_id,
                "statusState": "SUBSCRIBED",
                "channel": "EMAIL",
            }
            for a in batch
        ]
        return orjson.dumps({"inputs": inputs}), batch

    def check(self, status: int, content: bytes) -> str | None:
        if status != 200:
            return f"answered {status}: {content[:500]!r}"
        doc = orjson.loads(content)
        if "errors" in doc:
            return f"answered 200 with errors: {orjson.dumps(doc['errors'][:3])!r}"
        results = doc.get("results", [])
        if len(results) != BATCH or any(r.get("setStatusSuccessReason") != CHANGED for r in results):
            return f"{len(results)} results, not {BATCH} times {CHANGED}: {orjson.dumps(results[:2])!r}"
        return None

    def accepted(self, addresses: list[str]) -> None:
        self.written.extend(addresses)


class HttpRead:
    """POST .../statuses/batch/read?channel=EMAIL: 1,000 addresses the write scenario subscribed."""

    path = f"{READ_PATH}?channel=EMAIL"

    def __init__(self, written: list[str], subscription_id: int) -> None:
        self.batches = chunks(written)
        self.subscription_id = subscription_id

    def body(self) -> tuple[bytes, list[str]]:
        batch = next(self.batches)
        return orjson.dumps({"inputs": batch}), batch

    def check(self, status: int, content: bytes) -> str | None:
        if status != 200:
            return f"answered {status}: {content[:500]!r}"
        doc = orjson.loads(content)
        results = doc.get("results", [])
        if "errors" in doc or len(results) != BATCH:
            return f"{len(results)} results, errors {doc.get('errors')!r}"
        subscribed = sum(
            s.get("subscriptionId") == self.subscription_id and s.get("status") == "SUBSCRIBED"
            for r in results
            for s in r.get("statuses", [])
        )
        if subscribed != BATCH:
            return f"only {subscribed} of {BATCH} addresses read back as SUBSCRIBED"
        return None

    def accepted(self, addresses: list[str]) -> None:
        pass


HttpScenario = HttpWrite | HttpRead


async def http_load(
    base: str,
    token: str,
    scenario: HttpScenario,
    concurrency: int,
    warmup: float,
    duration: float,
    settle: Callable[[], None],
) -> Measurement:
    """`concurrency` clients calling back to back; counts the calls that complete within the measured window."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    samples: list[tuple[float, float]] = []  # (completed at, seconds)
    failures: list[tuple[float, str]] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=HTTP_TIMEOUT, limits=limits) as client:
        # One call first, so that a broken scenario fails with the service's own answer.
        content, batch = scenario.body()
        response = await client.post(scenario.path, content=content)
        problem = scenario.check(response.status_code, response.content)
        if problem is not None:
            raise BenchError(f"preflight POST {scenario.path}: {problem}")
        scenario.accepted(batch)
        await asyncio.to_thread(settle)

        measure_from = time.perf_counter() + warmup
        end = measure_from + duration

        async def client_loop() -> None:
            while time.perf_counter() < end and len(failures) < MAX_FAILURES:
                content, batch = scenario.body()
                started = time.perf_counter()
                try:
                    response = await client.post(scenario.path, content=content)
                    problem = scenario.check(response.status_code, response.content)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                done = time.perf_counter()
                if problem is None:
                    scenario.accepted(batch)
                    samples.append((done, done - started))
                else:
                    failures.append((done, problem))

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    if len(failures) >= MAX_FAILURES:
        raise BenchError(f"{len(failures)} calls to {scenario.path} failed; the first: {failures[0][1]}")
    latencies = [seconds for at, seconds in samples if measure_from <= at <= end]
    failed = [problem for at, problem in failures if measure_from <= at <= end]
    return summarize(
        "http", latencies, duration, concurrency, failures=len(failed), first_failure=failed[0] if failed else None
    )


# -- in-process ceilings --------------------------------------------------------------------------


def service_write(store: Store, portal_id: int, subscription_id: int, written: list[str]) -> Callable[[], None]:
    """One transaction through the consent rules, as the batch write handler runs them, minus HTTP."""
    addresses = Addresses("svc-w")
    actor = Actor(Source.API)

    def step() -> None:
        batch = addresses.take(BATCH)
        inputs: list[tuple[str, consent.StatusInput | DomainError]] = [
            (a, consent.StatusInput(a, subscription_id, Status.SUBSCRIBED)) for a in batch
        ]
        with store.transaction() as tx:
            changes = consent.Changes(tx, portal_id, actor, now_ms())
            outcomes = consent.write_batch(changes, inputs)
            changes.flush()
        for _, raw, outcome in outcomes:
            if isinstance(outcome, DomainError) or outcome.reason is not SetStatusReason.REQUESTED_CHANGE_OCCURRED:
                raise BenchError(f"service write of {raw} gave {outcome!r}")
        written.extend(batch)

    return step


def service_read(store: Store, portal_id: int, written: list[str]) -> Callable[[], None]:
    """`Changes.load` then `Changes.statuses` per address, in a read transaction as the handler does."""
    batches = chunks(written)
    actor = Actor(Source.API)

    def step() -> None:
        batch = next(batches)

        def read(tx: Any) -> list[list[consent.Effective]]:
            changes = consent.Changes(tx, portal_id, actor, now_ms())
            changes.load(batch)
            return [changes.statuses(a) for a in batch]

        found = store.read(read)
        if len(found) != BATCH:
            raise BenchError(f"service read found {len(found)} subscribers, not {BATCH}")

    return step


def raw_write(conn: Connection, portal_id: int, subscription_id: int, written: list[str]) -> Callable[[], None]:
    """Plain SQLAlchemy Core: one executemany upsert of 1,000 status rows and one of 1,000 events a transaction."""
    addresses = Addresses("raw-w")
    insert = pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
    keys = ["portal_id", "subscriber", "channel", "subscription_id"]
    statement = insert(subscription_status)
    upsert = statement.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: statement.excluded[c.name] for c in subscription_status.columns if c.name not in keys},
    )
    append = consent_event.insert()
    source = str(Source.API)

    def step() -> None:
        batch = addresses.take(BATCH)
        now = now_ms()
        statuses = [
            {
                "portal_id": portal_id,
                "subscriber": a,
                "channel": "EMAIL",
                "subscription_id": subscription_id,
                "status": "SUBSCRIBED",
                "legal_basis": None,
                "legal_basis_explanation": None,
                "source": source,
                "updated_at": now,
            }
            for a in batch
        ]
        events = [
            {
                "portal_id": portal_id,
                "subscriber": a,
                "channel": "EMAIL",
                "subscription_id": subscription_id,
                "wide_scope": None,
                "business_unit_id": 0,
                "old_status": "NOT_SPECIFIED",
                "new_status": "SUBSCRIBED",
                "legal_basis": None,
                "legal_basis_explanation": None,
                "source": source,
                "actor_token_id": None,
                "request_id": None,
                "ip": None,
                "user_agent": None,
                "occurred_at": now,
            }
            for a in batch
        ]
        with conn.begin():
            conn.execute(upsert, statuses)
            conn.execute(append, events)
        written.extend(batch)

    return step


def raw_read(conn: Connection, portal_id: int, written: list[str]) -> Callable[[], None]:
    """Plain SQLAlchemy Core: the two IN-list selects (subscription_status, wide_status) for 1,000 addresses."""
    batches = chunks(written)
    s, w = subscription_status.c, wide_status.c
    statuses = select(
        s.subscriber, s.subscription_id, s.status, s.legal_basis, s.legal_basis_explanation, s.source, s.updated_at
    ).where(
        s.portal_id == bindparam("portal_id"),
        s.channel == bindparam("channel"),
        s.subscriber.in_(bindparam("addresses", expanding=True)),
    )
    wides = select(w.subscriber, w.scope, w.business_unit_id, w.status, w.source, w.updated_at).where(
        w.portal_id == bindparam("portal_id"),
        w.channel == bindparam("channel"),
        w.subscriber.in_(bindparam("addresses", expanding=True)),
    )

    def step() -> None:
        params = {"portal_id": portal_id, "channel": "EMAIL", "addresses": next(batches)}
        with conn.begin():
            rows = conn.execute(statuses, params).all()
            conn.execute(wides, params).all()
        if len(rows) != BATCH:
            raise BenchError(f"raw read found {len(rows)} status rows, not {BATCH}")

    return step


def ceilings(
    url: str, portal_id: int, subscription_id: int, opts: argparse.Namespace, settle: Callable[[], None]
) -> dict[str, Measurement]:
    """The same work with no HTTP, one transaction at a time in this process (the server is stopped)."""
    out: dict[str, Measurement] = {}

    def timed(step: Callable[[], None], how: str) -> Measurement:
        return timed_loop(step, opts.warmup, opts.duration, how, settle)

    store = Store(url, cache_seconds=2.0)  # the server's default COMMPREFS_CACHE_SECONDS
    try:
        written: list[str] = []
        print("  service in-process: batch write ...", flush=True)
        out["service batch write"] = timed(service_write(store, portal_id, subscription_id, written), "service")
        print("  service in-process: batch read ...", flush=True)
        out["service batch read"] = timed(service_read(store, portal_id, written), "service")
    finally:
        store.close()
    # The store's own engines, for the same durability settings (SQLite: WAL, synchronous=FULL, BEGIN IMMEDIATE).
    writer, reader = make_engine(url, writer=True, pool_size=1), make_engine(url)
    try:
        written = []
        with writer.connect() as conn:
            print("  raw SQL: batch write ...", flush=True)
            out["raw batch write"] = timed(raw_write(conn, portal_id, subscription_id, written), "raw SQL")
        with reader.connect() as conn:
            print("  raw SQL: batch read ...", flush=True)
            out["raw batch read"] = timed(raw_read(conn, portal_id, written), "raw SQL")
    finally:
        writer.dispose()
        reader.dispose()
    return out


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Row:
    store: str
    scenario: str
    http: Measurement
    service: Measurement
    raw: Measurement

    @property
    def ratio_to_raw(self) -> float:
        return self.http.statuses_per_s / self.raw.statuses_per_s if self.raw.statuses_per_s else 0.0

    @property
    def ratio_to_service(self) -> float:
        return self.http.statuses_per_s / self.service.statuses_per_s if self.service.statuses_per_s else 0.0


@dataclass
class StoreRun:
    store: str
    database: str
    portal_id: int = 0
    subscription_id: int = 0
    rows: list[Row] = field(default_factory=list)
    rows_after_http: dict[str, int] = field(default_factory=dict)
    rows_at_end: dict[str, int] = field(default_factory=dict)
    acknowledged_http_writes: int = 0
    analyze_before_each_scenario: bool = False
    postgres_autovacuum: str | None = None
    server_log_tail: str = ""


def bench_store(kind: str, url: str, opts: argparse.Namespace, workdir: Path) -> StoreRun:
    run = StoreRun(store=kind, database=redact(url))
    print(f"{kind}: commprefs serve on {run.database}", flush=True)
    settle = no_settle
    if kind == "postgresql":
        run.postgres_autovacuum = pg_setting(url, "autovacuum")
        if opts.analyze:
            run.analyze_before_each_scenario = True
            settle = functools.partial(pg_analyze, url)
    server = Server.commprefs(kind, clean_env(COMMPREFS_DATABASE_URL=url, COMMPREFS_LOG_LEVEL="warning"), workdir)
    with running(server, "/healthz"):
        token, run.portal_id = parse_banner(server.stdout())
        run.subscription_id = find_subscription_id(server.base, token)
        print(f"  portal {run.portal_id}, subscription {run.subscription_id} ({DEFINITION_NAME})", flush=True)
        write = HttpWrite(run.subscription_id)
        http: dict[str, Measurement] = {}
        for name in SCENARIOS:
            print(f"  HTTP: {name}, {opts.concurrency} clients, {opts.warmup:g}s warm-up + {opts.duration:g}s ...")
            # Reads ask for addresses the write scenario subscribed.
            scenario: HttpScenario = write if name == "batch write" else HttpRead(write.written, run.subscription_id)
            m = http[name] = asyncio.run(
                http_load(server.base, token, scenario, opts.concurrency, opts.warmup, opts.duration, settle)
            )
            print(
                f"    {m.statuses_per_s:,.0f} statuses/s, {m.calls_per_s:.1f} calls/s, "
                f"p50 {m.p50_ms:.1f} ms, p99 {m.p99_ms:.1f} ms, failures {m.failures}",
                flush=True,
            )
        run.acknowledged_http_writes = len(write.written)
        run.server_log_tail = server.log_tail(10)
    run.rows_after_http = count_rows(url)
    if run.rows_after_http["consent_event"] < run.acknowledged_http_writes:
        raise BenchError(
            f"{kind}: {run.rows_after_http['consent_event']} consent events for "
            f"{run.acknowledged_http_writes} acknowledged writes: acknowledged writes were lost"
        )
    print(f"  server stopped; ceilings on the same database ({run.rows_after_http})", flush=True)
    ceiling = ceilings(url, run.portal_id, run.subscription_id, opts, settle)
    for name in SCENARIOS:
        run.rows.append(Row(kind, name, http[name], ceiling[f"service {name}"], ceiling[f"raw {name}"]))
    for name, m in ceiling.items():
        print(f"    {name}: {m.statuses_per_s:,.0f} statuses/s, p50 {m.p50_ms:.1f} ms, p99 {m.p99_ms:.1f} ms")
    run.rows_at_end = count_rows(url)
    return run


def print_table(rows: list[Row]) -> None:
    headers = [
        "store",
        "scenario",
        "HTTP statuses/s",
        "HTTP calls/s",
        "service-in-process statuses/s",
        "raw SQL statuses/s",
        "HTTP/service",
        "HTTP/raw SQL",
        "HTTP p50/p99 ms per call",
        "fail",
    ]
    table = [
        [
            r.store,
            r.scenario,
            f"{r.http.statuses_per_s:,.0f}",
            f"{r.http.calls_per_s:.1f}",
            f"{r.service.statuses_per_s:,.0f}",
            f"{r.raw.statuses_per_s:,.0f}",
            f"{r.ratio_to_service:.2f}",
            f"{r.ratio_to_raw:.2f}",
            f"{r.http.p50_ms:.1f} / {r.http.p99_ms:.1f}",
            str(r.http.failures),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(line(row))
    print()
    print("ceilings, p50 / p99 ms per 1,000-input transaction:")
    for r in rows:
        print(
            f"  {r.store:<10} {r.scenario:<11}  service {r.service.p50_ms:.1f} / {r.service.p99_ms:.1f}"
            f"   raw SQL {r.raw.p50_ms:.1f} / {r.raw.p99_ms:.1f}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="commprefs' v4 batch write and read (1,000 inputs a call) over HTTP, beside the same work "
        "done in-process through the service and as raw SQL, on SQLite and/or PostgreSQL."
    )
    parser.add_argument("--store", choices=[*STORES, "both"], default="both", help="database kind (default both)")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="uncounted seconds before each (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (default 4)")
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG,
        help=f"PostgreSQL to create the throwaway database on (default {DEFAULT_PG})",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="PostgreSQL: do not ANALYZE before each scenario (shows the plans of never-analysed tables)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/batch-<timestamp>.json")
    opts = parser.parse_args(argv)
    if opts.duration <= 0 or opts.warmup < 0 or opts.concurrency < 1:
        parser.error("need --duration > 0, --warmup >= 0 and --concurrency >= 1")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    prepare_output_and_signals()
    started = datetime.now(UTC)
    host = machine()
    kinds = STORES if opts.store == "both" else (opts.store,)
    print(
        f"commprefs batch bench: {BATCH} inputs a call, {opts.concurrency} HTTP clients, "
        f"{opts.warmup:g}s warm-up + {opts.duration:g}s measured per scenario",
        flush=True,
    )
    runs: list[StoreRun] = []
    try:
        with tempfile.TemporaryDirectory(prefix="commprefs-batch-") as tmp:
            for kind in kinds:
                workdir = Path(tmp) / kind
                workdir.mkdir()
                database = sqlite_database(workdir) if kind == "sqlite" else postgres_database(opts.pg_url)
                with database as url:
                    runs.append(bench_store(kind, url, opts, workdir))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; servers stopped, databases dropped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()

    rows = [row for run in runs for row in run.rows]
    print()
    print_table(rows)
    print()
    print(
        f"machine: {host['nproc']} CPUs ({host['cpu_model'] or 'unknown CPU'}), Python {host['python']}; "
        "the HTTP clients, the server and the database share these CPUs; ceilings run one transaction at a time"
    )
    for run in runs:
        if run.store == "postgresql":
            how = (
                "ANALYZE before each scenario, as autovacuum would have run by then"
                if run.analyze_before_each_scenario
                else "never ANALYZEd (--no-analyze): the planner's view of a fresh database"
            )
            print(f"postgresql: server autovacuum={run.postgres_autovacuum}; {how}")
    load = host["loadavg_at_start"][0]
    if load > 0.5 * (host["nproc"] or 1):
        print(f"!! load average was {load} when the run started: other work on this machine skews these numbers")
    failed = [f"{r.store} {r.scenario}" for r in rows if r.http.failures]
    if failed:
        print(f"!! failed calls in: {', '.join(failed)}", file=sys.stderr)
    if not opts.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"batch-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        document = {
            "started": started.isoformat(),
            "options": {k: v for k, v in vars(opts).items() if k not in ("no_save", "pg_url")},
            "batch": BATCH,
            "machine": host,
            "stores": [
                {
                    **{k: v for k, v in asdict(run).items() if k != "rows"},
                    "results": [
                        {
                            "scenario": r.scenario,
                            "http": r.http.as_dict(),
                            "service_in_process": r.service.as_dict(),
                            "raw_sql": r.raw.as_dict(),
                            "ratio_http_to_service": round(r.ratio_to_service, 4),
                            "ratio_http_to_raw_sql": round(r.ratio_to_raw, 4),
                        }
                        for r in run.rows
                    ],
                }
                for run in runs
            ],
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {out.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
