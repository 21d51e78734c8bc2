"""Subprocesses for the benchmarks: servers in sessions of their own, always stopped on the way out."""

import io
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 60.0


class BenchError(Exception):
    """A failure that ends the run with a message instead of a traceback."""


# Every subprocess started and not yet seen to exit: the last line of defence on the way out.
LIVE: set[subprocess.Popen[Any]] = set()


INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt(_signum: int, _frame: FrameType | None) -> None:
    """A signal handler that turns SIGTERM/SIGHUP into the KeyboardInterrupt the scripts clean up on."""
    raise KeyboardInterrupt


def prepare_output_and_signals() -> None:
    """Each bench's start: progress shows as it happens, piped or not, and SIGTERM/SIGHUP end the run
    through the same clean-up as Ctrl-C."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    for sig in INTERRUPTS:
        signal.signal(sig, interrupt)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a process in a session of its own (Ctrl-C reaches only this script, which then stops it)."""
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **kwargs)
    LIVE.add(proc)
    return proc


def signal_group(proc: subprocess.Popen[Any], sig: signal.Signals) -> None:
    """Signal the process group led by `proc`."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def kill_leftovers() -> None:
    for proc in list(LIVE):
        if proc.poll() is None:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
        LIVE.discard(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def commprefs_argv() -> list[str]:
    script = Path(sys.executable).parent / "commprefs"
    return [str(script)] if script.exists() else [sys.executable, "-m", "commprefs"]


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any COMMPREFS_* setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMPREFS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


class Server:
    """A server subprocess in its own session, with stdout and stderr in files under `workdir`."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], workdir: Path, port: int) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.port = port
        self.base = f"http://{HOST}:{port}"
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[Any] | None = None

    @classmethod
    def commprefs(cls, name: str, env: dict[str, str], workdir: Path, workers: int = 1) -> "Server":
        """`commprefs serve` on a free port."""
        port = free_port()
        argv = [*commprefs_argv(), "serve", "--port", str(port), "--workers", str(workers)]
        return cls(name, argv, env, workdir, port)

    @classmethod
    def hello(cls, app: str, workers: int, workdir: Path) -> "Server":
        """bench/hello_app.py's `app` ("bare" or "fastapi") under uvicorn, as `commprefs serve` runs."""
        port = free_port()
        argv = [sys.executable, str(Path(__file__).with_name("hello_app.py")), "--app", app]
        argv += ["--port", str(port), "--workers", str(workers)]
        return cls(f"hello-{app}-{workers}", argv, clean_env(), workdir, port)

    def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = spawn(self.argv, stdout=out, stderr=err, env=self.env, cwd=ROOT)

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} server exited during startup\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} server not ready after {READY_TIMEOUT:.0f}s\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        LIVE.discard(proc)

    def rss_kib(self) -> int:
        """Resident memory of all the server's processes (uvicorn's supervisor and workers): they share its
        process group, `spawn` having made it a session leader."""
        if self.proc is None:
            raise BenchError(f"{self.name} server is not running")
        return group_rss_kib(self.proc.pid)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        text = self.stdout() + self.stderr_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(server: Server, ready_path: str) -> Iterator[Server]:
    try:
        server.start()
        server.wait_ready(ready_path)
        yield server
    finally:
        server.stop()


def group_rss_kib(pgid: int) -> int:
    """The sum of VmRSS over the processes of process group `pgid`, in KiB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing parenthesis
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) != pgid:
                continue
            status = stat.with_name("status").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found.group(1)) if found else 0
    return total


def parse_banner(stdout: str) -> tuple[str, int]:
    """The demo token and portal id that `commprefs serve` prints on an empty database."""
    token = re.search(r"^\s+(cp_\S+)\s*$", stdout, re.MULTILINE)
    portal = re.search(r"Demo portal (\d+) created", stdout)
    if token is None or portal is None:
        raise BenchError(f"no demo token / portal in `commprefs serve` output:\n{stdout}")
    return token.group(1), int(portal.group(1))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu_model = found.group(1).strip() if found else ""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }
