"""`bench/run`: every benchmark scenario on SQLite and on PostgreSQL, each beside its ceiling measured in the
same run on the same machine, with the ratio, the target and MET or MISSED.

Exit status: 0 when every target is met, 1 when some are missed, 2 when the benchmark itself failed.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import batch
import calls
import transfer
from calls import Phases, Service
from procs import ROOT, BenchError, kill_leftovers, machine, prepare_output_and_signals
from transfer_raw import DataFile, write_csv
from wrk import Load, WrkRun

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STORES = ("sqlite", "postgresql")
HTTP_SCENARIOS = ("healthz", "v4-write", "v3-read", "v4-read", "v3-unsubscribe")
SCENARIOS = ("ceilings", *HTTP_SCENARIOS, "memory", "batch-write", "batch-read", "import", "export")
QUICK = {"duration": 3.0, "warmup": 1.0, "memory_duration": 15.0, "memory_warmup": 5.0, "rows": 100_000}
FULL = {"duration": 10.0, "warmup": 3.0, "memory_duration": 60.0, "memory_warmup": 10.0, "rows": 1_000_000}
BATCH_CLIENTS = 4
MB = 1_000_000


# -- targets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """At least `ratio` of the ceiling; optionally p99 within `p99_over_p50` x p50, peak RSS under `peak_mb`."""

    ratio: float
    p99_over_p50: float | None = None
    peak_mb: float | None = None

    def text(self) -> str:
        parts = [f">= {self.ratio:.2f}"]
        if self.p99_over_p50 is not None:
            parts.append(f"p99 <= {self.p99_over_p50:g} x p50")
        if self.peak_mb is not None:
            parts.append(f"peak < {self.peak_mb:g} MB")
        return ", ".join(parts)


@dataclass(frozen=True)
class StoreSetup:
    """How a store's HTTP scenarios run: the server's process count and the ceiling they compare with."""

    kind: str
    workers: int
    ceiling: str  # a key of calls.CEILINGS
    write: Target

    read: Target


SETUPS = {
    "sqlite": StoreSetup("sqlite", 1, "bare-1", Target(0.25, p99_over_p50=3), Target(0.35)),
    "postgresql": StoreSetup("postgresql", 2, "bare-2", Target(0.12), Target(0.20)),
}
# /healthz through the whole app (pipeline, routing, metrics, access log), no database: the request path's
# own cost.
HEALTHZ = Target(0.60)
BATCH_WRITE = Target(0.50)
BATCH_READ = Target(0.25)
IMPORT = Target(0.50, peak_mb=200)
EXPORT = Target(0.35, peak_mb=200)
MEMORY_GROWTH_SHARE = 0.05
MEMORY_GROWTH_MIB = 10.0
CEILING_NAMES = {
    "bare-1": "bare ASGI, 1 process",
    "bare-2": "bare ASGI, 2 processes",
    "fastapi-1": "FastAPI, 1 process",
}


@dataclass
class Line:
    """One row of the table: a scenario on a store beside its ceiling; `misses` None when it has no target."""

    scenario: str
    store: str
    result: str
    ceiling: str = "-"
    ratio: float | None = None
    target: str = "-"
    misses: list[str] | None = None
    counted: bool = True  # False: informative, not part of the exit status
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.misses is None:
            return "-"
        return ("MET" if not self.misses else "MISSED") + ("" if self.counted else " (informative)")

    @property
    def missed(self) -> bool:
        return bool(self.misses) and self.counted


def ratio_misses(ratio: float, target: Target) -> list[str]:
    return [] if ratio >= target.ratio else [f"ratio {ratio:.2f} < {target.ratio:.2f}"]


def http_line(
    scenario: str, store: str, run: WrkRun, ceiling: str, top: WrkRun, target: Target, counted: bool = True
) -> Line:
    ratio = run.rps / top.rps if top.rps else 0.0
    misses = ratio_misses(ratio, target)
    if target.p99_over_p50 is not None and run.p99_ms > target.p99_over_p50 * run.p50_ms:
        misses.append(f"p99 {run.p99_ms:.1f} ms > {target.p99_over_p50:g} x p50 {run.p50_ms:.1f} ms")
    if not run.valid:
        misses.append(f"{run.non_2xx} non-2xx, {run.socket_errors} socket errors in {run.requests} requests")
    return Line(
        scenario,
        store,
        f"{run.rps:,.0f} req/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms",
        f"{CEILING_NAMES[ceiling]}: {top.rps:,.0f} req/s",
        ratio,
        target.text(),
        misses,
        counted,
        {"run": asdict(run), "ceiling": ceiling},
    )


# -- the run's plan and report --------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    scenarios: tuple[str, ...]
    stores: tuple[str, ...]
    phases: Phases
    rows: int
    pg_url: str
    server_env: dict[str, str]

    def wants(self, *names: str) -> bool:
        return any(name in self.scenarios for name in names)

    def ceilings(self) -> list[str]:
        if not self.wants("ceilings", *HTTP_SCENARIOS):
            return []
        # 1 process always: the FastAPI row is compared with it.
        return list(dict.fromkeys(["bare-1", *(SETUPS[kind].ceiling for kind in self.stores), "fastapi-1"]))


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failed checks, outside the table
    details: dict[str, Any] = field(default_factory=dict)  # the raw numbers, for the JSON


def ceiling_lines(tops: dict[str, WrkRun]) -> list[Line]:
    """The HTTP ceilings themselves, and the FastAPI hello-world (informative) beside the 1-process one."""
    lines = []
    for name, run in tops.items():
        result = f"{run.rps:,.0f} req/s, p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms"
        if name == "fastapi-1":
            bare = tops["bare-1"]
            ratio = run.rps / bare.rps if bare.rps else 0.0
            ceiling = f"{CEILING_NAMES['bare-1']}: {bare.rps:,.0f} req/s"
            lines.append(Line("hello-world, FastAPI (informative)", "-", result, ceiling, ratio))
        else:
            lines.append(Line(f"HTTP ceiling: hello-world, {CEILING_NAMES[name]}", "-", result, "(ceiling)"))
        lines[-1].numbers = {"run": asdict(run)}
    return lines


# -- per store ------------------------------------------------------------------------------------


def check_writes(svc: Service, scenario: str, report: Report) -> None:
    """Every acknowledged write must have left its consent event (more may exist: warm-ups, preflights, and
    answers still in flight when wrk stopped counting)."""
    counts = {"acknowledged_writes": svc.acknowledged_writes, "consent_events": svc.consent_events}
    report.details.setdefault("writes", []).append({"store": svc.kind, "scenario": scenario, **counts})
    if svc.writes_lost:
        report.problems.append(
            f"{svc.kind}: {svc.consent_events:,} consent events for {svc.acknowledged_writes:,} acknowledged "
            "writes: acknowledged writes were lost"
        )


def http_store(
    setup: StoreSetup, plan: Plan, load: Load, tops: dict[str, WrkRun], workdir: Path, report: Report
) -> None:
    """The single-call scenarios on one store, each write scenario on a fresh database."""
    kind, top = setup.kind, tops.get(setup.ceiling)
    reads = [name for name in ("v3 read", "v4 read") if plan.wants(name.replace(" ", "-"))]
    args = (setup.kind, setup.workers)
    if plan.wants("healthz") and kind == plan.stores[0]:  # no database: once, in one process
        bare = tops["bare-1"]
        with calls.service(kind, 1, workdir / "healthz", plan.pg_url, plan.server_env) as svc:
            run = calls.healthz(svc, load, plan.phases)
        report.lines.append(http_line("GET /healthz, whole app", kind, run, "bare-1", bare, HEALTHZ))
    if plan.wants("v4-write") or reads:
        with calls.service(*args, workdir / "write", plan.pg_url, plan.server_env) as svc:
            runs = calls.write_and_read(svc, load, plan.phases, plan.wants("v4-write"), reads)
        check_writes(svc, "v4 write", report)
        assert top is not None
        if "v4 write" in runs:
            report.lines.append(http_line("v4 status write", kind, runs["v4 write"], setup.ceiling, top, setup.write))
        for name in reads:
            line = http_line(f"{name.split()[0]} status read", kind, runs[name], setup.ceiling, top, setup.read)
            report.lines.append(line)
    if plan.wants("v3-unsubscribe"):
        assert top is not None
        with calls.service(*args, workdir / "unsubscribe", plan.pg_url, plan.server_env) as svc:
            run = calls.v3_unsubscribe(svc, load, plan.phases)
        check_writes(svc, "v3 unsubscribe", report)
        report.lines.append(http_line("v3 unsubscribe", kind, run, setup.ceiling, top, setup.write, counted=False))
    if plan.wants("memory"):
        with calls.service(*args, workdir / "memory", plan.pg_url, plan.server_env) as svc:
            memory = calls.sustained_memory(svc, load, plan.phases)
        check_writes(svc, "memory", report)
        report.lines.append(memory_line(kind, setup.workers, memory))


def memory_line(kind: str, workers: int, memory: calls.MemoryRun) -> Line:
    misses = []
    if memory.growth_share > MEMORY_GROWTH_SHARE:
        misses.append(f"grew {memory.growth_share:.1%} > {MEMORY_GROWTH_SHARE:.0%}")
    if memory.growth_mib > MEMORY_GROWTH_MIB:
        misses.append(f"grew {memory.growth_mib:.1f} MiB > {MEMORY_GROWTH_MIB:g} MiB")
    if not memory.load.valid:
        misses.append(f"{memory.load.non_2xx} non-2xx, {memory.load.socket_errors} socket errors")
    return Line(
        f"server memory, {memory.load.seconds:.0f} s of v4 writes ({workers} process{'es' if workers > 1 else ''})",
        kind,
        f"RSS {memory.first_kib / transfer.MIB:.1f} -> {memory.last_kib / transfer.MIB:.1f} MiB "
        f"({memory.growth_mib:+.1f} MiB, {memory.growth_share:+.1%}) at {memory.load.rps:,.0f} req/s",
        f"first {memory.window:g} s vs last {memory.window:g} s",
        memory.last_kib / memory.first_kib if memory.first_kib else None,
        f"growth <= {MEMORY_GROWTH_SHARE:.0%} and <= {MEMORY_GROWTH_MIB:g} MiB",
        misses,
        numbers={"samples": memory.samples, "window": memory.window, "load": asdict(memory.load)},
    )


def batch_store(kind: str, plan: Plan, workdir: Path, report: Report) -> None:
    """bench/batch.py's v4 batch write and read (1,000 inputs a call, over HTTP) beside raw SQL."""
    opts = argparse.Namespace(
        duration=plan.phases.duration, warmup=plan.phases.warmup, concurrency=BATCH_CLIENTS, analyze=True
    )
    with transfer.database(kind, workdir / "batch", plan.pg_url) as url:
        run = batch.bench_store(kind, url, opts, workdir / "batch")
    for row in run.rows:
        if not plan.wants(row.scenario.replace(" ", "-")):
            continue
        http, raw = row.http, row.raw
        target = BATCH_READ if row.scenario == "batch read" else BATCH_WRITE
        misses = ratio_misses(row.ratio_to_raw, target)
        if http.failures:
            misses.append(f"{http.failures} failed calls: {http.first_failure}")
        report.lines.append(
            Line(
                f"{row.scenario}, {batch.BATCH:,} subscribers a call",
                kind,
                f"{http.statuses_per_s:,.0f} statuses/s, p50 {http.p50_ms:,.0f} ms, p99 {http.p99_ms:,.0f} ms a call",
                f"raw SQL: {raw.statuses_per_s:,.0f} statuses/s",
                row.ratio_to_raw,
                target.text(),
                misses,
                numbers={"http": http.as_dict(), "raw_sql": raw.as_dict(), "service": row.service.as_dict()},
            )
        )
    report.details.setdefault("batch", []).append({k: v for k, v in asdict(run).items() if k != "rows"})


