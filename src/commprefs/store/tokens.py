"""API tokens: only each secret's SHA-256 is stored."""

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, select, update

from commprefs.domain.enums import Scope
from commprefs.domain.model import TokenInfo
from commprefs.store.schema import token
from commprefs.store.sql import Repository


class TokenRepository(Repository):
    """A portal's tokens, found by the hash of their secret."""

    def insert_token(
        self, id: str, portal_id: int, name: str, secret_sha256: str, scopes: Iterable[Scope], now: int
    ) -> None:
        self.conn.execute(
            token.insert().values(
                id=id,
                portal_id=portal_id,
                name=name,
                secret_sha256=secret_sha256,
                scopes=" ".join(sorted(scopes)),
                created_at=now,
            )
        )

    def find_token(self, secret_sha256: str) -> TokenInfo | None:
        row = self.conn.execute(
            select(token.c.id, token.c.name, token.c.portal_id, token.c.scopes).where(
                token.c.secret_sha256 == secret_sha256, token.c.revoked_at.is_(None)
            )
        ).first()
        if row is None:
            return None
        return TokenInfo(row.id, row.name, row.portal_id, frozenset(Scope(s) for s in row.scopes.split()))

    def list_tokens(self, portal_id: int) -> list[Row[Any]]:
        query = (
            select(
                token.c.id, token.c.name, token.c.scopes, token.c.created_at, token.c.last_used_at, token.c.revoked_at
            )
            .where(token.c.portal_id == portal_id)
            .order_by(token.c.created_at, token.c.id)
        )
        return list(self.conn.execute(query))

    def revoke_token(self, token_id: str, now: int) -> bool:
        result = self.conn.execute(
            update(token).where(token.c.id == token_id, token.c.revoked_at.is_(None)).values(revoked_at=now)
        )
        return result.rowcount > 0

    def touch_token(self, token_id: str, now: int) -> None:
        self.conn.execute(update(token).where(token.c.id == token_id).values(last_used_at=now))

    def token_names(self, portal_id: int) -> dict[str, str]:
        return {
            r.id: r.name
            for r in self.conn.execute(select(token.c.id, token.c.name).where(token.c.portal_id == portal_id))
        }
