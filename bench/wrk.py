"""The HTTP load generator: wrk in a process of its own (pinned to one CPU when it can be), driven by
bench/requests.lua, its numbers read from the script's machine-readable summary."""

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import LIVE, BenchError, spawn

LUA = Path(__file__).resolve().parent / "requests.lua"
# A run whose non-2xx responses plus socket errors exceed this share of its requests is not valid.
ERROR_SHARE_LIMIT = 0.01


@dataclass(frozen=True)
class Load:
    """How wrk loads a server: the same for every scenario of a run."""

    wrk: str
    connections: int
    threads: int
    timeout: int
    cpu: int | None  # the CPU wrk is pinned to (taskset), None: not pinned

    @classmethod
    def make(cls, connections: int, threads: int, timeout: int, pin: bool) -> "Load":
        return cls(ensure_wrk(), connections, threads, timeout, pin_cpu() if pin else None)

    def describe(self) -> str:
        where = f"pinned to CPU {self.cpu} (taskset)" if self.cpu is not None else "not pinned"
        return f"{version(self.wrk)}, {self.threads} thread(s), {self.connections} connections, {where}"


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

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.non_2xx + self.socket_errors <= ERROR_SHARE_LIMIT * self.requests

    def summary(self) -> str:
        return (
            f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"non-2xx {self.non_2xx}, socket errors {self.socket_errors}"
        )


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


def version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def pin_cpu() -> int | None:
    """The CPU to pin wrk to: the last one this process may use; None when there is only one, or no taskset."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None
    return cpus[-1]


def run(load: Load, seconds: float, url: str, script_args: Sequence[str]) -> WrkRun:
    """wrk against `url` for `seconds`, bench/requests.lua given `script_args`."""
    argv = [
        load.wrk,
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={load.timeout}s",
        "--latency",
        f"--script={LUA}",
        url,
        "--",
        *script_args,
    ]
    if load.cpu is not None:
        argv = ["taskset", "-c", str(load.cpu), *argv]
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=seconds + load.timeout + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        LIVE.discard(proc)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise BenchError(f"wrk failed (exit {proc.returncode}):\n{out}\n{err}")
    data: dict[str, Any] = json.loads(match.group(1))
    errors, latency = data["errors"], data["latency_us"]
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
    )
