"""The webhook sender: a background task in every `commprefs serve` process.

Each tick leases the endpoints that are due (FOR UPDATE SKIP LOCKED on PostgreSQL, so with several
processes each endpoint has one sender), reads the events after each endpoint's position from the
committed change feed, and sends them one at a time, in order, signed per Standard Webhooks. The
position advances only past acknowledged events, in the same transaction as the delivery log: a
crash at any point resends (same `webhook-id`), never skips. A failure stops the endpoint's queue
(order per subscriber is kept) and schedules a retry with exponential backoff and jitter.

Every few seconds the sender also measures the backlog (events not yet delivered) for /metrics.
"""

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from commprefs.clock import iso, now_ms
from commprefs.config import Settings
from commprefs.consent.history import recorded
from commprefs.domain.model import DeliveryAttempt
from commprefs.metrics import WEBHOOK_BACKLOG
from commprefs.store import Store
from commprefs.webhooks import endpoints as webhooks
from commprefs.webhooks.payload import event_type, events_json

log = logging.getLogger("commprefs.webhooks")
# A run sends for at most SEND_BUDGET_S (plus one timeout), well inside its lease; a sender that
# died mid-run holds its endpoints until the lease runs out.
LEASE_MS = 20_000
BATCH = 100
SEND_BUDGET_S = 10.0
MAX_RUNS = 50
BACKLOG_EVERY_S = 2.0
BACKLOG_CAP = 10_000  # events counted per endpoint: the gauge stays cheap however far one falls behind


