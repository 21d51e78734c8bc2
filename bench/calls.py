"""Single calls over HTTP, loaded by wrk: the HTTP ceilings (hello-world apps under the same uvicorn), the
v4 status write and v3 unsubscribe (a new address per request), the v3 and v4 status reads of addresses
that exist, and the server's memory under a sustained write load."""

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wrk
from batch import count_rows, find_subscription_id
from procs import BenchError, Server, clean_env, parse_banner, running
from transfer import MIB, database
from wrk import Load, WrkRun

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
V4_STATUS = f"{V4}/statuses/"
V3_STATUS = f"{V3}/status/email/"
V3_UNSUBSCRIBE = f"{V3}/unsubscribe"
SUBSCRIBED = '"status":"SUBSCRIBED"'
READS = {"v3 read": (V3_STATUS, ""), "v4 read": (V4_STATUS, "?channel=EMAIL")}
# The HTTP ceilings: bench/hello_app.py's app and process count.
CEILINGS = {"bare-1": ("bare", 1), "bare-2": ("bare", 2), "fastapi-1": ("fastapi", 1)}
MEMORY_WINDOW = 10.0  # seconds at the start and at the end of the sustained load that are compared


@dataclass(frozen=True)
class Phases:
    warmup: float  # seconds of load before each measured run, not counted
    duration: float  # measured seconds per scenario
    memory: float  # seconds of the sustained load the server's memory is sampled under
    memory_warmup: float  # seconds of that load before the sampling starts


def measure(load: Load, phases: Phases, label: str, url: str, warm: Sequence[str], measured: Sequence[str]) -> WrkRun:
    """A warm-up run (dropped), then the measured run."""
    print(f"  {label}: {phases.warmup:g}s warm-up + {phases.duration:g}s ...", flush=True)
    if phases.warmup > 0:
        wrk.run(load, phases.warmup, url, warm)
    result = wrk.run(load, phases.duration, url, measured)
    print(f"    {result.summary()}", flush=True)
    return result


# -- ceilings -------------------------------------------------------------------------------------


def ceilings(load: Load, phases: Phases, names: Sequence[str], workdir: Path) -> dict[str, WrkRun]:
    """The hello-world apps of CEILINGS named in `names`, each on its own."""
    out: dict[str, WrkRun] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names:
        app, workers = CEILINGS[name]
        server = Server.hello(app, workers, workdir)
        with running(server, "/hello"):
            args = ["hello", "/hello"]
            out[name] = measure(load, phases, f"hello-world, {app}, {workers} process(es)", server.base, args, args)
    return out


# -- the service ----------------------------------------------------------------------------------


@dataclass
class Service:
    """`commprefs serve` on a fresh database, its demo portal's token and "Marketing Information" id."""

    kind: str
    workers: int
    server: Server
    token: str
    portal_id: int
    subscription_id: int
    acknowledged_writes: int = 0
    consent_events: int = 0  # counted once the server stopped
    log_tail: str = ""

    @property
    def base(self) -> str:
        return self.server.base

    def count(self, run: WrkRun) -> WrkRun:
        """Count `run`'s acknowledged writes (each must have left its consent event)."""
        self.acknowledged_writes += run.requests - run.non_2xx - run.socket_errors
        return run

    @property
    def writes_lost(self) -> bool:
        return self.consent_events < self.acknowledged_writes


@contextmanager
def service(kind: str, workers: int, workdir: Path, pg_url: str, server_env: dict[str, str]) -> Iterator[Service]:
    with database(kind, workdir, pg_url) as url:
        env = clean_env(COMMPREFS_DATABASE_URL=url, **server_env)
        server = Server.commprefs(f"{kind}-serve", env, workdir, workers)
        with running(server, "/healthz"):
            token, portal_id = parse_banner(server.stdout())
            svc = Service(kind, workers, server, token, portal_id, find_subscription_id(server.base, token))
            yield svc
            svc.log_tail = server.log_tail(5)
        svc.consent_events = count_rows(url)["consent_event"]


