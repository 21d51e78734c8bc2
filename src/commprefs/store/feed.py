"""The consent history as stored: a subscriber's events, and the portal's change feed in commit order."""

from typing import Any

from sqlalchemy import Row, and_, or_, select

from commprefs.store.schema import consent_event
from commprefs.store.sql import Repository


class FeedRepository(Repository):
    """Reads of consent events (they are written with the statuses: `StatusRepository.append_events`)."""

    def list_events(self, portal_id: int, address: str | None = None) -> list[Row[Any]]:
        e = consent_event
        conditions = [e.c.portal_id == portal_id]
        if address is not None:
            conditions.append(e.c.subscriber == address)
        return list(self.conn.execute(select(e).where(and_(*conditions)).order_by(e.c.id)))

    def feed(self, portal_id: int, after: tuple[int, int], limit: int) -> list[Row[Any]]:
        """The portal's events after `after` = (txid, id), in feed order, final rows only."""
        e = consent_event.c
        txid, event_id = after
        query = (
            select(consent_event)
            .where(
                e.portal_id == portal_id,
                after_position(txid, event_id),
                self._final(),
            )
            .order_by(e.txid, e.id)
            .limit(limit)
        )
        return list(self.conn.execute(query))

    def feed_head(self, portal_id: int) -> tuple[int, int]:
        """The feed position of the portal's last final event."""
        e = consent_event.c
        query = (
            select(e.txid, e.id)
            .where(e.portal_id == portal_id, self._final())
            .order_by(e.txid.desc(), e.id.desc())
            .limit(1)
        )
        row = self.conn.execute(query).first()
        return (row.txid, row.id) if row else (0, 0)

    def feed_position_before(self, portal_id: int, occurred_from: int) -> tuple[int, int]:
        """A position just before the first event (in feed order) that occurred at or after the time:
        reading on from it yields every such event (and maybe a few older ones), never fewer."""
        e = consent_event.c
        query = (
            select(e.txid, e.id)
            .where(e.portal_id == portal_id, e.occurred_at >= occurred_from)
            .order_by(e.txid, e.id)
            .limit(1)
        )
        row = self.conn.execute(query).first()
        return (row.txid, row.id - 1) if row else self.feed_head(portal_id)

    def history(self, portal_id: int, address: str, before_id: int | None, limit: int) -> list[Row[Any]]:
        """One subscriber's events, newest first."""
        e = consent_event.c
        conditions = [e.portal_id == portal_id, e.subscriber == address]
        if before_id is not None:
            conditions.append(e.id < before_id)
        return list(self.conn.execute(select(consent_event).where(*conditions).order_by(e.id.desc()).limit(limit)))


def after_position(txid: Any, event_id: Any) -> Any:
    """Events after the feed position (txid, event_id), in the feed's (txid, id) order."""
    e = consent_event.c
    return or_(e.txid > txid, and_(e.txid == txid, e.id > event_id))
