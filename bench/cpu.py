"""Process CPU time a request takes, in-process (no sockets, no load generator): the steadiest measure on a
busy machine, for comparing two versions of the code side by side.

    .venv/bin/python bench/cpu.py                              # this checkout
    PYTHONPATH=/path/to/other/src .venv/bin/python bench/cpu.py  # another checkout, same virtualenv

Each call runs 32 at a time through the app's own ASGI entry (the pipeline, the readers and the writer, SQLite
in WAL), five times; the least CPU time a request of the five is printed with its requests a second. The least
of several is what the code costs: what a busy machine adds only ever comes on top of it.
"""

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from commprefs.app import create_app
from commprefs.clock import now_ms
from commprefs.config import Settings
from commprefs.domain.enums import Scope
from commprefs.store import Store
from commprefs.tenancy import setup

V4 = "/communication-preferences/v4/statuses/"
CONCURRENCY = 32
ROUNDS = 5
ADDRESSES = 500


class Driver:
    """An app on a fresh SQLite file, a portal and a token, and one request at a time through ASGI."""

    def __init__(self) -> None:
        url = f"sqlite:///{tempfile.mkdtemp()}/cpu.db"
        self.store = Store(url, 2.0)
        self.store.migrate()
        with self.store.transaction() as tx:
            portal = setup.create_portal(tx, "cpu", gdpr_enabled=False, now=now_ms())
            _, secret = setup.create_token(tx, portal.id, list(Scope), "cpu", now_ms())
            self.subscription = tx.portals.list_definitions(portal.id)[0].id
        self.app = create_app(Settings(database_url=url, demo=False, token_cache_seconds=60), self.store)
        self.auth = [(b"authorization", f"Bearer {secret}".encode())]

    async def call(self, method: str, path: str, query: bytes = b"", body: bytes = b"") -> int:
        headers = list(self.auth)
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
        }
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never goes away
            return {"type": "http.disconnect"}

        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, send)
        return status[0]

    def write(self, n: int) -> Awaitable[int]:
        state = "SUBSCRIBED" if n % 2 else "UNSUBSCRIBED"
        body = {"statusState": state, "subscriptionId": self.subscription, "channel": "EMAIL"}
        return self.call("POST", f"{V4}a{n % ADDRESSES}@example.com", body=json.dumps(body).encode())

    def v4_read(self, n: int) -> Awaitable[int]:
        return self.call("GET", f"{V4}a{n % ADDRESSES}@example.com", b"channel=EMAIL")

    def v3_read(self, n: int) -> Awaitable[int]:
        return self.call("GET", f"/communication-preferences/v3/status/email/a{n % ADDRESSES}@example.com")

    def healthz(self, n: int) -> Awaitable[int]:
        return self.call("GET", "/healthz")

    def batch_read(self, n: int) -> Awaitable[int]:
        body = {"inputs": [f"a{(n * 100 + k) % ADDRESSES}@example.com" for k in range(100)]}
        return self.call("POST", f"{V4}batch/read", b"channel=EMAIL", json.dumps(body).encode())


async def measure(call: Callable[[int], Awaitable[int]], total: int) -> tuple[float, float]:
    """(CPU microseconds a request, requests a second) of `total` calls, CONCURRENCY at a time."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(n: int) -> None:
        async with slots:
            status = await call(n)
            assert status in (200, 207), status

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(total)))
    return (time.process_time() - cpu) / total * 1e6, total / (time.perf_counter() - wall)


async def main() -> None:
    driver = Driver()
    async with driver.app.router.lifespan_context(driver.app):
        for n in range(ADDRESSES):
            await driver.write(n)
        scenarios = [
            ("GET /healthz", driver.healthz, 10_000),
            ("v4 status read", driver.v4_read, 4_000),
            ("v3 status read", driver.v3_read, 4_000),
            ("v4 status write", driver.write, 3_000),
            ("batch read of 100", driver.batch_read, 150),
        ]
        print(f"| call | CPU a request (least of {ROUNDS}) | requests a second |")
        print("| --- | --- | --- |")
        for name, call, total in scenarios:
            await measure(call, total // 2)  # warm-up
            cpu, rate = min([await measure(call, total) for _ in range(ROUNDS)])
            print(f"| {name} | {cpu:,.1f} µs | {rate:,.0f} |")
    driver.store.close()


if __name__ == "__main__":
    asyncio.run(main())