def http_json(method: str, url: str, token: str, body: dict[str, Any] | None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def preflight(method: str, url: str, token: str, body: dict[str, Any] | None, expect: str) -> None:
    """One request before the load, so that a broken scenario fails with the service's own answer."""
    status, answer = http_json(method, url, token, body)
    if not 200 <= status < 300 or expect not in answer:
        raise BenchError(f"preflight {method} {url} answered {status} (expected {expect!r} in it): {answer[:500]}")


def v4_write_args(svc: Service, prefix: str) -> list[str]:
    return ["v4write", V4_STATUS, svc.token, str(svc.subscription_id), prefix]


def check_v4_write(svc: Service) -> None:
    body = {"channel": "EMAIL", "statusState": "SUBSCRIBED", "subscriptionId": svc.subscription_id}
    preflight("POST", f"{svc.base}{V4_STATUS}preflight@example.com", svc.token, body, SUBSCRIBED)


# -- scenarios ------------------------------------------------------------------------------------


def healthz(svc: Service, load: Load, phases: Phases) -> WrkRun:
    """`GET /healthz`: no database and no token, the whole request path (pipeline, routing, metrics, log)."""
    preflight("GET", f"{svc.base}/healthz", svc.token, None, '"ok"')
    args = ["hello", "/healthz"]
    return measure(load, phases, f"{svc.kind}: GET /healthz, 1 process", svc.base, args, args)


def write_and_read(
    svc: Service, load: Load, phases: Phases, measure_write: bool, reads: Sequence[str]
) -> dict[str, WrkRun]:
    """The v4 status write (measured if `measure_write`, else only its warm-up, to seed the reads), then
    each of `reads` (READS' names) over the addresses the write's last run subscribed."""
    check_v4_write(svc)
    out: dict[str, WrkRun] = {}
    label = f"{svc.kind}: v4 status write, {svc.workers} process(es)"
    if measure_write:
        run = measure(load, phases, label, svc.base, v4_write_args(svc, "w4-warm"), v4_write_args(svc, "w4-run"))
        out["v4 write"] = svc.count(run)
        prefix, written = "w4-run", run.sent_per_thread
    else:
        print(f"  {svc.kind}: v4 status write for {phases.warmup:g}s, to have addresses to read ...", flush=True)
        seed = svc.count(wrk.run(load, phases.warmup, svc.base, v4_write_args(svc, "w4-warm")))
        prefix, written = "w4-warm", seed.sent_per_thread
    counts = ",".join(str(n) for n in written)
    for name in reads:
        path, query = READS[name]
        # Request 1 of each wrk thread is never sent (bench/requests.lua): its address 2 is the first written.
        preflight("GET", f"{svc.base}{path}{prefix}-t1-2@example.com{query}", svc.token, None, SUBSCRIBED)
        args = ["status", path, svc.token, prefix, counts, query]
        out[name] = measure(load, phases, f"{svc.kind}: {name}, {svc.workers} process(es)", svc.base, args, args)
    return out


def v3_unsubscribe(svc: Service, load: Load, phases: Phases) -> WrkRun:
    url = f"{svc.base}{V3_UNSUBSCRIBE}"
    body = {"emailAddress": "preflight@example.com", "subscriptionId": str(svc.subscription_id)}
    preflight("POST", url, svc.token, body, '"status":"NOT_SUBSCRIBED"')

    def args(prefix: str) -> list[str]:
        return ["v3write", V3_UNSUBSCRIBE, svc.token, str(svc.subscription_id), prefix]

    label = f"{svc.kind}: v3 unsubscribe, {svc.workers} process(es)"
    return svc.count(measure(load, phases, label, url, args("u3-warm"), args("u3-run")))


@dataclass
class MemoryRun:
    """The server's resident memory (all its processes), sampled every second of a sustained write load."""

    samples: list[tuple[float, int]]  # (seconds into the load, KiB)
    window: float
    load: WrkRun
    started_kib: int = 0  # before the warm-up
    notes: list[str] = field(default_factory=list)

    def mean_kib(self, start: float, end: float) -> float:
        inside = [kib for at, kib in self.samples if start <= at <= end]
        if not inside:
            raise BenchError(f"no memory samples between {start:g}s and {end:g}s")
        return sum(inside) / len(inside)

    @property
    def first_kib(self) -> float:
        return self.mean_kib(0, self.window)

    @property
    def last_kib(self) -> float:
        end = self.samples[-1][0] if self.samples else 0.0
        return self.mean_kib(end - self.window, end)

    @property
    def growth_mib(self) -> float:
        return (self.last_kib - self.first_kib) / MIB

    @property
    def growth_share(self) -> float:
        return (self.last_kib - self.first_kib) / self.first_kib if self.first_kib else 0.0

    def summary(self) -> str:
        return (
            f"RSS {self.first_kib / MIB:.1f} MiB (first {self.window:g}s) -> {self.last_kib / MIB:.1f} MiB "
            f"(last {self.window:g}s): {self.growth_mib:+.1f} MiB, {self.growth_share:+.1%}"
        )


def sustained_memory(svc: Service, load: Load, phases: Phases) -> MemoryRun:
    """A warm-up, then `phases.memory` seconds of v4 writes with the server's RSS sampled every second."""
    check_v4_write(svc)
    started_kib = svc.server.rss_kib()
    print(
        f"  {svc.kind}: sustained v4 writes, {svc.workers} process(es): {phases.memory_warmup:g}s warm-up + "
        f"{phases.memory:g}s sampling the server's RSS every second ...",
        flush=True,
    )
    if phases.memory_warmup > 0:
        svc.count(wrk.run(load, phases.memory_warmup, svc.base, v4_write_args(svc, "m-warm")))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        began = time.monotonic()
        while True:
            samples.append((time.monotonic() - began, svc.server.rss_kib()))
            if stop.wait(1.0 - (time.monotonic() - began) % 1.0):
                return

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        run = svc.count(wrk.run(load, phases.memory, svc.base, v4_write_args(svc, "m-run")))
    finally:
        stop.set()
        sampler.join()
    memory = MemoryRun(samples, min(MEMORY_WINDOW, phases.memory / 3), run, started_kib)
    print(f"    {run.summary()}\n    {memory.summary()}", flush=True)
    return memory
