"""The transfer benchmark's data: generated import records, written as a commprefs CSV file or inserted
with the plain database driver (the ceiling an import is measured against), and read back with it (the
ceiling of an export)."""

import csv
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import psycopg

from commprefs.transfer.formats import COMMPREFS_COLUMNS

DEFINITIONS = ("Marketing Information", "Customer Service Communication", "One to One")
SUBSCRIPTION = "SUBSCRIPTION"
PORTAL_WIDE = "PORTAL_WIDE"
SUBSCRIBED = "SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"
# One address in this many also has an opt-out from all, after its three subscriptions' rows (an
# opt-out first would keep the SUBSCRIBED rows after it out, and every record is meant to apply).
PORTAL_WIDE_EVERY = 5
UNSUBSCRIBED_SHARE = 0.3
LEGAL_BASES = (
    ("CONSENT_WITH_NOTICE", "Ticked the newsletter box on the signup form"),
    ("LEGITIMATE_INTEREST_CLIENT", "Existing customer since the first order"),
    ("PERFORMANCE_OF_CONTRACT", "Service messages of the support contract"),
)
SOURCES = ("Imported from HubSpot", "Signup form", "CRM sync", "Trade show 2021")
# Row i happened at FIRST_MS + i seconds (+ a few ms): every time distinct, all in the past.
FIRST_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
BATCH_ROWS = 2000
CHANNEL = "EMAIL"


class Record(NamedTuple):
    """One row of the file: a subscription's status (`subscription` its name) or an opt-out from all."""

    email: str
    scope: str
    subscription: str | None
    status: str
    legal_basis: str | None
    legal_basis_explanation: str | None
    at_ms: int
    source: str


def records(n: int, seed: int = 1) -> Iterator[Record]:
    """`n` records, each for a (address, subscription or scope) key of its own. Addresses are spread
    over the key space (not sorted) as in a real export, so inserts land all over the indexes."""
    rng = random.Random(seed)
    made = 0
    address = 0
    while made < n:
        email = f"{(address * 2_654_435_761) % 2**32:08x}.{address}@example{address % 50}.com"
        for name in DEFINITIONS:
            if made == n:
                return
            at = FIRST_MS + made * 1000 + rng.randrange(1000)
            if rng.random() < UNSUBSCRIBED_SHARE:
                yield Record(email, SUBSCRIPTION, name, UNSUBSCRIBED, None, None, at, rng.choice(SOURCES))
            else:
                basis, explanation = rng.choice(LEGAL_BASES)
                yield Record(email, SUBSCRIPTION, name, SUBSCRIBED, basis, explanation, at, rng.choice(SOURCES))
            made += 1
        if address % PORTAL_WIDE_EVERY == 0 and made < n:
            at = FIRST_MS + made * 1000 + rng.randrange(1000)
            yield Record(email, PORTAL_WIDE, None, UNSUBSCRIBED, None, None, at, rng.choice(SOURCES))
            made += 1
        address += 1


def batches(items: Iterable[Record], size: int = BATCH_ROWS) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True)
class DataFile:
    path: Path
    rows: int
    unsubscribed: int  # rows a --suppressed-only export lists
    portal_wide: int
    bytes: int
    seconds: float


def write_csv(path: Path, n: int) -> DataFile:
    """The records as a commprefs import file, written row by row (never held in memory)."""
    started = time.perf_counter()
    unsubscribed = portal_wide = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COMMPREFS_COLUMNS)
        for r in records(n):
            unsubscribed += r.status == UNSUBSCRIBED
            portal_wide += r.scope == PORTAL_WIDE
            writer.writerow(
                (
                    r.email,
                    r.scope,
                    "",
                    "",
                    r.subscription or "",
                    r.status,
                    r.legal_basis or "",
                    r.legal_basis_explanation or "",
                    iso(r.at_ms),
                    r.source,
                )
            )
    return DataFile(path, n, unsubscribed, portal_wide, path.stat().st_size, time.perf_counter() - started)


# -- plain driver inserts -------------------------------------------------------------------------

STATUS_COLUMNS = (
    "portal_id",
    "subscriber",
    "channel",
    "subscription_id",
    "status",
    "legal_basis",
    "legal_basis_explanation",
    "source",
    "updated_at",
)
WIDE_COLUMNS = ("portal_id", "subscriber", "channel", "scope", "business_unit_id", "status", "source", "updated_at")
EVENT_COLUMNS = (
    "portal_id",
    "subscriber",
    "channel",
    "subscription_id",
    "wide_scope",
    "business_unit_id",
    "old_status",
    "new_status",
    "legal_basis",
    "legal_basis_explanation",
    "source",
    "occurred_at",
    "import_id",
    "recorded_at",
)
TABLES = (
    ("subscription_status", STATUS_COLUMNS),
    ("wide_status", WIDE_COLUMNS),
    ("consent_event", EVENT_COLUMNS),
)
RAW_IMPORT_ID = "imp_raw_bench"

