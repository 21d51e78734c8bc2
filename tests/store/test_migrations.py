"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from commprefs.store import Store
from commprefs.store.schema import metadata
from tests.conftest import STORES, database_url


@pytest.fixture(params=STORES)
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_url(request.param, tmp_path) as url:
        store = Store(url)
        yield store
        store.close()


def test_migrations_match_the_declared_schema(fresh_store: Store) -> None:
    fresh_store.migrate()
    with fresh_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert set(inspect(fresh_store.engine).get_table_names()) >= set(metadata.tables)


def test_migrating_twice_is_harmless(fresh_store: Store) -> None:
    fresh_store.migrate()
    fresh_store.migrate()
    with fresh_store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


def test_postgresql_connections_always_plan_for_their_parameters(fresh_store: Store) -> None:
    if fresh_store.dialect != "postgresql":
        return
    with fresh_store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"
