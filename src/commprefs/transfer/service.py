"""The transfer service face: imports (checked at once, run in the background one at a time), their jobs and
rejected rows, and streaming exports. Exports and rejects are byte chunks made in a worker thread."""

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio.to_thread

from commprefs.clock import now_ms
from commprefs.domain.errors import DomainError, NotFound
from commprefs.store import Store
from commprefs.transfer import exporter, importer
from commprefs.transfer.exporter import ExportRequest
from commprefs.transfer.formats import HeaderError
from commprefs.transfer.importer import Counts, ImportRequest, JobState, Progress, Reject

log = logging.getLogger("commprefs.transfer")
# A job whose worker has not reported for this long was interrupted (its process stopped).
STALLED_MS = 5 * 60 * 1000
HEARTBEAT_SECONDS = 30.0
INTERRUPTED = "interrupted: the server stopped during the import; send the file again (rows already in are skipped)"


@dataclass(frozen=True, slots=True)
class Job:
    """An import as its caller sees it: a job whose worker stopped reporting reads as FAILED (interrupted)."""

    row: Any
    state: str
    error: str | None

    @classmethod
    def of(cls, row: Any, now: int) -> "Job":
        if row.state in (JobState.PENDING, JobState.PROCESSING) and now - row.updated_at > STALLED_MS:
            return cls(row, JobState.FAILED, INTERRUPTED)
        return cls(row, row.state, row.error)


class Transfer:
    """Imports and exports of one store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._runner = ImportRunner(store)

    # -- imports ----------------------------------------------------------------------------------------

    def check_and_create(self, request: ImportRequest, path: Path) -> str:
        """Check the file's header (HeaderError if it cannot be imported at all) and record a PENDING job."""
        with path.open("rb") as stream:
            importer.check(self._store, request, stream)
        return importer.create_job(self._store, request)

    async def start_import(self, request: ImportRequest, path: Path) -> Job:
        """Check the file, then import it in the background (the file is removed once done): the new job."""
        job_id = await anyio.to_thread.run_sync(self.check_and_create, request, path)
        self._runner.start(job_id, request, path)
        return await self.job(request.portal_id, job_id)

    def run_import(
        self,
        request: ImportRequest,
        stream: IO[bytes],
        *,
        on_reject: Callable[[Reject], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> tuple[str, Counts]:
        """Import `stream` here and now (the CLI): the job's id and its counts."""
        job_id = importer.create_job(self._store, request)
        return job_id, importer.run(self._store, job_id, request, stream, on_reject=on_reject, on_progress=on_progress)

    async def imports(self, portal_id: int, limit: int) -> list[Job]:
        rows = await self._store.aread(lambda tx: tx.transfer.list_imports(portal_id, limit))
        now = now_ms()
        return [Job.of(row, now) for row in rows]

    async def job(self, portal_id: int, import_id: str) -> Job:
        row = await self._store.aread(lambda tx: tx.transfer.get_import(portal_id, import_id))
        if row is None:
            raise NotFound(f"import {import_id} does not exist", field="importId")
        return Job.of(row, now_ms())

    def rejects(self, portal_id: int, import_id: str, header: list[str]) -> Iterator[bytes]:
        """An import's rejected rows as CSV chunks: line, reason, then the row under the file's `header`."""
        with self._store.snapshot() as tx:
            rejects = tx.transfer.stream_rejects(portal_id, import_id)
            rows = ([r.line, r.reason, *json.loads(r.raw)] for r in rejects)
            yield from exporter.csv_chunks([*importer.REJECT_COLUMNS, *header], exporter.in_chunks(rows))

    # -- exports ----------------------------------------------------------------------------------------

    def export(self, request: ExportRequest) -> Iterator[bytes]:
        """The export's chunks, from one snapshot (NotFound at once for an unknown brand or subscription)."""
        return exporter.stream(self._store, request)


class ImportRunner:
    """Runs a process's imports one after another, each in a worker thread: two imports into one
    SQLite file would only take turns for its write lock anyway, and one at a time keeps the
    request path's share of the database predictable."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        # Jobs waiting for their turn: the running import keeps their heartbeat fresh, so that a
        # long import ahead of them does not make them look interrupted.
        self.waiting: dict[str, int] = {}
        self.last_beat = 0.0

    def start(self, job_id: str, request: ImportRequest, path: Path) -> None:
        self.waiting[job_id] = request.portal_id
        task = asyncio.create_task(self._run(job_id, request, path))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: str, request: ImportRequest, path: Path) -> None:
        try:
            async with self.lock:
                self.waiting.pop(job_id, None)
                await anyio.to_thread.run_sync(self._import, job_id, request, path)
        except (HeaderError, DomainError):
            pass  # recorded on the job as FAILED with its reason
        except Exception as exc:
            log.error("import %s failed: %s", job_id, type(exc).__name__)
        finally:
            self.waiting.pop(job_id, None)
            path.unlink(missing_ok=True)

    def _import(self, job_id: str, request: ImportRequest, path: Path) -> None:
        with path.open("rb") as stream:
            importer.run(self.store, job_id, request, stream, on_progress=self._beat)

    def _beat(self, _: Progress) -> None:
        if time.monotonic() - self.last_beat < HEARTBEAT_SECONDS or not self.waiting:
            return
        self.last_beat = time.monotonic()
        now = now_ms()
        with self.store.transaction() as tx:
            for job_id, portal_id in list(self.waiting.items()):
                tx.transfer.update_import(portal_id, job_id, updated_at=now)
