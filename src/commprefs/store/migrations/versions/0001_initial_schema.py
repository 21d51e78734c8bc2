"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:25:02.590603
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=True),
        sa.Column("wide_scope", sa.String(length=24), nullable=True),
        sa.Column("business_unit_id", sa.BigInteger(), nullable=True),
        sa.Column("old_status", sa.String(length=16), nullable=False),
        sa.Column("new_status", sa.String(length=16), nullable=False),
        sa.Column("legal_basis", sa.String(length=40), nullable=True),
        sa.Column("legal_basis_explanation", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("actor_token_id", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_event")),
    )
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_event_portal_id_id"), ["portal_id", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_consent_event_portal_id_subscriber_id"), ["portal_id", "subscriber", "id"], unique=False
        )

    op.create_table(
        "portal",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("gdpr_enabled", sa.Boolean(), nullable=False),
        sa.Column("hubspot_strict", sa.Boolean(), nullable=False),
        sa.Column("default_language", sa.String(length=16), nullable=False),
        sa.Column("public_base_url", sa.String(length=500), nullable=True),
        sa.Column("signing_secret", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal")),
    )
    op.create_table(
        "subscription_status",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("legal_basis", sa.String(length=40), nullable=True),
        sa.Column("legal_basis_explanation", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "portal_id", "subscriber", "channel", "subscription_id", name=op.f("pk_subscription_status")
        ),
    )
    op.create_table(
        "wide_status",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("subscriber", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=24), nullable=False),
        sa.Column("business_unit_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "portal_id", "subscriber", "channel", "scope", "business_unit_id", name=op.f("pk_wide_status")
        ),
    )
    op.create_table(
        "business_unit",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["portal_id"], ["portal.id"], name=op.f("fk_business_unit_portal"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("portal_id", "id", name=op.f("pk_business_unit")),
    )
    op.create_table(
        "token",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["portal_id"], ["portal.id"], name=op.f("fk_token_portal"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_token_secret_sha256")),
    )
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_token_portal_id"), ["portal_id"], unique=False)

    op.create_table(
        "subscription_definition",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("business_unit_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("communication_method", sa.String(length=50), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("is_internal", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portal_id", "business_unit_id"],
            ["business_unit.portal_id", "business_unit.id"],
            name=op.f("fk_subscription_definition_business_unit"),
        ),
        sa.PrimaryKeyConstraint("portal_id", "id", name=op.f("pk_subscription_definition")),
    )
    op.create_table(
        "definition_translation",
        sa.Column("portal_id", sa.BigInteger(), nullable=False),
        sa.Column("subscription_id", sa.BigInteger(), nullable=False),
        sa.Column("language_code", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["portal_id", "subscription_id"],
            ["subscription_definition.portal_id", "subscription_definition.id"],
            name=op.f("fk_definition_translation_subscription_definition"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "portal_id", "subscription_id", "language_code", name=op.f("pk_definition_translation")
        ),
    )


def downgrade() -> None:
    op.drop_table("definition_translation")
    op.drop_table("subscription_definition")
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_portal_id"))

    op.drop_table("token")
    op.drop_table("business_unit")
    op.drop_table("wide_status")
    op.drop_table("subscription_status")
    op.drop_table("portal")
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_event_portal_id_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_consent_event_portal_id_id"))

    op.drop_table("consent_event")
