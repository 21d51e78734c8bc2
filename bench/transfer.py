"""Benchmark: `commprefs import` and `export` of a million rows (time, and the process's peak memory,
which must stay flat) beside the store's raw bulk-insert ceiling, on SQLite and/or PostgreSQL."""

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from batch import DEFAULT_PG, STORES, pg_analyze, pg_setting, postgres_database, psycopg_url, redact
from procs import (
    LIVE,
    ROOT,
    BenchError,
    Server,
    clean_env,
    kill_leftovers,
    machine,
    prepare_output_and_signals,
    running,
    spawn,
)
from transfer_raw import DataFile, postgres_insert, postgres_select, sqlite_insert, sqlite_select, write_csv

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
COMMPREFS = Path(sys.executable).with_name("commprefs")
EXPORT_PATH = "/commprefs/v1/exports/statuses"
WARMUP_PATH = "/communication-preferences/v3/definitions"
MIB = 1024  # ru_maxrss and /proc/<pid>/status are in KiB
# The memory ceiling: the import's peak at N rows may not exceed twice its peak at N/10 plus this
# much, nor ABSOLUTE_CEILING_MIB whatever N.
FLAT_SLACK_MIB = 50
ABSOLUTE_CEILING_MIB = 400
HTTP_TIMEOUT = 600.0
PROGRESS_EVERY = 10
SUMMARY = re.compile(
    r"^(?P<job>imp_\w+): (?P<rows>[\d,]+) rows read; (?P<applied>[\d,]+) changes applied, "
    r"(?P<unchanged>[\d,]+) already there, (?P<newer>[\d,]+) older than commprefs' own, "
    r"(?P<opt_out>[\d,]+) would have lifted an opt-out, (?P<erased>[\d,]+) for erased addresses; "
    r"(?P<rejected>[\d,]+) rows rejected",
    re.MULTILINE,
)


# -- child processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A finished `commprefs` command: its wall time and its peak resident memory (its own VmHWM,
    read every 20 ms while it runs: ru_maxrss would also count this process's memory at the fork)."""

    returncode: int
    seconds: float
    peak_rss_kib: int
    stdout: str
    stderr: str


def run_measured(argv: Sequence[str], env: dict[str, str], workdir: Path, name: str, echo: bool = False) -> Child:
    """Run `argv` to its end, its stdout and stderr in files; with `echo`, show its stderr lines
    (the import's progress) as they come."""
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = spawn(argv, stdout=out, stderr=err, env=env, cwd=workdir)
    shown = 0
    last_echo = started
    peak_kib = 0
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            seconds = time.perf_counter() - started
            break
        with contextlib.suppress(OSError, BenchError):  # gone between the two calls, or a zombie
            peak_kib = max(peak_kib, proc_status_kib(proc.pid, "VmHWM"))
        time.sleep(0.02)
        if echo and time.perf_counter() - last_echo > 1:
            shown, last_echo = echo_lines(err_path, shown), time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    LIVE.discard(proc)
    if echo:
        echo_lines(err_path, shown)
    return Child(proc.returncode, seconds, peak_kib, out_path.read_text(errors="replace"), err_path.read_text("utf-8"))


def echo_lines(path: Path, offset: int) -> int:
    """Print the whole lines written to `path` past `offset`; the new offset."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.decode(errors="replace").splitlines():
        print(f"    | {line}", flush=True)
    return offset + len(complete)


def commprefs(env: dict[str, str], workdir: Path, *args: str) -> str:
    """A short `commprefs` command's stdout; a failure ends the run."""
    done = subprocess.run([str(COMMPREFS), *args], env=env, cwd=workdir, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"commprefs {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def create_portal(env: dict[str, str], workdir: Path) -> int:
    out = commprefs(env, workdir, "portal", "create", "--name", "Bench")
    if not out.isdigit():
        raise BenchError(f"`commprefs portal create` printed {out!r}, not a portal id")
    return int(out)


# -- measurements ---------------------------------------------------------------------------------


@dataclass
class Step:
    """`rows` rows through one command in `seconds`, the command's process peaking at `peak_rss_kib`."""

    what: str
    rows: int
    seconds: float
    peak_rss_kib: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def peak_mib(self) -> float:
        return self.peak_rss_kib / MIB

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "peak_rss_mib": round(self.peak_mib, 1) if self.peak_rss_kib else None,  # None: not a process of its own
        }