Rows = list[tuple[object, ...]]


def insert_sql(table: str, columns: tuple[str, ...], placeholder: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([placeholder] * len(columns))})"


def table_rows(portal_id: int, definitions: dict[str, int], batch: list[Record]) -> tuple[Rows, Rows, Rows]:
    """The subscription_status, wide_status and consent_event rows the importer writes for `batch`
    (every definition in brand 0, as the three defaults are)."""
    now = int(time.time() * 1000)
    statuses: Rows = []
    wide: Rows = []
    events: Rows = []
    for r in batch:
        if r.scope == PORTAL_WIDE:
            wide.append((portal_id, r.email, CHANNEL, PORTAL_WIDE, 0, r.status, r.source, r.at_ms))
            subscription_id = None
        else:
            subscription_id = definitions[r.subscription or ""]
            statuses.append(
                (
                    portal_id,
                    r.email,
                    CHANNEL,
                    subscription_id,
                    r.status,
                    r.legal_basis,
                    r.legal_basis_explanation,
                    r.source,
                    r.at_ms,
                )
            )
        events.append(
            (
                portal_id,
                r.email,
                CHANNEL,
                subscription_id,
                PORTAL_WIDE if subscription_id is None else None,
                0,
                "NOT_SPECIFIED",
                r.status,
                r.legal_basis,
                r.legal_basis_explanation,
                r.source,
                r.at_ms,
                RAW_IMPORT_ID,
                now,
            )
        )
    return statuses, wide, events


def sqlite_insert(path: Path, portal_id: int, n: int) -> float:
    """Seconds spent in the database inserting the `n` records: `executemany` in one BEGIN IMMEDIATE
    transaction per 2,000 rows, WAL and synchronous=FULL as the store runs it."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        definitions: dict[str, int] = dict(
            conn.execute("SELECT name, id FROM subscription_definition WHERE portal_id = ?", [portal_id]).fetchall()
        )
        statements = [insert_sql(t, c, "?") for t, c in TABLES]
        seconds = 0.0
        for batch in batches(records(n)):
            tables = table_rows(portal_id, definitions, batch)
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            for statement, rows in zip(statements, tables, strict=True):
                if rows:
                    conn.executemany(statement, rows)
            conn.execute("COMMIT")
            seconds += time.perf_counter() - started
        return seconds
    finally:
        conn.close()


def postgres_insert(url: str, portal_id: int, n: int) -> float:
    """Seconds spent in the database inserting the `n` records: psycopg `executemany` (pipelined)
    in one transaction per 2,000 rows."""
    with psycopg.connect(url) as conn:
        definitions: dict[str, int] = dict(
            conn.execute("SELECT name, id FROM subscription_definition WHERE portal_id = %s", [portal_id]).fetchall()
        )
        conn.commit()
        statements = [insert_sql(t, c, "%s") for t, c in TABLES]
        seconds = 0.0
        for batch in batches(records(n)):
            tables = table_rows(portal_id, definitions, batch)
            started = time.perf_counter()
            with conn.cursor() as cursor:
                for statement, rows in zip(statements, tables, strict=True):
                    if rows:
                        cursor.executemany(statement, rows)
            conn.commit()
            seconds += time.perf_counter() - started
        return seconds


# -- plain driver selects -------------------------------------------------------------------------

# What an export reads: a portal's rows of both tables, in the key order the exporter asks for.
SELECTS = (
    "SELECT * FROM subscription_status WHERE portal_id = {p} AND channel = {p} "
    "ORDER BY portal_id, subscriber, channel, subscription_id",
    "SELECT * FROM wide_status WHERE portal_id = {p} AND channel = {p} "
    "ORDER BY portal_id, subscriber, channel, scope, business_unit_id",
)


def sqlite_select(path: Path, portal_id: int) -> tuple[int, float]:
    """The rows an export reads, and the seconds the plain driver takes to fetch them, 2,000 at a time."""
    conn = sqlite3.connect(path)
    try:
        rows = 0
        started = time.perf_counter()
        for statement in SELECTS:
            cursor = conn.execute(statement.format(p="?"), [portal_id, CHANNEL])
            while batch := cursor.fetchmany(BATCH_ROWS):
                rows += len(batch)
        return rows, time.perf_counter() - started
    finally:
        conn.close()


def postgres_select(url: str, portal_id: int) -> tuple[int, float]:
    """The same with psycopg, through a server-side cursor (as the exporter streams), 2,000 rows a fetch."""
    with psycopg.connect(url) as conn:
        rows = 0
        started = time.perf_counter()
        for i, statement in enumerate(SELECTS):
            with conn.cursor(name=f"raw_export_{i}") as cursor:
                cursor.execute(statement.format(p="%s"), [portal_id, CHANNEL])
                while batch := cursor.fetchmany(BATCH_ROWS):
                    rows += len(batch)
        return rows, time.perf_counter() - started
