"""The schema, written once. Every table is keyed by portal_id first, so it shards by portal.

Times are integer epoch milliseconds (UTC): the same on both databases, sortable, exact.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite's autoincrement needs INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
EventId = BigInteger().with_variant(Integer(), "sqlite")

portal = Table(
    "portal",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("gdpr_enabled", Boolean, nullable=False, default=False),
    Column("hubspot_strict", Boolean, nullable=False, default=False),
    Column("default_language", String(16), nullable=False, default="en"),
    Column("public_base_url", String(500)),
    Column("signing_secret", String(100), nullable=False),
    Column("erasure_salt", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

business_unit = Table(
    "business_unit",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["portal_id"], ["portal.id"], ondelete="CASCADE"),
)

subscription_definition = Table(
    "subscription_definition",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("business_unit_id", BigInteger, nullable=False, default=0),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("purpose", String(200), nullable=False, default=""),
    Column("communication_method", String(50), nullable=False, default="Email"),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("is_internal", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["portal_id", "business_unit_id"], ["business_unit.portal_id", "business_unit.id"]),
)

definition_translation = Table(
    "definition_translation",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("subscription_id", BigInteger, primary_key=True),
    Column("language_code", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["portal_id", "subscription_id"],
        ["subscription_definition.portal_id", "subscription_definition.id"],
        ondelete="CASCADE",
    ),
)

token = Table(
    "token",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("name", String(200), nullable=False),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("scopes", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),
    Column("revoked_at", BigInteger),
    ForeignKeyConstraint(["portal_id"], ["portal.id"], ondelete="CASCADE"),
    Index(None, "portal_id"),
)

subscription_status = Table(
    "subscription_status",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("subscriber", String(254), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("subscription_id", BigInteger, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("legal_basis", String(40)),
    Column("legal_basis_explanation", Text),
    Column("source", String(200), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

wide_status = Table(
    "wide_status",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("subscriber", String(254), primary_key=True),
    Column("channel", String(16), primary_key=True),
    # PORTAL_WIDE rows carry business_unit_id 0; the scope tells them apart from brand 0.
    Column("scope", String(24), primary_key=True),
    Column("business_unit_id", BigInteger, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("source", String(200), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

consent_event = Table(
    "consent_event",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("subscriber", String(254), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("subscription_id", BigInteger),
    Column("wide_scope", String(24)),
    Column("business_unit_id", BigInteger),
    Column("old_status", String(16), nullable=False),
    Column("new_status", String(16), nullable=False),
    Column("legal_basis", String(40)),
    Column("legal_basis_explanation", Text),
    Column("source", String(200), nullable=False),
    Column("actor_token_id", String(32)),
    Column("request_id", String(64)),
    Column("ip", String(64)),
    Column("user_agent", String(500)),
    # Set where a person acted on a page: the language the page was shown in, and their "why?".
    Column("language", String(16)),
    Column("reason", Text),
    Column("occurred_at", BigInteger, nullable=False),
    # The change feed's order is (txid, id). On PostgreSQL txid is the writing transaction's id (a
    # server default, migration 0004), so a reader can tell which rows are final; on SQLite, whose
    # writes take turns, it is 0 and ids are in commit order.
    Column("txid", BigInteger, nullable=False, server_default="0"),
    # An imported change: the import that wrote it, and when (occurred_at is the original time).
    Column("import_id", String(40)),
    Column("recorded_at", BigInteger),
    Index(None, "portal_id", "subscriber", "id"),
    Index(None, "portal_id", "id"),
    Index(None, "portal_id", "txid", "id"),
)

# A write's first answer, so that a retry with the same Idempotency-Key replays it (24 hours).
idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "created_at"),
)


# A bulk import: its options, progress and outcome. `updated_at` is the worker's heartbeat.
import_job = Table(
    "import_job",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("id", String(40), primary_key=True),
    Column("format", String(20), nullable=False),
    Column("file_name", String(500), nullable=False, default=""),
    Column("options", Text, nullable=False, default="{}"),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("state", String(16), nullable=False),
    Column("counts", Text, nullable=False, default="{}"),
    Column("error", Text),
    Column("actor_token_id", String(32)),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["portal_id"], ["portal.id"], ondelete="CASCADE"),
)

# The rows an import refused, with their line and reason, for the operator to fix and send again.
import_reject = Table(
    "import_reject",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("import_id", String(40), primary_key=True),
    Column("line", BigInteger, primary_key=True),
    Column("email", String(320)),
    Column("reason", Text, nullable=False),
    # The row as the file had it: a JSON list of its values (the header is the job's).
    Column("raw", Text, nullable=False),
    Index(None, "portal_id", "email"),
)

# Where a portal's events are sent. The endpoint's cursor into the change feed is its outbox
# position: events after it are delivered in feed order, one at a time, and it advances only
# after the receiver acknowledged, so every event reaches it at least once, in order.
webhook_endpoint = Table(
    "webhook_endpoint",
    metadata,
    Column("portal_id", BigInteger, primary_key=True),
    Column("id", String(40), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("description", String(500), nullable=False, default=""),
    Column("secret", String(100), nullable=False),
    Column("event_types", Text, nullable=False, default=""),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("disabled_reason", String(500)),
    Column("cursor_txid", BigInteger, nullable=False, default=0),
    Column("cursor_id", BigInteger, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("failing_since", BigInteger),
    Column("next_attempt_at", BigInteger, nullable=False, default=0),
    Column("lease_owner", String(40)),
    Column("lease_until", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["portal_id"], ["portal.id"], ondelete="CASCADE"),
    Index(None, "enabled", "next_attempt_at"),
)

# Every delivery attempt: the endpoint's log.
webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("portal_id", BigInteger, nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", String(200)),
    Column("latency_ms", Integer, nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger),
    Index(None, "portal_id", "endpoint_id", "id"),
)

# Per-token call counts of the rate limits (api/ratelimit.py), on PostgreSQL: one row per token, policy
# (its interval) and fixed window. Short-lived and purged as windows pass; UNLOGGED on PostgreSQL
# (migration 0006): counts need no crash safety. No foreign key: a count costs one statement, nothing more.
rate_limit = Table(
    "rate_limit",
    metadata,
    Column("portal_id", BigInteger, primary_key=True, autoincrement=False),
    Column("token_id", String(32), primary_key=True),
    Column("interval_ms", BigInteger, primary_key=True, autoincrement=False),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
)
