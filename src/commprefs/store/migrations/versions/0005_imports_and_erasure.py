"""imports (jobs, rejects, provenance of imported events) and erasure (per-portal tombstone salt)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 15:00:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erasure_salt", sa.String(length=64), nullable=True))
    portal = sa.table("portal", sa.column("id", sa.BigInteger), sa.column("erasure_salt", sa.String))
    bind = op.get_bind()
    for (portal_id,) in bind.execute(sa.select(portal.c.id)).all():
        bind.execute(portal.update().where(portal.c.id == portal_id).values(erasure_salt=secrets.token_urlsafe(32)))
    with op.batch_alter_table("portal", schema=None) as batch_op:
        batch_op.alter_column("erasure_salt", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("import_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("recorded_at", sa.BigInteger(), nullable=True))

    op.create_table(
        "import_job",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("file_name", sa.String(length=500), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("actor_token_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["portal_id"], ["portal.id"], name=op.f("fk_import_job_portal"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("portal_id", "id", name=op.f("pk_import_job")),
    )
    op.create_table(
        "import_reject",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("import_id", sa.String(length=40), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("portal_id", "import_id", "line", name=op.f("pk_import_reject")),
    )
    op.create_index(op.f("ix_import_reject_portal_id_email"), "import_reject", ["portal_id", "email"])


def downgrade() -> None:
    op.drop_index(op.f("ix_import_reject_portal_id_email"), table_name="import_reject")
    op.drop_table("import_reject")
    op.drop_table("import_job")
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("import_id")
    with op.batch_alter_table("portal", schema=None) as batch_op:
        batch_op.drop_column("erasure_salt")
