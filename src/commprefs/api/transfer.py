"""Data in and out over HTTP (/commprefs/v1): bulk imports run in the background with a status to
poll, streaming exports, and data-subject access and erasure.

Scopes: imports and data-subject requests need commprefs.admin; the export needs
communication_preferences.statuses.batch.read (or commprefs.admin), the scope of HubSpot's
batch reads, so that a sending system can pull its suppression list with its own token.
"""

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator
from starlette.responses import Response, StreamingResponse

from commprefs import consent
from commprefs.api.auth import AdminCaller, StoreDep, require_scope
from commprefs.api.errors import ApiError, field_error
from commprefs.api.responses import JSON
from commprefs.api.wire import INT64_MAX, ObjectId, no_nul
from commprefs.clock import iso, now_ms
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Scope, Source
from commprefs.domain.errors import DomainError, NotFound
from commprefs.domain.model import Actor, TokenInfo
from commprefs.store import Store
from commprefs.transfer import exporter, importer, subjects
from commprefs.transfer.exporter import ExportFormat, ExportRequest
from commprefs.transfer.formats import Format, HeaderError
from commprefs.transfer.importer import ImportRequest, JobState

log = logging.getLogger(__name__)

IMPORTS_PATH = "/commprefs/v1/imports"
# A job whose worker has not reported for this long was interrupted (its process stopped).
STALLED_MS = 5 * 60 * 1000
HEARTBEAT_SECONDS = 30.0

router = APIRouter(prefix="/commprefs/v1", tags=["data"])
ExportCaller = Annotated[TokenInfo, Depends(require_scope(Scope.BATCH_READ, Scope.ADMIN))]


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

    def _beat(self, _: importer.Progress) -> None:
        if time.monotonic() - self.last_beat < HEARTBEAT_SECONDS or not self.waiting:
            return
        self.last_beat = time.monotonic()
        now = now_ms()
        with self.store.transaction() as tx:
            for job_id, portal_id in list(self.waiting.items()):
                tx.update_import(portal_id, job_id, updated_at=now)


def job_json(row: Any) -> dict[str, Any]:
    state, error = row.state, row.error
    if state in (JobState.PENDING, JobState.PROCESSING) and now_ms() - row.updated_at > STALLED_MS:
        state = JobState.FAILED
        error = "interrupted: the server stopped during the import; send the file again (rows already in are skipped)"
    return {
        "id": row.id,
        "state": state,
        "format": row.format,
        "fileName": row.file_name,
        "dryRun": bool(row.dry_run),
        "counts": json.loads(row.counts),
        "error": error,
        "createdAt": iso(row.created_at),
        "startedAt": iso(row.started_at) if row.started_at else None,
        "completedAt": iso(row.completed_at) if row.completed_at else None,
        "links": {"self": f"{IMPORTS_PATH}/{row.id}", "rejects": f"{IMPORTS_PATH}/{row.id}/rejects"},
    }


@router.post("/imports", summary="Import a CSV file (commprefs, HubSpot, Mailchimp) in the background", status_code=202)
async def start_import(
    request: Request,
    caller: AdminCaller,
    store: StoreDep,
    format: Annotated[Format | None, Query(description="File format; default: told by the header.")] = None,
    subscription: Annotated[
        str | None,
        AfterValidator(no_nul),
        Query(max_length=200, description="Mailchimp: the subscription (id or name) the audience maps to."),
    ] = None,
    dryRun: Annotated[bool, Query(description="Check and count every row; write nothing.")] = False,
    fileName: Annotated[
        str, AfterValidator(no_nul), Query(max_length=500, description="A name to recognise the import by.")
    ] = "",
) -> Any:
    """The body is the CSV file itself (any content type but multipart), or a multipart form with
    the file in `file`. The header is checked at once (400 if the file cannot be imported at all);
    the rows are then applied in the background: poll the returned `links.self`."""
    path = await _spool(request)
    try:
        job_request = ImportRequest(
            portal_id=caller.portal_id,
            actor=Actor(Source.IMPORT, token_id=caller.id, request_id=getattr(request.state, "request_id", None)),
            format=format,
            subscription=subscription,
            dry_run=dryRun,
            file_name=fileName,
        )

        def check() -> str:
            with path.open("rb") as stream:
                importer.check(store, job_request, stream)
            return importer.create_job(store, job_request)

        try:
            job_id = await anyio.to_thread.run_sync(check)
        except HeaderError as exc:
            raise ApiError(400, str(exc), errors=[field_error(str(exc), "body", "INVALID_FILE")]) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    request.app.state.imports.start(job_id, job_request, path)
    row = await store.aread(lambda tx: tx.get_import(caller.portal_id, job_id))
    return JSON(job_json(row), status_code=202, headers={"Location": f"{IMPORTS_PATH}/{job_id}"})