@dataclass
class HttpExport:
    """GET /commprefs/v1/exports/statuses, streamed, with the server's memory before and at its peak."""

    what: str
    rows: int
    seconds: float
    bytes: int
    server_rss_before_kib: int
    server_peak_kib: int
    server_rss_after_kib: int
    peak_reset: bool  # False: the peak is the process's since it started, not the export's

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def growth_mib(self) -> float:
        return (self.server_peak_kib - self.server_rss_before_kib) / MIB

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "server_growth_mib": round(self.growth_mib, 1),
        }


def import_file(env: dict[str, str], workdir: Path, portal_id: int, data: DataFile, name: str) -> Step:
    """`commprefs import`, checked: every row read and applied, none rejected."""
    argv = [str(COMMPREFS), "import", str(data.path), "--portal", str(portal_id)]
    child = run_measured([*argv, "--progress-every", str(PROGRESS_EVERY)], env, workdir, name, echo=True)
    summary = SUMMARY.search(child.stdout)
    if child.returncode != 0 or summary is None:
        raise BenchError(f"{name}: commprefs import exited {child.returncode}:\n{child.stdout}{child.stderr[-3000:]}")
    counts = {k: int(v.replace(",", "")) for k, v in summary.groupdict().items() if k != "job"}
    if counts["rows"] != data.rows or counts["applied"] != data.rows or counts["rejected"]:
        raise BenchError(f"{name}: {data.rows:,} rows in the file, the import says: {summary.group(0)}")
    return Step("import", data.rows, child.seconds, child.peak_rss_kib)


def export_file(env: dict[str, str], workdir: Path, portal_id: int, suppressed: bool, expected: int) -> Step:
    """`commprefs export -o FILE`, checked: as many rows as the import wrote."""
    what = "export suppressed-only" if suppressed else "export"
    output = workdir / ("suppressed.csv" if suppressed else "export.csv")
    argv = [str(COMMPREFS), "export", "--portal", str(portal_id), "-o", str(output)]
    child = run_measured([*argv, "--suppressed-only"] if suppressed else argv, env, workdir, what.replace(" ", "-"))
    if child.returncode != 0:
        raise BenchError(f"commprefs {what} exited {child.returncode}:\n{child.stderr[-3000:]}")
    rows = count_lines(output) - 1
    output.unlink()
    if rows != expected:
        raise BenchError(f"{what} wrote {rows:,} rows, not the {expected:,} the import applied")
    return Step(what, rows, child.seconds, child.peak_rss_kib)


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def proc_status_kib(pid: int, key: str) -> int:
    found = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if found is None:
        raise BenchError(f"no {key} in /proc/{pid}/status")
    return int(found.group(1))


