"""Import jobs and their rejected lines, and the export's reads (rows straight from the driver)."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, String, Text, and_, case, cast, func, literal, null, or_, select, update

from commprefs.domain.enums import Status, WideScope
from commprefs.domain.model import RejectedLine
from commprefs.domain.tombstone import PREFIX as TOMBSTONE_PREFIX
from commprefs.store.schema import import_job, import_reject, subscription_definition, subscription_status, wide_status
from commprefs.store.sql import STREAM_ROWS, Repository

_s, _w, _d = subscription_status.c, wide_status.c, subscription_definition.c


@dataclass(frozen=True)
class ExportRows:
    """Which rows an export reads: a portal's on one channel, optionally of some subscriptions (a brand's opt-outs
    from all with them), optionally only the suppressions; `subscription_scope` is what a per-subscription row's
    `scope` column says."""

    portal_id: int
    channel: str
    subscription_ids: Sequence[int] | None
    business_unit_id: int | None
    suppressed_only: bool
    subscription_scope: str


class TransferRepository(Repository):
    """Imports (jobs, rejects) and exports (chunks of driver rows, or PostgreSQL's own CSV)."""

    def insert_import(
        self,
        portal_id: int,
        import_id: str,
        *,
        format: str,
        file_name: str,
        options: str,
        dry_run: bool,
        state: str,
        counts: str,
        actor_token_id: str | None,
        now: int,
    ) -> None:
        self.conn.execute(
            import_job.insert().values(
                portal_id=portal_id,
                id=import_id,
                format=format,
                file_name=file_name,
                options=options,
                dry_run=dry_run,
                state=state,
                counts=counts,
                actor_token_id=actor_token_id,
                created_at=now,
                updated_at=now,
            )
        )

    def update_import(self, portal_id: int, import_id: str, **values: Any) -> None:
        j = import_job.c
        self.conn.execute(update(import_job).where(j.portal_id == portal_id, j.id == import_id).values(**values))

    def get_import(self, portal_id: int, import_id: str) -> Row[Any] | None:
        j = import_job.c
        return self.conn.execute(select(import_job).where(j.portal_id == portal_id, j.id == import_id)).first()

    def list_imports(self, portal_id: int, limit: int) -> list[Row[Any]]:
        j = import_job.c
        query = select(import_job).where(j.portal_id == portal_id).order_by(j.created_at.desc(), j.id).limit(limit)
        return list(self.conn.execute(query))

    def add_rejects(self, portal_id: int, import_id: str, lines: Sequence[RejectedLine]) -> None:
        if lines:
            rows = [
                {
                    "portal_id": portal_id,
                    "import_id": import_id,
                    "line": r.line,
                    "email": r.email,
                    "reason": r.reason,
                    "raw": r.values_json,
                }
                for r in lines
            ]
            self.conn.execute(import_reject.insert(), rows)

    def stream_rejects(self, portal_id: int, import_id: str) -> Iterator[Row[Any]]:
        r = import_reject.c
        query = select(import_reject).where(r.portal_id == portal_id, r.import_id == import_id).order_by(r.line)
        yield from self.conn.execution_options(yield_per=STREAM_ROWS).execute(query)

    def rejects_of(self, portal_id: int, address: str) -> list[Row[Any]]:
        r = import_reject.c
        query = select(import_reject).where(r.portal_id == portal_id, r.email == address).order_by(r.import_id, r.line)
        return list(self.conn.execute(query))

    def refresh_statistics(self) -> None:
        """PostgreSQL: ANALYZE the status tables, so that the planner keeps using their keys for a
        batch's address lookups while a bulk import grows them (a table without statistics gets a
        plan that reads the whole portal). SQLite's plans use the primary key regardless."""
        if self._dialect == "postgresql":
            self.conn.exec_driver_sql("ANALYZE subscription_status, wide_status")

    def export_chunks(self, rows: ExportRows) -> Iterator[list[tuple[Any, ...]]]:
        """A portal's stored statuses, then its opt-outs from all (without erased addresses' tombstones; for one
        brand, its own and the portal-wide ones), each in address order, as the driver's tuples in the export's
        columns, a few thousand a chunk. Names, brands and ISO times come from the database: an export makes no
        Python object per row (a server-side cursor on PostgreSQL)."""
        queries = self._export_queries(rows)
        for n, query in enumerate(queries):
            compiled = query.compile(dialect=self.conn.dialect, compile_kwargs={"render_postcompile": True})
            params = compiled.positiontup and [compiled.params[name] for name in compiled.positiontup]
            # A named cursor is PostgreSQL's server-side cursor: rows cross the network a chunk at a time.
            with self._driver_cursor(f"export_{n}" if self._dialect == "postgresql" else None) as cursor:
                cursor.execute(str(compiled), params or compiled.params)
                while chunk := cursor.fetchmany(STREAM_ROWS):
                    yield list(chunk)

    @property
    def writes_csv(self) -> bool:
        """Whether the database writes an export's CSV itself (`export_csv`): PostgreSQL's COPY TO."""
        return self._dialect == "postgresql"

    def export_csv(self, rows: ExportRows, header: Sequence[str]) -> Iterator[bytes]:
        """`export_chunks`' rows as CSV written by PostgreSQL (COPY ... TO STDOUT), under `header`, in chunks.
        Empty texts leave as NULLs do (an empty field), so the bytes are those of Python's csv module."""
        queries = self._export_queries(rows, header)
        for n, query in enumerate(queries):
            sql = query.compile(dialect=self.conn.dialect, compile_kwargs={"literal_binds": True})
            options = "FORMAT csv, HEADER" if n == 0 else "FORMAT csv"
            chunk: list[bytes] = []
            # COPY takes no bind parameters: the values are in the SQL, and the percent signs the compiler
            # doubled for the driver's parameter style (%%) are single again, as the driver would make them.
            statement = f"COPY ({str(sql) % ()}) TO STDOUT WITH ({options})"
            with self._driver_cursor() as cursor, cursor.copy(statement) as copy:
                for data in copy:
                    chunk.append(bytes(data))
                    if len(chunk) >= STREAM_ROWS:
                        yield b"".join(chunk)
                        chunk.clear()
            yield b"".join(chunk)

    def _export_queries(self, rows: ExportRows, labels: Sequence[str] | None = None) -> tuple[Any, Any]:
        """The statuses' query and the opt-outs' query of an export; with `labels`, their columns so named and
        empty texts as NULL (for COPY's CSV)."""
        portal_id, channel = rows.portal_id, rows.channel

        def columns(*values: Any) -> list[Any]:
            if labels is None:
                return list(values)
            # COPY writes an empty text quoted ("") and a NULL as nothing; Python's csv writes both as nothing.
            texts = [func.nullif(v, "") if isinstance(v.type, String) else v for v in values]
            return [v.label(name) for v, name in zip(texts, labels, strict=True)]

        statuses = (
            select(
                *columns(
                    _s.subscriber,
                    literal(rows.subscription_scope, String),
                    _d.business_unit_id,
                    _s.subscription_id,
                    _d.name,
                    _s.status,
                    _s.legal_basis,
                    _s.legal_basis_explanation,
                    self._iso_sql(_s.updated_at),
                    _s.source,
                )
            )
            .select_from(
                subscription_status.outerjoin(
                    subscription_definition, and_(_d.portal_id == _s.portal_id, _d.id == _s.subscription_id)
                )
            )
            .where(_s.portal_id == portal_id, _s.channel == channel)
            .order_by(_s.portal_id, _s.subscriber, _s.channel, _s.subscription_id)
        )
        if rows.subscription_ids is not None:
            statuses = statuses.where(_s.subscription_id.in_(list(rows.subscription_ids)))
        if rows.suppressed_only:
            statuses = statuses.where(_s.status == Status.UNSUBSCRIBED.value)
        brand_wide = _w.scope == WideScope.BUSINESS_UNIT_WIDE.value
        wide = (
            select(
                *columns(
                    _w.subscriber,
                    _w.scope,
                    case((brand_wide, _w.business_unit_id), else_=None),
                    null(),
                    null(),
                    _w.status,
                    null(),
                    null(),
                    self._iso_sql(_w.updated_at),
                    _w.source,
                )
            )
            .where(_w.portal_id == portal_id, _w.channel == channel, ~_w.subscriber.startswith(TOMBSTONE_PREFIX))
            .order_by(_w.portal_id, _w.subscriber, _w.channel, _w.scope, _w.business_unit_id)
        )
        unit = rows.business_unit_id
        if unit is not None:
            wide = wide.where(
                or_(_w.scope == WideScope.PORTAL_WIDE.value, and_(brand_wide, _w.business_unit_id == unit))
            )
        if rows.suppressed_only:
            wide = wide.where(_w.status == Status.UNSUBSCRIBED.value)
        return statuses, wide

    def _iso_sql(self, column: Any) -> Any:
        """`clock.iso` of a millisecond column, in SQL: 2026-03-01T12:00:00.250Z."""
        if self._dialect == "sqlite":
            return func.strftime("%Y-%m-%dT%H:%M:%S", column // 1000, "unixepoch").concat(
                func.printf(".%03dZ", column % 1000)
            )
        seconds = func.to_char(func.timezone("UTC", func.to_timestamp(column // 1000)), 'YYYY-MM-DD"T"HH24:MI:SS')
        return seconds.concat(".").concat(func.lpad(cast(column % 1000, Text), 3, "0")).concat("Z")
