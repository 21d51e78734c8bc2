"""Bulk import: a file is read as a stream and applied in batches, each batch one transaction.

Memory stays flat whatever the file's size: a batch of rows is held at a time (two on PostgreSQL). Each batch loads
its subscribers in one query, applies the consent rules (`consent/imports.py`) in memory and
writes the changes set-based, with its rejected rows and the job's running counts, in the same
transaction: an interrupted import leaves whole batches applied and counted, and running the file
again finishes it (a re-run changes nothing that is already there).

On PostgreSQL the next batch is read and parsed in a thread of its own while the current one is applied
(`_read_ahead`): the database's part of a batch (a third of an import's time) waits on the network with the
GIL free. The rules stay in order: a batch is applied only after the one before it has committed. SQLite's
part runs in this process, and the thread only took turns with it for the GIL (100,000 rows: 7.0 s without,
7.6-7.9 s with).
"""

import csv
import io
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from commprefs.clock import now_ms
from commprefs.consent import Changes, ImportedStatus, ImportOutcome
from commprefs.consent.imports import import_status, import_target
from commprefs.domain.email import normalize_email
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Actor, RejectedLine
from commprefs.store import Store, Tx
from commprefs.transfer.formats import (
    Columns,
    Format,
    HeaderError,
    Parser,
    RowError,
    commprefs_parser,
    detect,
    hubspot_parser,
    hubspot_subscriptions,
    mailchimp_parser,
)

BATCH_ROWS = 2000
# The tables' statistics are refreshed after this many applied changes, then at each doubling.
ANALYZE_FIRST = 10_000
# Mailchimp's audience is one subscription here; HubSpot's default marketing one unless told.
DEFAULT_MAILCHIMP_SUBSCRIPTION = "Marketing Information"


class JobState:
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


