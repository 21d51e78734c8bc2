"""Streaming export: every stored status and opt-out from all of a portal, or only the suppressions
("who must not get this email"), as CSV or JSON lines.

Rows come from the database a few thousand at a time (a server-side cursor on PostgreSQL) inside
one snapshot, already in the export's columns and text, and leave as encoded chunks: memory stays
flat whatever the portal's size, and no Python object is made per row for a CSV. The CSV is
commprefs' own import format, so an export imports into another portal as it is.
"""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import Any

import orjson

from commprefs.domain.enums import Channel
from commprefs.domain.errors import NotFound
from commprefs.domain.model import Definition
from commprefs.store import Store, Tx
from commprefs.store.transfer import ExportRows
from commprefs.transfer.formats import COMMPREFS_COLUMNS, SUBSCRIPTION_SCOPE

CHUNK_ROWS = 1000


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSONL: "application/x-ndjson"}


@dataclass(frozen=True)
class ExportRequest:
    portal_id: int
    format: ExportFormat = ExportFormat.CSV
    suppressed_only: bool = False
    business_unit_id: int | None = None
    subscription_id: int | None = None


@dataclass(frozen=True)
class ExportPlan:
    request: ExportRequest
    definitions: dict[int, Definition]
    subscription_ids: list[int] | None
    business_unit_id: int | None


def plan(tx: Tx, request: ExportRequest) -> ExportPlan:
    """Check what the request names (before the first byte is sent) and settle the filters: a
    subscription brings its brand's and the portal-wide opt-outs, a brand its subscriptions' rows."""
    definitions = {d.id: d for d in tx.portals.list_definitions(request.portal_id)}
    subscription_ids: list[int] | None = None
    unit = request.business_unit_id
    if unit is not None and tx.portals.get_business_unit(request.portal_id, unit) is None:
        raise NotFound(f"business unit {unit} does not exist", field="businessUnitId")
    if request.subscription_id is not None:
        definition = definitions.get(request.subscription_id)
        if definition is None or (unit is not None and definition.business_unit_id != unit):
            raise NotFound(f"subscription {request.subscription_id} does not exist", field="subscriptionId")
        subscription_ids, unit = [definition.id], definition.business_unit_id
    elif unit is not None:
        subscription_ids = [d.id for d in definitions.values() if d.business_unit_id == unit]
    return ExportPlan(request, definitions, subscription_ids, unit)


def _rows(export: ExportPlan) -> ExportRows:
    request = export.request
    return ExportRows(
        request.portal_id,
        Channel.EMAIL.value,
        export.subscription_ids,
        export.business_unit_id,
        request.suppressed_only,
        SUBSCRIPTION_SCOPE,
    )


_JSON_KEYS = tuple("".join(p.capitalize() if i else p for i, p in enumerate(c.split("_"))) for c in COMMPREFS_COLUMNS)


def encode(tx: Tx, export: ExportPlan) -> Iterator[bytes]:
    """The rows in COMMPREFS_COLUMNS' order (per-subscription statuses first, then opt-outs from all, each in
    address order) as CSV with its header (written by the database where it can, PostgreSQL's COPY, else by
    the csv module's C writer) or JSON lines (camelCase keys, like the API)."""
    rows = _rows(export)
    if export.request.format is ExportFormat.CSV and tx.transfer.writes_csv:
        yield from tx.transfer.export_csv(rows, COMMPREFS_COLUMNS)
        return
    chunks = tx.transfer.export_chunks(rows)
    if export.request.format is ExportFormat.JSONL:
        for chunk in chunks:
            yield b"".join(orjson.dumps(dict(zip(_JSON_KEYS, row, strict=True))) + b"\n" for row in chunk)
        return
    yield from csv_chunks(COMMPREFS_COLUMNS, chunks)


def in_chunks(rows: Iterable[Sequence[Any]]) -> Iterator[list[Sequence[Any]]]:
    """`rows` in lists of CHUNK_ROWS (the last one shorter)."""
    source = iter(rows)
    while chunk := list(islice(source, CHUNK_ROWS)):
        yield chunk


def csv_chunks(header: Sequence[str], chunks: Iterable[Sequence[Sequence[Any]]]) -> Iterator[bytes]:
    """A header and chunks of rows as CSV, by the csv module's C writer, one encoded chunk each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for chunk in chunks:
        writer.writerows(chunk)
        yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data


def stream(store: Store, request: ExportRequest) -> Iterator[bytes]:
    """The whole export as byte chunks, read from one snapshot. Raises NotFound before the first
    chunk if the request names a brand or subscription the portal does not have."""
    held = ExitStack()
    tx = held.enter_context(store.snapshot())
    try:
        export = plan(tx, request)
    except BaseException:
        held.close()
        raise

    def chunks() -> Iterator[bytes]:
        with held:
            yield from encode(tx, export)

    return chunks()