def transfer_line(scenario: str, kind: str, step: transfer.Step, ceiling: transfer.Step, target: Target) -> Line:
    ratio = step.rows_per_s / ceiling.rows_per_s if ceiling.rows_per_s else 0.0
    peak_mb = step.peak_rss_kib * 1024 / MB
    misses = ratio_misses(ratio, target)
    if target.peak_mb is not None and peak_mb >= target.peak_mb:
        misses.append(f"peak {peak_mb:.0f} MB >= {target.peak_mb:g} MB")
    return Line(
        f"{scenario}, {step.rows:,} rows",
        kind,
        f"{step.rows_per_s:,.0f} rows/s ({step.seconds:.0f} s), peak {peak_mb:.0f} MB",
        f"{ceiling.what}: {ceiling.rows_per_s:,.0f} rows/s",
        ratio,
        target.text(),
        misses,
        numbers={"step": step.as_dict(), "ceiling": ceiling.as_dict()},
    )


def transfer_store(kind: str, plan: Plan, data: DataFile, workdir: Path, report: Report) -> None:
    """bench/transfer.py's `commprefs import` and `export` beside the raw driver's insert and select."""
    opts = argparse.Namespace(pg_url=plan.pg_url, analyze=True)
    run = transfer.StoreRun(store=kind, database="", rows=data.rows)
    transfer.import_export(run, opts, workdir / "transfer", data, extras=False)
    if plan.wants("import"):
        transfer.raw_insert(run, opts, workdir / "transfer-raw", data)
        assert run.import_full is not None and run.raw_insert is not None
        report.lines.append(transfer_line("import", kind, run.import_full, run.raw_insert, IMPORT))
    if plan.wants("export"):
        assert run.export_full is not None and run.raw_select is not None
        report.lines.append(transfer_line("export", kind, run.export_full, run.raw_select, EXPORT))
    report.details.setdefault("transfer", []).append(run.as_dict())


