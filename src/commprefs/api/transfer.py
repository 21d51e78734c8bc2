"""Data in and out over HTTP (/commprefs/v1): bulk imports run in the background with a status to
poll, streaming exports, and data-subject access and erasure.

Scopes: imports and data-subject requests need commprefs.admin; the export needs
communication_preferences.statuses.batch.read (or commprefs.admin), the scope of HubSpot's
batch reads, so that a sending system can pull its suppression list with its own token.
"""

import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator
from starlette.responses import Response, StreamingResponse

from commprefs.api.auth import AdminCaller, ConsentDep, TransferDep, api_actor, require_scope
from commprefs.api.errors import ApiError, field_error
from commprefs.api.records import IMPORTS_PATH, erasure_json, job_json, subject_json
from commprefs.api.responses import JSON
from commprefs.api.wire import INT64_MAX, ObjectId, no_nul
from commprefs.domain.email import normalize_email
from commprefs.domain.enums import Scope, Source
from commprefs.domain.model import TokenInfo
from commprefs.transfer.exporter import MEDIA_TYPES, ExportFormat, ExportRequest
from commprefs.transfer.formats import Format, HeaderError
from commprefs.transfer.importer import ImportRequest

router = APIRouter(prefix="/commprefs/v1", tags=["data"])
ExportCaller = Annotated[TokenInfo, Depends(require_scope(Scope.BATCH_READ, Scope.ADMIN))]


@router.post("/imports", summary="Import a CSV file (commprefs, HubSpot, Mailchimp) in the background", status_code=202)
async def start_import(
    request: Request,
    caller: AdminCaller,
    transfer: TransferDep,
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
            actor=api_actor(request, caller, Source.IMPORT),
            format=format,
            subscription=subscription,
            dry_run=dryRun,
            file_name=fileName,
        )
        job = await transfer.start_import(job_request, path)
    except HeaderError as exc:
        path.unlink(missing_ok=True)
        raise ApiError(400, str(exc), errors=[field_error(str(exc), "body", "INVALID_FILE")]) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return JSON(job_json(job), status_code=202, headers={"Location": f"{IMPORTS_PATH}/{job.row.id}"})


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
async def list_imports(
    caller: AdminCaller, transfer: TransferDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Any:
    return JSON({"results": [job_json(job) for job in await transfer.imports(caller.portal_id, limit)]})


@router.get("/imports/{importId}", summary="An import's state and counts")
async def get_import(importId: ObjectId, caller: AdminCaller, transfer: TransferDep) -> Any:
    return JSON(job_json(await transfer.job(caller.portal_id, importId)))


@router.get("/imports/{importId}/rejects", summary="An import's rejected rows as CSV: line, reason, the row")
async def import_rejects(importId: ObjectId, caller: AdminCaller, transfer: TransferDep) -> Any:
    job = await transfer.job(caller.portal_id, importId)
    header = json.loads(job.row.options).get("header") or []
    chunks = transfer.rejects(caller.portal_id, importId, header)
    return _streaming(chunks, "text/csv; charset=utf-8", f"{importId}-rejects.csv")


@router.get(
    "/exports/statuses",
    summary="Every status and opt-out from all, streamed as CSV or JSON lines",
    response_class=Response,
    responses={
        200: {
            "description": "The rows, streamed: CSV (`format=csv`) or JSON lines (`format=jsonl`).",
            "content": {media.split(";")[0]: {"schema": {"type": "string"}} for media in MEDIA_TYPES.values()},
        }
    },
)
async def export_statuses(
    caller: ExportCaller,
    transfer: TransferDep,
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
    chunks = await anyio.to_thread.run_sync(transfer.export, request)
    suffix = "-suppressed" if suppressedOnly else ""
    return _streaming(chunks, MEDIA_TYPES[format], f"statuses-{caller.portal_id}{suffix}.{format.value}")


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
async def subject_access(emailAddress: str, caller: AdminCaller, service: ConsentDep) -> Any:
    return JSON(subject_json(await service.subject(caller.portal_id, normalize_email(emailAddress))))


@router.delete("/subjects/{emailAddress}", summary="Erase an address, keeping a salted-hash tombstone (GDPR)")
async def subject_erasure(emailAddress: str, request: Request, caller: AdminCaller, service: ConsentDep) -> Any:
    """Deletes the address's statuses, opt-outs, history and rejected import lines. It then reads as
    opted out of all; no import or v3 call subscribes it again; only a new explicit consent (v4
    SUBSCRIBED with a legal basis, or the preference page) lifts the tombstone, and is recorded."""
    address = normalize_email(emailAddress)
    erasure = await service.erase(caller.portal_id, address, api_actor(request, caller, Source.ERASURE))
    return JSON(erasure_json(erasure))