@dataclass
class Counts:
    """What an import did, by row (a line of the file) and by record (one status a row sets)."""

    rows: int = 0
    rejected: int = 0
    applied: int = 0
    unchanged: int = 0
    newerKept: int = 0
    optOutKept: int = 0
    erased: int = 0

    def add(self, outcome: ImportOutcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# A rejects file's columns before the row's own: the same from the CLI and the HTTP API.
REJECT_COLUMNS = ("line", "reason")


@dataclass(frozen=True)
class Reject:
    """A refused row: its physical line, the address it names (if any), why, and the row exactly
    as the file had it (`values`, under the file's `header`)."""

    line: int
    email: str | None
    reason: str
    values: list[str]
    header: list[str]


@dataclass(frozen=True)
class ImportRequest:
    portal_id: int
    actor: Actor
    format: Format | None = None  # None: told by the header
    subscription: str | None = None  # Mailchimp: the subscription the audience maps to (id or name)
    dry_run: bool = False
    file_name: str = ""


@dataclass
class Progress:
    counts: Counts
    bytes_read: int


@dataclass
class _Batch:
    header: list[str]
    rows: list[tuple[int, list[str], list[ImportedStatus]]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def create_job(store: Store, request: ImportRequest) -> str:
    """Record a new import as PENDING and return its id."""
    job_id = "imp_" + secrets.token_hex(10)
    now = now_ms()
    with store.transaction() as tx:
        tx.transfer.insert_import(
            request.portal_id,
            job_id,
            format=request.format.value if request.format else "auto",
            file_name=request.file_name[:500],
            options=_options(request, None),
            dry_run=request.dry_run,
            state=JobState.PENDING,
            counts=json.dumps(Counts().as_dict()),
            actor_token_id=request.actor.token_id,
            now=now,
        )
    return job_id


class _CountingReader(io.RawIOBase):
    """Counts the bytes read through it, for the progress bar's position in the file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


def run(
    store: Store,
    job_id: str,
    request: ImportRequest,
    stream: IO[bytes],
    *,
    on_reject: Callable[[Reject], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Counts:
    """Import the CSV in `stream` as job `job_id`. A file that cannot be imported at all (a header
    error) fails before anything is written; a database failure stops it between batches. Either
    way the job is marked FAILED with the reason, and the exception propagates."""
    counts = Counts()
    started = now_ms()
    _update(store, request.portal_id, job_id, state=JobState.PROCESSING, started_at=started, updated_at=started)
    try:
        counting, reader, header = _open(stream)
        fmt, parser = _prepare(store, request, header, started)
        _update(store, request.portal_id, job_id, format=fmt.value, options=_options(request, header))
        analyzed_at = ANALYZE_FIRST
        batches = _batches(reader, header, parser, Columns(header).find("email", "email address"))
        for batch in _read_ahead(batches) if store.dialect == "postgresql" else batches:
            _apply(store, job_id, request, batch, counts)
            if counts.applied >= analyzed_at and not request.dry_run:
                with store.transaction() as tx:
                    tx.transfer.refresh_statistics()
                analyzed_at *= 2
            for reject in batch.rejects:
                if on_reject is not None:
                    on_reject(reject)
            if on_progress is not None:
                on_progress(Progress(counts, counting.bytes_read))
    except Exception as exc:
        message = str(exc) if isinstance(exc, HeaderError | DomainError) else f"{type(exc).__name__}: import stopped"
        _update(
            store,
            request.portal_id,
            job_id,
            state=JobState.FAILED,
            error=message,
            completed_at=now_ms(),
            updated_at=now_ms(),
        )
        raise
    done = now_ms()
    _update(store, request.portal_id, job_id, state=JobState.COMPLETE, completed_at=done, updated_at=done)
    return counts


def check(store: Store, request: ImportRequest, stream: IO[bytes]) -> Format:
    """Read the header and make sure the file can be imported at all (the format is known, the
    columns it needs are there, the subscriptions it names exist); raises HeaderError if not."""
    _, _, header = _open(stream)
    return _prepare(store, request, header, now_ms())[0]


def _prepare(store: Store, request: ImportRequest, header: list[str], now: int) -> tuple[Format, Parser]:
    fmt = request.format or detect(header)
    return fmt, _parser(store, request, fmt, Columns(header), now)


def _open(stream: IO[bytes]) -> tuple[_CountingReader, Any, list[str]]:
    """A CSV reader over the byte stream (UTF-8, a BOM allowed), and the header row."""
    counting = _CountingReader(stream)
    text = io.TextIOWrapper(io.BufferedReader(counting, 1 << 16), encoding="utf-8-sig", errors="replace")
    reader = csv.reader(text)
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise HeaderError("the file is empty: it needs a header row")
    return counting, reader, header


def _options(request: ImportRequest, header: list[str] | None) -> str:
    return json.dumps({"subscription": request.subscription, "header": header})


def _update(store: Store, portal_id: int, job_id: str, **values: Any) -> None:
    with store.transaction() as tx:
        tx.transfer.update_import(portal_id, job_id, **values)


def _parser(store: Store, request: ImportRequest, fmt: Format, columns: Columns, now: int) -> Parser:
    """The format's row parser, once the subscriptions its header names are known to exist."""
    if fmt is Format.COMMPREFS:
        return commprefs_parser(columns, now)

    def check(tx: Tx) -> Parser:
        changes = Changes(tx, request.portal_id, request.actor, now)
        if fmt is Format.HUBSPOT:
            named = hubspot_subscriptions(columns)
            unknown = []
            for column, subscription in named.items():
                try:
                    named[column] = _resolve(changes, subscription)
                except DomainError:
                    unknown.append(str(subscription))
            if unknown:
                raise HeaderError(
                    f"the file has opt-out columns for subscriptions this portal does not have: {', '.join(unknown)}; "
                    "create them first (commprefs definitions create)"
                )
            return hubspot_parser(columns, now, named)
        wanted = request.subscription or DEFAULT_MAILCHIMP_SUBSCRIPTION
        try:
            target = _resolve(changes, int(wanted) if wanted.isdigit() else wanted)
        except DomainError as exc:
            raise HeaderError(f"{exc.message}: name the subscription the audience maps to with --subscription") from exc
        return mailchimp_parser(columns, now, target)

    return store.read(check)


def _resolve(changes: Changes, subscription: int | str) -> int:
    if isinstance(subscription, str):
        return changes.definition_named(subscription).id
    return changes.definition(subscription).id


def _batches(
    reader: Iterator[list[str]], header: list[str], parser: Parser, email_column: str | None
) -> Iterator[_Batch]:
    batch = _Batch(header)
    line_end = 1  # csv's line_num: the physical line a row ends on (quoted fields may span lines)
    for values in reader:
        line, line_end = line_end + 1, reader.line_num  # type: ignore[attr-defined]
        if not any(v.strip() for v in values):
            continue
        row = dict(zip(header, values, strict=False))
        joined = "".join(values)  # one scan of the row's text for what no field may hold
        try:
            if len(values) != len(header):
                raise RowError(f"the row has {len(values)} fields, the header {len(header)}")
            if "\ufffd" in joined:
                raise RowError("the row is not valid UTF-8")
            if "\x00" in joined:
                raise RowError("the row contains a NUL character")
            batch.rows.append((line, values, parser(row)))
        except RowError as exc:
            address = (row.get(email_column) or "").strip().lower()[:320] if email_column else ""
            address = address if address.isprintable() else ""  # kept only to find it again on erasure
            batch.rejects.append(Reject(line, address or None, str(exc), values, header))
        if len(batch.rows) + len(batch.rejects) >= BATCH_ROWS:
            yield batch
            batch = _Batch(header)
    if batch.rows or batch.rejects:
        yield batch


def _read_ahead(batches: Iterable["_Batch"]) -> Iterator["_Batch"]:
    """`batches`, each read by a thread of its own while the caller works on the one before."""
    with ThreadPoolExecutor(1, thread_name_prefix="commprefs-import-reader") as reader:
        source = iter(batches)
        upcoming = reader.submit(next, source, None)
        while (batch := upcoming.result()) is not None:
            upcoming = reader.submit(next, source, None)
            yield batch


def _erased(changes: Changes, emails: list[str]) -> set[str]:
    """Which of the rejected rows' addresses (those that are addresses at all) are erased."""
    valid = {}
    for email in emails:
        try:
            valid[email] = normalize_email(email)
        except DomainError:
            continue
    changes.load(valid.values())
    return {raw for raw, address in valid.items() if changes.subscriber(address).erased_at is not None}


def _apply(store: Store, job_id: str, request: ImportRequest, batch: _Batch, counts: Counts) -> None:
    """One batch, one transaction: the changes, the rejects and the running counts together."""
    now = now_ms()
    unparsed = len(batch.rejects)
    with store.transaction() as tx:
        changes = Changes(tx, request.portal_id, request.actor, now, import_id=job_id)
        changes.load(record.address for _, _, records in batch.rows for record in records)
        batch_counts = Counts(**counts.as_dict())
        for line, values, records in batch.rows:
            try:
                targets = [import_target(changes, record) for record in records]
            except DomainError as exc:
                batch.rejects.append(Reject(line, records[0].address, exc.message, values, batch.header))
                continue
            for record, target in zip(records, targets, strict=True):
                batch_counts.add(import_status(changes, record, target))
        batch.rejects.sort(key=lambda r: r.line)
        batch_counts.rows += len(batch.rows) + unparsed
        batch_counts.rejected += len(batch.rejects)
        if not request.dry_run:
            changes.flush()
        erased = _erased(changes, [r.email for r in batch.rejects if r.email])
        tx.transfer.add_rejects(
            request.portal_id,
            job_id,
            [
                # An erased address's rejected row is reported, never kept: it would bring it back.
                RejectedLine(r.line, None, r.reason, "[]")
                if r.email in erased
                else RejectedLine(r.line, r.email, r.reason, json.dumps(r.values, ensure_ascii=False))
                for r in batch.rejects
            ],
        )
        tx.transfer.update_import(request.portal_id, job_id, counts=json.dumps(batch_counts.as_dict()), updated_at=now)
    for name, value in batch_counts.as_dict().items():
        setattr(counts, name, value)
