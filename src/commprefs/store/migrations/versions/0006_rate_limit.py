"""rate_limit: per-token call counts of the rate limits (UNLOGGED on PostgreSQL)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit",
        sa.Column("portal_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("interval_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("portal_id", "token_id", "interval_ms", "window_start", name=op.f("pk_rate_limit")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Counters that may be lost in a crash: no WAL for them.
        op.execute("ALTER TABLE rate_limit SET UNLOGGED")


def downgrade() -> None:
    op.drop_table("rate_limit")