def reset_peak(pid: int) -> bool:
    """Start the process's VmHWM afresh from its current RSS (Linux: `5` to /proc/<pid>/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def http_export(server: Server, token: str, suppressed: bool, expected: int) -> HttpExport:
    what = "HTTP export suppressed-only" if suppressed else "HTTP export"
    assert server.proc is not None
    pid = server.proc.pid
    headers = {"Authorization": f"Bearer {token}"}
    params = {"suppressedOnly": "true"} if suppressed else {}
    with httpx.Client(base_url=server.base, headers=headers, timeout=HTTP_TIMEOUT) as client:
        client.get(WARMUP_PATH).raise_for_status()  # the first authenticated call's one-off costs, not counted
        peak_reset = reset_peak(pid)
        before = proc_status_kib(pid, "VmRSS")
        lines = size = 0
        started = time.perf_counter()
        with client.stream("GET", EXPORT_PATH, params=params) as response:
            if response.status_code != 200:
                raise BenchError(f"GET {EXPORT_PATH} answered {response.status_code}: {response.read()[:500]!r}")
            for chunk in response.iter_bytes():
                lines += chunk.count(b"\n")
                size += len(chunk)
        seconds = time.perf_counter() - started
    rows = lines - 1
    if rows != expected:
        raise BenchError(f"{what} sent {rows:,} rows, not the {expected:,} the import applied")
    peak, after = proc_status_kib(pid, "VmHWM"), proc_status_kib(pid, "VmRSS")
    return HttpExport(what, rows, seconds, size, before, peak, after, peak_reset)


# -- a store --------------------------------------------------------------------------------------


@dataclass
class StoreRun:
    store: str
    database: str
    rows: int
    import_full: Step | None = None
    export_full: Step | None = None
    export_suppressed: Step | None = None
    http: list[HttpExport] = field(default_factory=list)
    import_tenth: Step | None = None
    export_tenth: Step | None = None
    raw_insert: Step | None = None
    raw_select: Step | None = None
    analyzed_before_exports: bool = False
    postgres_autovacuum: str | None = None

    @property
    def ratio_raw_to_import(self) -> float:
        if not (self.raw_insert and self.import_full and self.import_full.rows_per_s):
            return 0.0
        return self.raw_insert.rows_per_s / self.import_full.rows_per_s

    def memory_problems(self) -> list[str]:
        """The memory ceiling: an import's peak may not grow with the file."""
        if self.import_full is None or self.import_tenth is None:
            return []
        full, tenth = self.import_full.peak_mib, self.import_tenth.peak_mib
        problems = []
        if full > 2 * tenth + FLAT_SLACK_MIB:
            problems.append(
                f"{self.store}: import peak {full:.0f} MiB at {self.import_full.rows:,} rows is more than "
                f"2 x {tenth:.0f} MiB (at {self.import_tenth.rows:,}) + {FLAT_SLACK_MIB} MiB"
            )
        if full > ABSOLUTE_CEILING_MIB:
            problems.append(f"{self.store}: import peak {full:.0f} MiB is over the {ABSOLUTE_CEILING_MIB} MiB ceiling")
        return problems

    def as_dict(self) -> dict[str, Any]:
        steps = (
            "import_full",
            "export_full",
            "export_suppressed",
            "import_tenth",
            "export_tenth",
            "raw_insert",
            "raw_select",
        )
        return {
            "store": self.store,
            "database": self.database,
            "rows": self.rows,
            **{name: step.as_dict() if (step := getattr(self, name)) else None for name in steps},
            "http": [h.as_dict() for h in self.http],
            "ratio_raw_to_import": round(self.ratio_raw_to_import, 3),
            "memory_problems": self.memory_problems(),
            "analyzed_before_exports": self.analyzed_before_exports,
            "postgres_autovacuum": self.postgres_autovacuum,
        }


@contextmanager
def database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    """A fresh database: a SQLite file in `workdir`, or a throwaway PostgreSQL database."""
    workdir.mkdir(parents=True)
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'commprefs.db'}"  # the temporary directory goes, and the file with it
        return
    with postgres_database(pg_url) as url:
        yield url


def settings(url: str) -> dict[str, str]:
    return clean_env(COMMPREFS_DATABASE_URL=url, COMMPREFS_DEMO="false", COMMPREFS_LOG_LEVEL="warning")


def bench_store(kind: str, opts: argparse.Namespace, workdir: Path, full: DataFile, tenth: DataFile) -> StoreRun:
    run = StoreRun(store=kind, database="", rows=full.rows)
    import_export(run, opts, workdir / "full", full, extras=True)
    import_tenth(run, opts, workdir / "tenth", tenth)
    raw_insert(run, opts, workdir / "raw", full)
    return run


def import_export(run: StoreRun, opts: argparse.Namespace, here: Path, data: DataFile, extras: bool) -> None:
    """On a fresh database: `commprefs import` of `data`, `commprefs export` of it all, and the raw driver's
    select of the same rows; with `extras`, the `--suppressed-only` export and both HTTP exports too."""
    kind = run.store
    with database(kind, here, opts.pg_url) as url:
        run.database = redact(url)
        env = settings(url)
        if kind == "postgresql":
            run.postgres_autovacuum = pg_setting(url, "autovacuum")
        portal_id = create_portal(env, here)
        print(f"{kind}: {run.database}, portal {portal_id}: import {data.rows:,} rows ...", flush=True)
        run.import_full = show(import_file(env, here, portal_id, data, "import"))
        if kind == "postgresql" and opts.analyze:
            pg_analyze(url)  # what autovacuum would have done after a million-row import
            run.analyzed_before_exports = True
        run.export_full = show(export_file(env, here, portal_id, False, data.rows))
        if kind == "sqlite":
            rows, seconds = sqlite_select(here / "commprefs.db", portal_id)
        else:
            rows, seconds = postgres_select(psycopg_url(url), portal_id)
        if rows != data.rows:
            raise BenchError(f"{kind}: the raw select read {rows:,} rows, not the {data.rows:,} imported")
        run.raw_select = show(Step("raw select", rows, seconds, 0))
        if not extras:
            return
        run.export_suppressed = show(export_file(env, here, portal_id, True, data.unsubscribed))
        server = Server.commprefs(f"{kind}-serve", env, here)
        with running(server, "/healthz"):
            token = commprefs(env, here, "token", "create", "--portal", str(portal_id), "--all-scopes")
            for suppressed, expected in ((True, data.unsubscribed), (False, data.rows)):
                run.http.append(show_http(http_export(server, token, suppressed, expected)))


