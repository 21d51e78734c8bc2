"""Webhook endpoints, their leases and positions in the feed, and their delivery log."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, delete, func, literal_column, or_, select, update

from commprefs.domain.model import DeliveryAttempt
from commprefs.store.feed import after_position
from commprefs.store.schema import consent_event, webhook_delivery, webhook_endpoint
from commprefs.store.sql import Repository


class WebhookRepository(Repository):
    """Endpoints of a portal; claiming due ones for a sender; their deliveries."""

    def webhook_backlog(self, cap: int) -> int:
        """Events after each enabled endpoint's position (at most `cap` each), summed over endpoints:
        the webhook backlog /metrics reports, for every portal."""
        w, e = webhook_endpoint.c, consent_event.c
        total = 0
        for endpoint in self.conn.execute(select(w.portal_id, w.cursor_txid, w.cursor_id).where(w.enabled.is_(True))):
            pending = (
                select(e.id)
                .where(e.portal_id == endpoint.portal_id, after_position(endpoint.cursor_txid, endpoint.cursor_id))
                .limit(cap)
                .subquery()
            )
            total += self.conn.execute(select(func.count()).select_from(pending)).scalar_one()
        return total

    def insert_endpoint(
        self,
        portal_id: int,
        endpoint_id: str,
        *,
        url: str,
        description: str,
        secret: str,
        event_types: str,
        position: tuple[int, int],
        now: int,
    ) -> None:
        """A new, enabled endpoint whose next event is the one after `position` in the feed."""
        self.conn.execute(
            webhook_endpoint.insert().values(
                portal_id=portal_id,
                id=endpoint_id,
                url=url,
                description=description,
                secret=secret,
                event_types=event_types,
                enabled=True,
                cursor_txid=position[0],
                cursor_id=position[1],
                failures=0,
                next_attempt_at=0,
                created_at=now,
                updated_at=now,
            )
        )

    def list_endpoints(self, portal_id: int) -> list[Row[Any]]:
        w = webhook_endpoint.c
        return list(
            self.conn.execute(select(webhook_endpoint).where(w.portal_id == portal_id).order_by(w.created_at, w.id))
        )

    def get_endpoint(self, portal_id: int, endpoint_id: str) -> Row[Any] | None:
        w = webhook_endpoint.c
        return self.conn.execute(select(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id)).first()

    def update_endpoint(self, portal_id: int, endpoint_id: str, **values: Any) -> None:
        w = webhook_endpoint.c
        self.conn.execute(
            update(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id).values(**values)
        )

    def delete_endpoint(self, portal_id: int, endpoint_id: str) -> bool:
        w = webhook_endpoint.c
        deleted = self.conn.execute(delete(webhook_endpoint).where(w.portal_id == portal_id, w.id == endpoint_id))
        self.conn.execute(
            delete(webhook_delivery).where(
                webhook_delivery.c.portal_id == portal_id, webhook_delivery.c.endpoint_id == endpoint_id
            )
        )
        return bool(deleted.rowcount)

    def _due_endpoints(self, now: int, limit: int) -> Any:
        """Enabled endpoints whose retry time has come, not leased, with an event to send."""
        w, e = webhook_endpoint.c, consent_event.c
        pending = (
            select(literal_column("1"))
            .where(
                e.portal_id == w.portal_id,
                after_position(w.cursor_txid, w.cursor_id),
                self._final(),
            )
            .exists()
        )
        return (
            select(w.portal_id, w.id)
            .where(
                w.enabled.is_(True),
                w.next_attempt_at <= now,
                or_(w.lease_until.is_(None), w.lease_until < now),
                pending,
            )
            .order_by(w.next_attempt_at)
            .limit(limit)
        )

    def any_endpoint_due(self, now: int) -> bool:
        return self.conn.execute(self._due_endpoints(now, 1)).first() is not None

    def claim_endpoints(self, owner: str, now: int, lease_ms: int, limit: int) -> list[Row[Any]]:
        """Lease up to `limit` due endpoints; on PostgreSQL, rows another process is claiming at the
        same moment are skipped (FOR UPDATE SKIP LOCKED), so each endpoint has one sender."""
        w = webhook_endpoint.c
        due = self._due_endpoints(now, limit).with_for_update(skip_locked=True)
        rows = self.conn.execute(due).all()
        for row in rows:
            self.conn.execute(
                update(webhook_endpoint)
                .where(w.portal_id == row.portal_id, w.id == row.id)
                .values(lease_owner=owner, lease_until=now + lease_ms)
            )
        if not rows:
            return []
        keys = [(r.portal_id, r.id) for r in rows]
        claimed = self.conn.execute(
            select(webhook_endpoint).where(or_(*(and_(w.portal_id == p, w.id == i) for p, i in keys)))
        )
        return list(claimed)

    def add_deliveries(self, attempts: Sequence[DeliveryAttempt]) -> None:
        if attempts:
            rows = [
                {
                    "portal_id": a.portal_id,
                    "endpoint_id": a.endpoint_id,
                    "event_id": a.event_id,
                    "attempt": a.attempt,
                    "status_code": a.status_code,
                    "error": a.error,
                    "latency_ms": a.latency_ms,
                    "attempted_at": a.attempted_at,
                    "next_attempt_at": a.next_attempt_at,
                }
                for a in attempts
            ]
            self.conn.execute(webhook_delivery.insert(), rows)

    def list_deliveries(self, portal_id: int, endpoint_id: str, limit: int) -> list[Row[Any]]:
        d = webhook_delivery.c
        query = (
            select(webhook_delivery)
            .where(d.portal_id == portal_id, d.endpoint_id == endpoint_id)
            .order_by(d.id.desc())
            .limit(limit)
        )
        return list(self.conn.execute(query))
