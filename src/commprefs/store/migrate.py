"""Applies the Alembic migrations shipped in this package; `serve` calls it on start.

Alembic is imported when a migration runs, not with the store: it brings Mako and Pygments, a tenth of a
second of start-up for every CLI command (imports and exports among them) that never migrates.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema; an empty database gets all of it."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
