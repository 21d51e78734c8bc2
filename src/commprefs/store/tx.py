"""The unit of work: one connection (one transaction), and the repositories that run SQL on it.

Each repository holds the SQL of one area and is made when first used, so a request pays only for the
areas it touches. Every method is scoped to a portal id; the caller commits.
"""

from functools import cached_property

from sqlalchemy import Connection

from commprefs.store.cache import PortalCache
from commprefs.store.feed import FeedRepository
from commprefs.store.idempotency import IdempotencyRepository
from commprefs.store.portals import PortalRepository
from commprefs.store.statuses import StatusRepository
from commprefs.store.tokens import TokenRepository
from commprefs.store.transfer import TransferRepository
from commprefs.store.webhooks import WebhookRepository


class Tx:
    """A unit of work on one connection: `tx.portals`, `tx.statuses`, ... run their area's SQL in it."""

    def __init__(self, conn: Connection, cache: PortalCache | None = None) -> None:
        self.conn = conn
        self.cache = cache
        self.dialect: str = conn.dialect.name
        # Portals whose settings, brands or definitions this unit changed: their cached snapshot is stale.
        self.changed_portals: set[int] = set()

    @cached_property
    def portals(self) -> PortalRepository:
        return PortalRepository(self.conn, self.cache, self.changed_portals)

    @cached_property
    def tokens(self) -> TokenRepository:
        return TokenRepository(self.conn)

    @cached_property
    def statuses(self) -> StatusRepository:
        return StatusRepository(self.conn, self.portals)

    @cached_property
    def feed(self) -> FeedRepository:
        return FeedRepository(self.conn)

    @cached_property
    def webhooks(self) -> WebhookRepository:
        return WebhookRepository(self.conn)

    @cached_property
    def transfer(self) -> TransferRepository:
        return TransferRepository(self.conn)

    @cached_property
    def idempotency(self) -> IdempotencyRepository:
        return IdempotencyRepository(self.conn)
