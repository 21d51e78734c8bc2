"""Benchmark: v3 unsubscribe, subscribe and status throughput over HTTP (wrk) beside a hello-world baseline."""

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procs import (
    LIVE,
    ROOT,
    BenchError,
    Server,
    clean_env,
    free_port,
    interrupt,
    kill_leftovers,
    machine,
    parse_banner,
    running,
    spawn,
)

BENCH_DIR = Path(__file__).resolve().parent
LUA = BENCH_DIR / "requests.lua"
RESULTS_DIR = BENCH_DIR / "results"
V3 = "/communication-preferences/v3"
DEFINITION_NAME = "Marketing Information"
# A scenario whose non-2xx responses plus socket errors exceed this share of its requests is flagged.
ERROR_SHARE_LIMIT = 0.01
# Write scenarios: (name, path under V3, address prefix). The prefixes keep the two address ranges apart:
# subscribing an address that unsubscribed is refused by design.
WRITES = (("v3 unsubscribe", "/unsubscribe", "unsub"), ("v3 subscribe", "/subscribe", "sub"))


# -- wrk ------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed: install it (Debian/Ubuntu: `sudo apt-get install -y wrk`) and rerun")
    print("wrk not found; installing it with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=False)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed and `apt-get install -y wrk` failed: install wrk and rerun")
    return found


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "unknown"


@dataclass
class WrkRun:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    sent_per_thread: list[int]
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run_wrk(wrk: str, opts: argparse.Namespace, seconds: int, url: str, script_args: Sequence[str]) -> WrkRun:
    argv = [
        wrk,
        f"--threads={opts.threads}",
        f"--connections={opts.connections}",
        f"--duration={seconds}s",
        f"--timeout={opts.timeout}s",
        "--latency",
        f"--script={LUA}",
        url,
        "--",
        *script_args,
    ]
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + opts.timeout + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        LIVE.discard(proc)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{out}\n{err}")
    data: dict[str, Any] = json.loads(match.group(1))
    errors = data["errors"]
    latency = data["latency_us"]
    return WrkRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx=errors["status"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        sent_per_thread=[int(n) for n in data["sent_per_thread"]],
        output=out[: match.start()].rstrip(),
    )


# -- the service ----------------------------------------------------------------------------------


def http_json(
    method: str, url: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any] | None]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def find_subscription_id(base: str, token: str) -> str:
    status, body = http_json("GET", f"{base}{V3}/definitions", token)
    if status != 200 or body is None:
        raise BenchError(f"GET {V3}/definitions answered {status}: {body}")
    for definition in body.get("subscriptionDefinitions", []):
        if definition.get("name") == DEFINITION_NAME:
            return str(definition["id"])
    raise BenchError(f"no definition named {DEFINITION_NAME!r} in {body}")


def preflight(method: str, url: str, token: str, body: dict[str, Any] | None, expect: str | None = None) -> None:
    """One request before the load, so that a broken scenario fails with the service's own answer."""
    status, answer = http_json(method, url, token, body)
    if not 200 <= status < 300:
        raise BenchError(f"preflight {method} {url} answered {status}: {answer}")
    if expect is not None and expect not in json.dumps(answer):
        raise BenchError(f"preflight {method} {url}: expected {expect!r} in {answer}")