def import_tenth(run: StoreRun, opts: argparse.Namespace, here: Path, tenth: DataFile) -> None:
    """The import and export again at a tenth of the size, on a fresh database: their memory must not grow."""
    with database(run.store, here, opts.pg_url) as url:
        env = settings(url)
        portal_id = create_portal(env, here)
        print(f"{run.store}: a fresh database, portal {portal_id}: import {tenth.rows:,} rows ...", flush=True)
        run.import_tenth = show(import_file(env, here, portal_id, tenth, "import"))
        if run.store == "postgresql" and opts.analyze:
            pg_analyze(url)
        run.export_tenth = show(export_file(env, here, portal_id, False, tenth.rows))


def raw_insert(run: StoreRun, opts: argparse.Namespace, here: Path, data: DataFile) -> None:
    """The ceiling of the import: the plain driver inserting the same rows into a fresh database."""
    with database(run.store, here, opts.pg_url) as url:
        env = settings(url)
        commprefs(env, here, "migrate")
        portal_id = create_portal(env, here)
        print(
            f"{run.store}: a fresh database, portal {portal_id}: raw driver insert of {data.rows:,} rows ...",
            flush=True,
        )
        if run.store == "sqlite":
            seconds = sqlite_insert(here / "commprefs.db", portal_id, data.rows)
        else:
            seconds = postgres_insert(psycopg_url(url), portal_id, data.rows)
        run.raw_insert = show(Step("raw insert", data.rows, seconds, 0))


def show(step: Step) -> Step:
    memory = f", peak RSS {step.peak_mib:.0f} MiB" if step.peak_rss_kib else ""
    print(f"  {step.what}: {step.rows:,} rows in {step.seconds:.1f} s, {step.rows_per_s:,.0f} rows/s{memory}")
    return step


def show_http(h: HttpExport) -> HttpExport:
    print(
        f"  {h.what}: {h.rows:,} rows in {h.seconds:.1f} s, {h.rows_per_s:,.0f} rows/s; server RSS "
        f"{h.server_rss_before_kib / MIB:.0f} MiB before, peak {h.server_peak_kib / MIB:.0f} MiB "
        f"(+{h.growth_mib:.1f}), {h.server_rss_after_kib / MIB:.0f} MiB after",
        flush=True,
    )
    return h


# -- the report -----------------------------------------------------------------------------------


def table_rows(run: StoreRun) -> list[tuple[str, str]]:
    def rate(step: Step | HttpExport | None) -> str:
        return f"{step.rows_per_s:,.0f}" if step else "-"

    def peak(step: Step | None) -> str:
        return f"{step.peak_mib:.0f}" if step else "-"

    http = {h.what: h for h in run.http}
    suppressed, whole = http.get("HTTP export suppressed-only"), http.get("HTTP export")
    imported = run.import_full
    rows = [
        ("import rows/s", rate(imported)),
        ("import seconds", f"{imported.seconds:.1f}" if imported else "-"),
        ("import peak RSS MiB", peak(imported)),
        ("export rows/s", rate(run.export_full)),
        ("export peak RSS MiB", peak(run.export_full)),
        ("export --suppressed-only rows/s", rate(run.export_suppressed)),
        ("export --suppressed-only peak RSS MiB", peak(run.export_suppressed)),
    ]
    for label, h in (("HTTP export suppressedOnly", suppressed), ("HTTP export all", whole)):
        rows.append((f"{label} rows/s", rate(h)))
        growth = (
            f"{h.server_rss_before_kib / MIB:.0f} -> {h.server_peak_kib / MIB:.0f} (+{h.growth_mib:.1f})" if h else "-"
        )
        rows.append((f"{label} server RSS MiB before -> peak", growth))
    rows += [
        ("raw driver insert rows/s", rate(run.raw_insert)),
        ("raw insert / import", f"{run.ratio_raw_to_import:.2f}"),
        ("raw driver select rows/s", rate(run.raw_select)),
    ]
    return rows