def bench(plan: Plan, load: Load | None, workdir: Path, report: Report) -> None:
    """Every scenario of `plan`: the HTTP ceilings first, then store by store."""
    tops: dict[str, WrkRun] = {}
    if load is not None and plan.ceilings():
        print("HTTP ceilings: bench/hello_app.py under uvicorn, as `commprefs serve` runs", flush=True)
        tops = calls.ceilings(load, plan.phases, plan.ceilings(), workdir / "hello")
        report.lines += ceiling_lines(tops)
    data = None
    if plan.wants("import", "export"):
        print(f"generating {plan.rows:,} rows to import ...", flush=True)
        data = write_csv(workdir / "statuses.csv", plan.rows)
        os.sync()  # its writeback would otherwise compete with the first scenarios' fsyncs
    for kind in plan.stores:
        here = workdir / kind
        print(f"== {kind} ==", flush=True)
        if load is not None and plan.wants(*HTTP_SCENARIOS, "memory"):
            http_store(SETUPS[kind], plan, load, tops, here, report)
        if plan.wants("batch-write", "batch-read"):
            batch_store(kind, plan, here, report)
        if data is not None:
            transfer_store(kind, plan, data, here, report)


# -- output ---------------------------------------------------------------------------------------


def markdown_table(lines: Sequence[Line]) -> str:
    headers = ["scenario", "store", "result", "ceiling", "ratio", "target", "verdict"]
    rows = [
        [
            line.scenario,
            line.store,
            line.result,
            line.ceiling,
            "-" if line.ratio is None else f"{line.ratio:.2f}",
            line.target,
            line.verdict,
        ]
        for line in lines
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def describe_machine(host: dict[str, Any], load: Load | None) -> str:
    text = (
        f"machine: {host['nproc']} CPUs ({host['cpu_model'] or 'unknown CPU'}), {host['implementation']} "
        f"{host['python']}, {host['platform']}"
    )
    return text + (f"; load generator: {load.describe()}" if load else "")


def print_report(report: Report, host: dict[str, Any], load: Load | None, elapsed: float, complete: bool) -> list[str]:
    """The table and the notes under it; the misses (the exit status's reasons)."""
    print()
    if report.lines:
        print(markdown_table(report.lines))
        print()
    print(describe_machine(host, load))
    print(f"whole run: {elapsed / 60:.1f} min")
    load_avg = host["loadavg_at_start"][0]
    if load_avg > 0.5 * (host["nproc"] or 1):
        print(f"!! load average was {load_avg} when the run started: other work on this machine skews these numbers")
    missed = [f"{line.scenario} ({line.store}): {'; '.join(line.misses or [])}" for line in report.lines if line.missed]
    missed += report.problems
    informative = [line for line in report.lines if line.misses and not line.counted]
    for line in informative:
        print(f"informative, not counted: {line.scenario} ({line.store}): {'; '.join(line.misses or [])}")
    for miss in missed:
        print(f"MISSED: {miss}")
    if report.lines and not missed and complete:
        print("every target MET")
    return missed


def save(
    report: Report, plan: Plan, host: dict[str, Any], load: Load | None, started: datetime, elapsed: float
) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"suite-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    document = {
        "started": started.isoformat(),
        "seconds": round(elapsed, 1),
        "plan": {**asdict(plan), "pg_url": batch.redact(plan.pg_url)},
        "machine": host,
        "load_generator": load.describe() if load else None,
        "lines": [{**asdict(line), "verdict": line.verdict} for line in report.lines],
        "problems": report.problems,
        "details": report.details,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    return out


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Every commprefs benchmark on SQLite and PostgreSQL, each beside its ceiling measured in the "
        "same run: the ratio, the target, MET or MISSED. Exit 0: all met; 1: some missed; 2: the run failed.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs for development: 3 s, 100,000 rows, 15 s")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAMES",
        help=f"comma-separated scenarios to run (repeatable; default all): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--store", choices=[*STORES, "both"], default="both", help="database kind (default both)")
    parser.add_argument("--duration", type=float, help="measured seconds per scenario (default 10; --quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each, not counted (default 3; quick 1)")
    parser.add_argument("--memory-duration", type=float, help="seconds of sustained load (default 60; quick 15)")
    parser.add_argument("--memory-warmup", type=float, help="seconds of it before sampling (default 10; quick 5)")
    parser.add_argument("--rows", type=int, help="rows to import and export (default 1,000,000; quick 100,000)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk per-request timeout in seconds (default 10)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin wrk to a CPU with taskset")
    parser.add_argument("--pg-url", default=batch.DEFAULT_PG, help="PostgreSQL to create throwaway databases on")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `commprefs serve`, e.g. COMMPREFS_LOG_LEVEL=warning (repeatable)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/suite-<timestamp>.json")
    opts = parser.parse_args(argv)
    for key, value in (QUICK if opts.quick else FULL).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    only = [name.strip() for item in opts.only for name in item.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    opts.only = only
    if opts.duration < 1 or opts.warmup < 1 or opts.memory_duration < 3 or opts.memory_warmup < 0:
        parser.error("need --duration >= 1, --warmup >= 1, --memory-duration >= 3 and --memory-warmup >= 0")
    if opts.rows < 100 or opts.threads < 1 or opts.connections < opts.threads:
        parser.error("need --rows >= 100, --threads >= 1 and --connections >= --threads")
    if any("=" not in item for item in opts.server_env):
        parser.error("--server-env wants KEY=VALUE")
    return opts


def make_plan(opts: argparse.Namespace) -> Plan:
    return Plan(
        scenarios=tuple(name for name in SCENARIOS if not opts.only or name in opts.only),
        stores=STORES if opts.store == "both" else (opts.store,),
        phases=Phases(opts.warmup, opts.duration, opts.memory_duration, opts.memory_warmup),
        rows=opts.rows,
        pg_url=opts.pg_url,
        server_env=dict(item.split("=", 1) for item in opts.server_env),
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    prepare_output_and_signals()
    plan = make_plan(opts)
    started, clock, host = datetime.now(UTC), time.perf_counter(), machine()
    report = Report()
    load = None
    failure = None
    try:
        check_postgres(plan)
        needs_wrk = plan.wants("ceilings", *HTTP_SCENARIOS, "memory")
        load = Load.make(opts.connections, opts.threads, opts.timeout, opts.pin) if needs_wrk else None
        print(f"commprefs bench: {', '.join(plan.scenarios)} on {', '.join(plan.stores)}", flush=True)
        print(describe_machine(host, load), flush=True)
        with tempfile.TemporaryDirectory(prefix="commprefs-bench-") as tmp:
            bench(plan, load, Path(tmp), report)
    except BenchError as exc:
        failure = str(exc)
    except Exception as exc:
        traceback.print_exc()
        failure = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        print("interrupted; servers stopped, databases dropped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()
    elapsed = time.perf_counter() - clock
    missed = print_report(report, host, load, elapsed, complete=failure is None)
    if not opts.no_save:
        print(f"results: {save(report, plan, host, load, started, elapsed).relative_to(ROOT)}")
    if failure is not None:
        print(f"!! bench failed: {failure}", file=sys.stderr)
        if report.lines:
            print("!! the table holds what the run measured before it failed", file=sys.stderr)
        return 2
    return 1 if missed else 0


def check_postgres(plan: Plan) -> None:
    """Fail at once, not after the SQLite half, when the PostgreSQL server cannot be reached."""
    if "postgresql" not in plan.stores:
        return
    try:
        batch.pg_setting(plan.pg_url, "server_version")
    except Exception as exc:
        raise BenchError(f"cannot reach PostgreSQL at {batch.redact(plan.pg_url)}: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