def count_rows(db_path: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(count)


# -- results --------------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    description: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    ratio_to_hello: float | None
    flagged: bool
    sent_per_thread: list[int]
    wrk_output: str


def measure(
    wrk: str,
    opts: argparse.Namespace,
    scenario: str,
    description: str,
    url: str,
    args_for: dict[str, list[str]],
) -> Result:
    """Warm up (results dropped), then measure; `args_for` holds the wrk script arguments of each phase."""
    if opts.warmup > 0:
        print(f"  {scenario}: warmup {opts.warmup}s ...", flush=True)
        run_wrk(wrk, opts, opts.warmup, url, args_for["warmup"])
    print(f"  {scenario}: measuring {opts.duration}s ...", flush=True)
    run = run_wrk(wrk, opts, opts.duration, url, args_for["measured"])
    bad = run.non_2xx + run.socket_errors
    result = Result(
        scenario=scenario,
        description=description,
        requests=run.requests,
        seconds=round(run.seconds, 3),
        rps=round(run.rps, 1),
        p50_ms=run.p50_ms,
        p90_ms=run.p90_ms,
        p99_ms=run.p99_ms,
        max_ms=run.max_ms,
        non_2xx=run.non_2xx,
        socket_errors=run.socket_errors,
        ratio_to_hello=None,
        flagged=run.requests == 0 or bad > ERROR_SHARE_LIMIT * run.requests,
        sent_per_thread=run.sent_per_thread,
        wrk_output=run.output,
    )
    print(
        f"    {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}",
        flush=True,
    )
    return result


def print_table(results: list[Result]) -> None:
    headers = ["scenario", "req/s", "p50 ms", "p99 ms", "requests", "non-2xx", "sock err", "ratio to hello"]
    rows = [
        [
            r.scenario + (" !!" if r.flagged else ""),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.requests:,}",
            f"{r.non_2xx:,}",
            f"{r.socket_errors:,}",
            "-" if r.ratio_to_hello is None else f"{r.ratio_to_hello:.3f}",
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# -- the run --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput and latency of commprefs' v3 API on SQLite, load from wrk, beside a hello-world app."
    )
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per scenario (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warmup seconds per scenario, not counted (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent HTTP connections (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk per-request timeout in seconds (default 10)")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for `commprefs serve`, e.g. COMMPREFS_LOG_LEVEL=warning (repeatable)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/<timestamp>.json")
    opts = parser.parse_args(argv)
    if opts.duration < 1:
        parser.error("--duration must be at least 1 second")
    if opts.warmup < 0:
        parser.error("--warmup must be 0 (none) or more seconds")
    if opts.threads < 1 or opts.connections < opts.threads:
        parser.error("need --threads >= 1 and --connections >= --threads")
    for item in opts.server_env:
        if "=" not in item:
            parser.error(f"--server-env wants KEY=VALUE, got {item!r}")
    return opts


def bench(opts: argparse.Namespace, workdir: Path) -> tuple[list[Result], dict[str, Any]]:
    wrk = ensure_wrk()
    base_env = clean_env()
    results: list[Result] = []
    info: dict[str, Any] = {"wrk": wrk_version(wrk)}

    print("hello-world baseline (bench/hello_app.py)", flush=True)
    hello_port = free_port()
    hello = Server(
        "hello",
        [sys.executable, str(BENCH_DIR / "hello_app.py"), "--port", str(hello_port)],
        base_env,
        workdir,
        hello_port,
    )
    with running(hello, "/hello"):
        args = ["hello", "/hello"]
        results.append(
            measure(wrk, opts, "hello", "GET /hello, FastAPI + uvicorn", hello.base, {"warmup": args, "measured": args})
        )

    db_path = workdir / "bench.db"
    env = {**base_env, "COMMPREFS_DATABASE_URL": f"sqlite:///{db_path}"}
    env.update(item.split("=", 1) for item in opts.server_env)
    info["database"] = f"sqlite:///{db_path} (fresh)"
    info["server_env"] = {k: v for k, v in env.items() if k.startswith("COMMPREFS_")}
    print(f"commprefs serve on {env['COMMPREFS_DATABASE_URL']}", flush=True)
    server = Server.commprefs("commprefs", env, workdir)
    with running(server, "/healthz"):
        token, portal_id = parse_banner(server.stdout())
        sub_id = find_subscription_id(server.base, token)
        info.update(portal_id=portal_id, subscription_id=sub_id)
        print(f"  portal {portal_id}, subscription {sub_id!r} ({DEFINITION_NAME})", flush=True)

        for scenario, path, prefix in WRITES:
            url = f"{server.base}{V3}{path}"
            preflight("POST", url, token, {"emailAddress": f"{prefix}-preflight@example.com", "subscriptionId": sub_id})
            results.append(
                measure(
                    wrk,
                    opts,
                    scenario,
                    f"POST {V3}{path}, a new address each request",
                    url,
                    {
                        "warmup": ["write", f"{V3}{path}", token, sub_id, f"{prefix}-warm"],
                        "measured": ["write", f"{V3}{path}", token, sub_id, f"{prefix}-run"],
                    },
                )
            )

        # Reads walk the addresses the measured subscribe run wrote (one stored status each).
        written = results[-1].sent_per_thread
        status_path = f"{V3}/status/email/"
        preflight("GET", f"{server.base}{status_path}sub-run-t1-1@example.com", token, None, expect="SUBSCRIBED")
        status_args = ["status", status_path, token, "sub-run", ",".join(str(n) for n in written)]
        results.append(
            measure(
                wrk,
                opts,
                "v3 status",
                f"GET {status_path}{{email}}, addresses written by the subscribe run",
                server.base,
                {"warmup": status_args, "measured": status_args},
            )
        )
        info["server_log_tail"] = server.log_tail(5)

    # Every 2xx write must have left its consent event (more may exist: warmups, preflights, and answers
    # still in flight when wrk stopped counting).
    write_names = {name for name, _, _ in WRITES}
    writes_ok = sum(r.requests - r.non_2xx - r.socket_errors for r in results if r.scenario in write_names)
    info["db"] = {
        "consent_events": count_rows(db_path, "consent_event"),
        "subscription_status_rows": count_rows(db_path, "subscription_status"),
        "measured_2xx_writes": writes_ok,
        "db_bytes": sum(p.stat().st_size for p in workdir.glob("bench.db*")),
    }
    hello_rps = results[0].rps
    for r in results:
        r.ratio_to_hello = round(r.rps / hello_rps, 4) if hello_rps else None
    return results, info


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    started = datetime.now(UTC)
    host = machine()
    print(
        f"commprefs bench: {opts.duration}s measured + {opts.warmup}s warmup per scenario, "
        f"{opts.connections} connections, {opts.threads} wrk threads",
        flush=True,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="commprefs-bench-") as tmp:
            results, info = bench(opts, Path(tmp))
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()

    print()
    print_table(results)
    print()
    print(
        f"machine: {host['nproc']} CPUs ({host['cpu_model'] or 'unknown CPU'}), "
        f"{host['implementation']} {host['python']}, {host['platform']}; {info['wrk']}; "
        "wrk and the server share these CPUs"
    )
    load = host["loadavg_at_start"][0]
    if load > 0.5 * (host["nproc"] or 1):
        print(f"!! load average was {load} when the run started: other work on this machine skews these numbers")
    db = info["db"]
    print(
        f"database: {db['consent_events']:,} consent events, {db['subscription_status_rows']:,} status rows, "
        f"{db['db_bytes'] / 1e6:.1f} MB (measured runs counted {db['measured_2xx_writes']:,} successful writes)"
    )
    if db["consent_events"] < db["measured_2xx_writes"]:
        print("!! fewer consent events than acknowledged writes: acknowledged writes were lost", file=sys.stderr)
    flagged = [r.scenario for r in results if r.flagged]
    if flagged:
        print(
            f"!! FLAGGED: {', '.join(flagged)}: non-2xx responses or socket errors above "
            f"{ERROR_SHARE_LIMIT:.0%} of requests (or no requests); these numbers are not valid",
            file=sys.stderr,
        )

    if not opts.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        document = {
            "started": started.isoformat(),
            "options": {k: v for k, v in vars(opts).items() if k != "no_save"},
            "machine": host,
            "info": info,
            "results": [asdict(r) for r in results],
        }
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {out.relative_to(ROOT)}")
    return 1 if flagged or db["consent_events"] < db["measured_2xx_writes"] else 0


if __name__ == "__main__":
    sys.exit(main())