def print_table(runs: list[StoreRun]) -> None:
    labels = [label for label, _ in table_rows(runs[0])]
    columns = [[value for _, value in table_rows(run)] for run in runs]
    headers = ["", *(run.store for run in runs)]
    widths = [max(len(headers[0]), *map(len, labels))]
    widths += [max(len(run.store), *map(len, column)) for run, column in zip(runs, columns, strict=True)]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    for i, label in enumerate(labels):
        print(line([label, *(column[i] for column in columns)]))


def flatness_line(run: StoreRun) -> str:
    parts = []
    for what, full, tenth in (
        ("import", run.import_full, run.import_tenth),
        ("export", run.export_full, run.export_tenth),
    ):
        if full and tenth:
            parts.append(
                f"{what} peak {tenth.peak_mib:.0f} MiB at {tenth.rows:,} rows, {full.peak_mib:.0f} MiB at "
                f"{full.rows:,} (x{full.peak_mib / tenth.peak_mib:.2f})"
            )
    return f"memory flatness, {run.store}: " + "; ".join(parts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="commprefs import and export of a large generated file: rows/s and the processes' peak "
        "memory (which must stay flat), beside a raw driver insert of the same rows, on SQLite and/or PostgreSQL."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the file (default 1,000,000)")
    parser.add_argument("--store", choices=[*STORES, "both"], default="both", help="database kind (default both)")
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG,
        help=f"PostgreSQL to create the throwaway databases on (default {DEFAULT_PG})",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="PostgreSQL: do not ANALYZE between the import and the exports",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/transfer-<timestamp>.json")
    opts = parser.parse_args(argv)
    if opts.rows < 100:
        parser.error("need --rows >= 100")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    prepare_output_and_signals()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    host = machine()
    kinds = STORES if opts.store == "both" else (opts.store,)
    runs: list[StoreRun] = []
    try:
        with tempfile.TemporaryDirectory(prefix="commprefs-transfer-") as tmp:
            print(f"commprefs transfer bench: generating {opts.rows:,} and {opts.rows // 10:,} rows ...", flush=True)
            full = write_csv(Path(tmp) / "statuses.csv", opts.rows)
            tenth = write_csv(Path(tmp) / "statuses-tenth.csv", opts.rows // 10)
            print(
                f"  {full.path.name}: {full.bytes / MIB / MIB:.0f} MiB, {full.unsubscribed:,} UNSUBSCRIBED rows "
                f"({full.portal_wide:,} PORTAL_WIDE), written in {full.seconds:.1f} s",
                flush=True,
            )
            for kind in kinds:
                runs.append(bench_store(kind, opts, Path(tmp) / kind, full, tenth))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; processes stopped, databases dropped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()
    elapsed = time.perf_counter() - clock

    print()
    print_table(runs)
    print()
    for run in runs:
        print(flatness_line(run))
    print(
        f"machine: {host['nproc']} CPUs ({host['cpu_model'] or 'unknown CPU'}), Python {host['python']}; "
        f"whole run {elapsed / 60:.1f} min. Peak RSS: each command's own process (VmHWM); the raw insert "
        "counts database time only, in this process"
    )
    for run in runs:
        if run.store == "postgresql":
            how = "ANALYZE after each import" if run.analyzed_before_exports else "never ANALYZEd (--no-analyze)"
            print(f"postgresql: server autovacuum={run.postgres_autovacuum}; {how}")
    problems = [problem for run in runs for problem in run.memory_problems()]
    for problem in problems:
        print(f"!! memory ceiling: {problem}", file=sys.stderr)
    if not opts.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"transfer-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        document = {
            "started": started.isoformat(),
            "seconds": round(elapsed, 1),
            "options": {k: v for k, v in vars(opts).items() if k not in ("no_save", "pg_url")},
            "machine": host,
            "file": {"rows": full.rows, "bytes": full.bytes, "unsubscribed": full.unsubscribed},
            "memory_ceiling": {"slack_mib": FLAT_SLACK_MIB, "absolute_mib": ABSOLUTE_CEILING_MIB},
            "stores": [run.as_dict() for run in runs],
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {out.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
