"""What every repository shares: its unit of work's connection, and writes handed to the driver.

The statements every API call runs (the subscriber load, single-row writes on SQLite) are handed to the
driver's cursor, compiled once: SQLAlchemy's per-execution work cost more than the database's.
"""

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection, literal_column
from sqlalchemy.dialects import postgresql, sqlite

from commprefs.store.schema import consent_event

# PostgreSQL: writes of at least this many rows go through COPY (imports, batches).
COPY_ROWS = 64
# Exports read this many rows at a time (a server-side cursor on PostgreSQL): memory stays flat.
STREAM_ROWS = 2000


class Repository:
    """The SQL of one area, on the connection of the unit of work (`Tx`) that holds it. A repository holds no
    reference back to its Tx: a cycle would leave every finished Tx to the cyclic garbage collector, whose
    runs showed as a v4 write's p99 three times its p50."""

    _compiled: ClassVar[dict[tuple[Any, str, tuple[str, ...]], Any]] = {}
    _upserts: ClassVar[dict[tuple[str, str], Any]] = {}

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._dialect: str = conn.dialect.name
        self._insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert

    def _final(self) -> Any:
        """Rows whose writing transaction is older than every running one: nothing can commit before
        them any more (PostgreSQL). SQLite's writes take turns, so every committed row is final."""
        if self._dialect == "postgresql":
            return consent_event.c.txid < literal_column("(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        return literal_column("1") == 1

    def _driver_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of `sql` run on the driver's own cursor, inside this transaction: for the statements
        every request runs, where SQLAlchemy's result machinery costs more than the query."""
        with self._driver_cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _driver_cursor(self, name: str | None = None) -> Any:
        """A cursor of the driver's connection under this transaction, closed after the block; `name` makes it
        a server-side cursor (PostgreSQL)."""
        driver: Any = self.conn.connection.dbapi_connection
        return contextlib.closing(driver.cursor() if name is None else driver.cursor(name=name))

    def _upsert(self, table: Any, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE every other column, for many rows at once."""
        if self._dialect == "postgresql" and len(rows) >= COPY_ROWS:
            self._copy_merge(table, rows, keys)
            return
        cache_key = (self._dialect, table.name)
        statement = Repository._upserts.get(cache_key)
        if statement is None:
            insert = self._insert(table)
            updates = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in keys}
            statement = Repository._upserts[cache_key] = insert.on_conflict_do_update(index_elements=keys, set_=updates)
        self._write_many(statement, rows)

    def _copy(self, cursor: Any, table_name: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        """PostgreSQL's COPY of `rows` into `table_name`: the bulk path, no statement per row."""
        with cursor.copy(f"COPY {table_name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])

    def _copy_merge(self, table: Any, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
        """Many upserts on PostgreSQL: COPY into this session's staging table, then one INSERT ... SELECT ...
        ON CONFLICT DO UPDATE from it (a multi-row INSERT's parameters cost a round of conversions per value)."""
        columns = list(rows[0])
        stage = f"stage_{table.name}"
        staged: set[str] = self.conn.connection.info.setdefault("staging_tables", set())
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
        listed = ", ".join(columns)
        with self._driver_cursor() as cursor:
            if stage not in staged:
                cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS")
                staged.add(stage)
            self._copy(cursor, stage, columns, rows)
            cursor.execute(
                f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {stage} "
                f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
            )
            cursor.execute(f"TRUNCATE {stage}")

    def _write_many(self, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
        """Run an INSERT or upsert for `rows` (same keys in each) on the driver's cursor: every write
        runs these, and SQLAlchemy's per-execution work cost more than SQLite took to do them. The
        statement is compiled once per dialect and set of columns; a statement whose columns need
        SQLAlchemy's value processing goes through SQLAlchemy as before."""
        if self._dialect != "sqlite" and len(rows) > 1:
            # PostgreSQL: SQLAlchemy sends many rows as one multi-row INSERT, fewer round trips.
            self.conn.execute(statement, list(rows))
            return
        columns = tuple(rows[0])
        cache_key = (statement, self._dialect, columns)
        compiled = Repository._compiled.get(cache_key)
        if compiled is None:
            compiled = statement.compile(dialect=self.conn.dialect, column_keys=list(columns))
            Repository._compiled[cache_key] = compiled
        if getattr(compiled, "_bind_processors", True):  # values to convert (or a SQLAlchemy without this)
            self.conn.execute(statement, list(rows))
            return
        if compiled.positional:
            order = compiled.positiontup
            params: list[Any] = [tuple(row[k] for k in order) for row in rows]
        else:
            params = list(rows)
        with self._driver_cursor() as cursor:
            if len(params) == 1:  # psycopg's executemany sets up a pipeline: for one row, half a write's time
                cursor.execute(compiled.string, params[0])
            else:
                cursor.executemany(compiled.string, params)
