"""Run the `commprefs` command as a real subprocess: one-shot commands, and a server that can be SIGKILLed."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

# The installed console script when there is one (it tests the entry point too), else `python -m commprefs`.
_SCRIPT = Path(sys.executable).with_name("commprefs")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "commprefs"]

TOKEN_RE = re.compile(r"\bcp_[A-Za-z0-9_-]+")
DEMO_PORTAL_RE = re.compile(r"Demo portal (\d+) created")


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without any COMMPREFS_* setting, plus the database and `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COMMPREFS_")}
    env.update(COMMPREFS_DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(database_url: str, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`commprefs ARGS...` on `database_url`; never raises on a non-zero exit."""
    return subprocess.run(
        [*COMMAND, *args],
        env=cli_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServeProcess:
    """One `commprefs serve` subprocess in its own session, on a fresh port; `kill()` is a SIGKILL.
    `args` go to `serve` (e.g. `--workers 2`); `env` overrides its environment (e.g. COMMPREFS_LOG_LEVEL)."""

    def __init__(self, database_url: str, workdir: Path, name: str, *args: str, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*COMMAND, "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
                env=cli_env(database_url, **{"COMMPREFS_DEMO": "true", "COMMPREFS_LOG_LEVEL": "warning", **env}),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        """Poll GET /healthz until it answers 200; fail with the server's output if it dies or never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"commprefs serve exited with {self.proc.returncode}\n{self.output()}\n{self.errors()}"
                )
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"commprefs serve not ready after {timeout}s\n{self.output()}\n{self.errors()}")
            time.sleep(0.05)

    def demo(self) -> tuple[int, str]:
        """The demo portal id and token `serve` printed when it created them."""
        out = self.output()
        portal, token = DEMO_PORTAL_RE.search(out), TOKEN_RE.search(out)
        assert portal and token, f"no demo portal/token in the output of serve:\n{out}"
        return int(portal.group(1)), token.group(0)

    def kill(self) -> None:
        """SIGKILL the server (and anything it started), then reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