class Sender:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.owner = "w_" + secrets.token_hex(8)
        self._runs: set[asyncio.Task[bool]] = set()
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            headers={"User-Agent": "commprefs-webhooks/1"},
        )

    async def run(self) -> None:
        """Tick forever; a tick that found work is followed at once by another."""
        next_measure = 0.0
        while True:
            try:
                if time.monotonic() >= next_measure:
                    next_measure = time.monotonic() + BACKLOG_EVERY_S
                    WEBHOOK_BACKLOG.set(await self.store.aread(lambda tx: tx.webhooks.webhook_backlog(BACKLOG_CAP)))
                busy = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be down: try again shortly
                log.warning("webhook tick failed: %s", type(exc).__name__)
                busy = False
            if not busy:
                await asyncio.sleep(self.settings.webhook_poll_seconds)

    async def close(self) -> None:
        for run in list(self._runs):
            run.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self.client.aclose()

    async def tick(self) -> bool:
        """Start a run for each endpoint that is due; runs go on independently, so one slow
        receiver never holds up another endpoint."""
        room = MAX_RUNS - len(self._runs)
        now = now_ms()
        if room <= 0 or not await self.store.aread(lambda tx: tx.webhooks.any_endpoint_due(now)):
            return False  # checked on a reader first, so that an idle sender never takes the write lock
        claimed = await self.store.write(lambda tx: tx.webhooks.claim_endpoints(self.owner, now, LEASE_MS, room))
        for endpoint in claimed:
            run = asyncio.create_task(self.drain(endpoint))
            self._runs.add(run)
            run.add_done_callback(self._finished)
        return bool(claimed)

    def _finished(self, run: asyncio.Task[bool]) -> None:
        self._runs.discard(run)
        if not run.cancelled() and run.exception() is not None:
            log.warning("webhook run failed: %s", type(run.exception()).__name__)

    async def drain(self, endpoint: Any) -> bool:
        """Send `endpoint`'s next events; True if a full batch went out (more may be waiting)."""
        portal_id = endpoint.portal_id

        def read(tx: Any) -> tuple[list[Any], list[dict[str, Any]]]:
            rows = tx.feed.feed(portal_id, (endpoint.cursor_txid, endpoint.cursor_id), BATCH)
            return rows, events_json(recorded(tx, portal_id, rows), with_person=False)

        rows, bodies = await self.store.aread(read)
        wanted = set(endpoint.event_types.split(",")) - {""}
        signer = Webhook(endpoint.secret)
        position = (endpoint.cursor_txid, endpoint.cursor_id)
        attempts: list[DeliveryAttempt] = []
        failed: tuple[int | None, str | None] | None = None
        started = time.monotonic()
        for row, data in zip(rows, bodies, strict=True):
            if wanted and event_type(row).value not in wanted:
                position = (row.txid, row.id)
                continue
            if time.monotonic() - started > SEND_BUDGET_S:
                break
            body = {
                "type": event_type(row).value,
                "timestamp": iso(row.occurred_at),
                "data": data,
            }
            status, error, latency = await self.send(endpoint.url, signer, f"evt_{row.id}", orjson.dumps(body))
            attempts.append(
                DeliveryAttempt(
                    portal_id,
                    endpoint.id,
                    row.id,
                    # Only the head of the queue can have been tried before.
                    attempt=endpoint.failures + 1 if not attempts else 1,
                    status_code=status,
                    error=error,
                    latency_ms=latency,
                    attempted_at=now_ms(),
                )
            )
            if status is not None and 200 <= status < 300:
                position = (row.txid, row.id)
                continue
            failed = (status, error)
            break
        await self.store.write(lambda tx: self._record(tx, endpoint, position, attempts, failed))
        return failed is None and len(rows) == BATCH

    def _record(
        self,
        tx: Any,
        endpoint: Any,
        position: tuple[int, int],
        attempts: list[DeliveryAttempt],
        failed: tuple[int | None, str | None] | None,
    ) -> None:
        now = now_ms()
        current = tx.webhooks.get_endpoint(endpoint.portal_id, endpoint.id)
        if current is None:
            return  # deleted meanwhile
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if (current.cursor_txid, current.cursor_id) != (endpoint.cursor_txid, endpoint.cursor_id):
            # A replay moved the position while this run was sending: it wins.
            tx.webhooks.add_deliveries(attempts)
            tx.webhooks.update_endpoint(endpoint.portal_id, endpoint.id, **values)
            return
        values.update(cursor_txid=position[0], cursor_id=position[1])
        if failed is None:
            values.update(failures=0, failing_since=None, next_attempt_at=0)
        else:
            status, _ = failed
            moved = position != (endpoint.cursor_txid, endpoint.cursor_id)
            failures = 1 if moved else current.failures + 1
            failing_since = now if moved or not current.failing_since else current.failing_since
            retry_at = now + webhooks.retry_delay_ms(failures)
            attempts[-1].next_attempt_at = retry_at
            values.update(failures=failures, failing_since=failing_since, next_attempt_at=retry_at)
            if status == 410:
                values.update(enabled=False, disabled_reason="the receiver answered 410 Gone")
            elif now - failing_since > webhooks.GIVE_UP_AFTER_MS:
                values.update(enabled=False, disabled_reason=f"failing since {iso(failing_since)}")
        tx.webhooks.add_deliveries(attempts)
        tx.webhooks.update_endpoint(endpoint.portal_id, endpoint.id, **values)

    async def send(
        self, url: str, signer: Webhook, message_id: str, payload: bytes
    ) -> tuple[int | None, str | None, int]:
        started = time.perf_counter()
        try:
            await self._check_destination(url)
            at = datetime.now(UTC)
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):  # the whole exchange
                response = await self.client.post(
                    url,
                    content=payload,
                    headers={
                        "content-type": "application/json",
                        "webhook-id": message_id,
                        "webhook-timestamp": str(int(at.timestamp())),
                        "webhook-signature": signer.sign(message_id, at, payload.decode()),
                    },
                )
            status, error = response.status_code, None
        except RefusedDestination as exc:
            status, error = None, str(exc)
        except TimeoutError:
            status, error = None, "Timeout"
        except httpx.HTTPError as exc:
            status, error = None, type(exc).__name__
        return status, error, round((time.perf_counter() - started) * 1000)

    async def _check_destination(self, url: str) -> None:
        if self.settings.webhook_allow_private_networks:
            return
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = await anyio.to_thread.run_sync(socket.getaddrinfo, host, port)
        except OSError as exc:
            raise RefusedDestination("cannot resolve the host") from exc
        if any(webhooks.blocked_address(str(info[4][0])) for info in found):
            raise RefusedDestination("refused: the host resolves to a private address")


class RefusedDestination(Exception):
    pass


@contextlib.asynccontextmanager
async def running(store: Store, settings: Settings) -> Any:
    """The sender as a background task for the life of the app."""
    sender = Sender(store, settings)
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.close()
