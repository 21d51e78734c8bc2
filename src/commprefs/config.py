"""Settings: one object, read from COMMPREFS_* environment variables, each with a default and help."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMMPREFS_", extra="ignore")

    database_url: str = Field(
        "sqlite:///commprefs.db",
        description="SQLAlchemy URL of the database: sqlite:///relative.db, sqlite:////abs/path.db, postgresql://user@host/db.",
    )
    host: str = Field("127.0.0.1", description="Address `commprefs serve` listens on.")
    port: int = Field(8080, description="Port `commprefs serve` listens on.")
    workers: int = Field(
        1, description="API processes `commprefs serve` starts (SQLite writes take turns through a file lock)."
    )
    public_url: str | None = Field(
        None, description="Base URL contacts reach the service at, for links; defaults to the listen address."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning or error.")
    log_pii: bool = Field(False, description="Log raw request paths (which contain email addresses); off by default.")
    max_body_bytes: int = Field(1_048_576, description="Largest request body accepted; larger ones get 413.")
    import_max_bytes: int = Field(
        2 * 1024**3, description="Largest file `POST /commprefs/v1/imports` accepts (it is spooled to disk)."
    )
    token_cache_seconds: float = Field(
        5.0, description="How long a token lookup is cached; a revoked token stops working within this time."
    )
    cache_seconds: float = Field(
        2.0,
        description="How long portal settings and definitions are cached; changes from another process show within it.",
    )
    link_max_age_days: float = Field(
        0, description="Contact links expire after this many days; 0 keeps them valid until the secret is rotated."
    )
    smtp_host: str | None = Field(None, description='SMTP server for "email me a link"; unset turns that mail off.')
    smtp_port: int = Field(587, description="SMTP port.")
    smtp_username: str | None = Field(None, description="SMTP user name, if the server wants a login.")
    smtp_password: str | None = Field(None, description="SMTP password.")
    smtp_security: str = Field("starttls", description="SMTP transport security: starttls, ssl or none.")
    smtp_from: str = Field("commprefs@localhost", description="From address of the mails commprefs sends.")
    link_requests_per_address: int = Field(
        3, description='"Email me a link": mails per address per hour (more are silently not sent).'
    )
    link_requests_per_ip: int = Field(20, description='"Email me a link": requests per client IP per hour (429).')
    rate_limit_per_10s: int = Field(
        0,
        ge=0,
        description="API calls a token may make per rolling 10 seconds (HubSpot's TEN_SECONDLY_ROLLING policy, "
        "e.g. 100 or 190); 0 turns the limit off.",
    )
    rate_limit_per_day: int = Field(
        0, ge=0, description="API calls a token may make per day, UTC (HubSpot's DAILY policy); 0 turns it off."
    )
    rate_limit_interval_ms: int = Field(
        10_000,
        ge=100,
        description="Length of the rolling window of COMMPREFS_RATE_LIMIT_PER_10S in milliseconds; HubSpot's is "
        "10000 (change it only for tests).",
    )
    webhooks: bool = Field(True, description="Send webhooks from this process (a background task in `serve`).")
    webhook_timeout_seconds: float = Field(5.0, description="How long a webhook receiver has to answer.")
    webhook_poll_seconds: float = Field(0.25, description="How often an idle sender looks for new events.")
    webhook_allow_private_networks: bool = Field(
        False, description="Allow webhooks to loopback, private and link-local addresses (for local testing)."
    )
    demo: bool = Field(True, description="On an empty database, `serve` creates a demo portal and prints a token.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
