"""Idempotency keys: the first answer to a retried write, kept for 24 hours."""

from typing import Any

from sqlalchemy import Row, delete, select

from commprefs.store.schema import idempotency_key
from commprefs.store.sql import Repository


class IdempotencyRepository(Repository):
    """Stored answers by portal and key."""

    def get_idempotent(self, portal_id: int, key: str) -> Row[Any] | None:
        k = idempotency_key
        return self.conn.execute(select(k).where(k.c.portal_id == portal_id, k.c.key == key)).first()

    def save_idempotent(
        self, portal_id: int, key: str, fingerprint: str, status_code: int, body: bytes, now: int
    ) -> None:
        self._upsert(
            idempotency_key,
            [
                {
                    "portal_id": portal_id,
                    "key": key,
                    "fingerprint": fingerprint,
                    "status_code": status_code,
                    "body": body,
                    "created_at": now,
                }
            ],
            ["portal_id", "key"],
        )

    def purge_idempotent(self, before: int) -> int:
        return self.conn.execute(delete(idempotency_key).where(idempotency_key.c.created_at < before)).rowcount