async def _spool(request: Request) -> Path:
    """The request's file, written to a temporary file as it arrives (never held in memory)."""
    handle, name = tempfile.mkstemp(prefix="commprefs-import-", suffix=".csv")
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as sink:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form()
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    message = "the multipart body needs the file in a part named 'file'"
                    raise ApiError(400, message, errors=[field_error(message, "file", "REQUIRED")])
                while chunk := await upload.read(1 << 20):
                    sink.write(chunk)
            else:
                async for chunk in request.stream():
                    sink.write(chunk)
        if path.stat().st_size == 0:
            message = "the request has no file: send the CSV as the body"
            raise ApiError(400, message, errors=[field_error(message, "body", "REQUIRED")])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@router.get("/imports", summary="The portal's imports, newest first")
async def list_imports(caller: AdminCaller, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    rows = await store.aread(lambda tx: tx.list_imports(caller.portal_id, limit))
    return JSON({"results": [job_json(r) for r in rows]})


@router.get("/imports/{importId}", summary="An import's state and counts")
async def get_import(importId: ObjectId, caller: AdminCaller, store: StoreDep) -> Any:
    return JSON(job_json(await _job(store, caller, importId)))


@router.get("/imports/{importId}/rejects", summary="An import's rejected rows as CSV: line, reason, the row")
async def import_rejects(importId: ObjectId, caller: AdminCaller, store: StoreDep) -> Any:
    job = await _job(store, caller, importId)
    header = json.loads(job.options).get("header") or []

    def rows() -> Iterator[bytes]:
        with store.snapshot() as tx:
            rejects = tx.stream_rejects(caller.portal_id, importId)
            rows = ([r.line, r.reason, *json.loads(r.raw)] for r in rejects)
            yield from exporter.csv_chunks([*importer.REJECT_COLUMNS, *header], exporter.in_chunks(rows))

    return _streaming(rows(), "text/csv; charset=utf-8", f"{importId}-rejects.csv")


async def _job(store: Store, caller: TokenInfo, import_id: str) -> Any:
    row = await store.aread(lambda tx: tx.get_import(caller.portal_id, import_id))
    if row is None:
        raise NotFound(f"import {import_id} does not exist", field="importId")
    return row


@router.get(
    "/exports/statuses",
    summary="Every status and opt-out from all, streamed as CSV or JSON lines",
    response_class=Response,
    responses={
        200: {
            "description": "The rows, streamed: CSV (`format=csv`) or JSON lines (`format=jsonl`).",
            "content": {media.split(";")[0]: {"schema": {"type": "string"}} for media in exporter.MEDIA_TYPES.values()},
        }
    },
)
async def export_statuses(
    caller: ExportCaller,
    store: StoreDep,
    format: Annotated[ExportFormat, Query(description="csv (commprefs' import format) or jsonl.")] = ExportFormat.CSV,
    suppressedOnly: Annotated[bool, Query(description="Only unsubscribes and opt-outs from all.")] = False,
    businessUnitId: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
    subscriptionId: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None,
) -> Any:
    """With `suppressedOnly=true&subscriptionId=X`: everyone who must not get email X (their
    unsubscribes from X, and the portal-wide and X's brand-wide opt-outs). Erased addresses are
    not listed (their address is gone); the status APIs read them as opted out of all."""
    request = ExportRequest(
        caller.portal_id,
        format,
        suppressed_only=suppressedOnly,
        business_unit_id=businessUnitId,
        subscription_id=subscriptionId,
    )
    chunks = await anyio.to_thread.run_sync(exporter.stream, store, request)
    suffix = "-suppressed" if suppressedOnly else ""
    return _streaming(chunks, exporter.MEDIA_TYPES[format], f"statuses-{caller.portal_id}{suffix}.{format.value}")


def _streaming(chunks: Iterator[bytes], media_type: str, file_name: str) -> Response:
    """Chunks produced in a worker thread (they read the database) and sent as they come; the
    iterator is closed (its snapshot released) even when the client goes away."""

    async def body() -> AsyncIterator[bytes]:
        try:
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)

    headers = {"Content-Disposition": f'attachment; filename="{file_name}"', "Cache-Control": "no-store"}
    return StreamingResponse(body(), media_type=media_type, headers=headers)


@router.get("/subjects/{emailAddress}", summary="Everything held about an address (GDPR access request)")
async def subject_access(emailAddress: str, caller: AdminCaller, store: StoreDep) -> Any:
    address = normalize_email(emailAddress)
    return JSON(await store.aread(lambda tx: subjects.subject_record(tx, caller.portal_id, address)))


@router.delete("/subjects/{emailAddress}", summary="Erase an address, keeping a salted-hash tombstone (GDPR)")
async def subject_erasure(emailAddress: str, request: Request, caller: AdminCaller, store: StoreDep) -> Any:
    """Deletes the address's statuses, opt-outs, history and rejected import lines. It then reads as
    opted out of all; no import or v3 call subscribes it again; only a new explicit consent (v4
    SUBSCRIBED with a legal basis, or the preference page) lifts the tombstone, and is recorded."""
    address = normalize_email(emailAddress)
    actor = Actor(Source.ERASURE, token_id=caller.id, request_id=getattr(request.state, "request_id", None))
    erasure = await store.write(lambda tx: consent.erase(tx, caller.portal_id, address, actor, now_ms()))
    return JSON(subjects.erasure_json(erasure))
