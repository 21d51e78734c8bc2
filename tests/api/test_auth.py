"""Authentication and scopes: 401 without a valid token, 403 MISSING_SCOPES without the scope."""

import httpx
import pytest

from commprefs.domain.enums import Scope
from tests.conftest import PortalFixture
from tests.openapi import assert_valid

V3 = "/communication-preferences/v3"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer cp_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "cp_token-without-scheme"},
    ],
)
def test_missing_or_unknown_tokens_are_401(portal: PortalFixture, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=portal.server.base_url, headers=headers) as client:
        response = client.get(f"{V3}/definitions")
    assert response.status_code == 401
    body = response.json()
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert_valid("v3", "GET", f"{V3}/definitions", 401, body)


def test_revoked_token_is_401(portal: PortalFixture) -> None:
    token = portal.token_with(Scope.READ)
    client = portal.client(token)
    assert client.get(f"{V3}/definitions").status_code == 200
    with portal.server.store.transaction() as tx:
        (row,) = [r for r in tx.tokens.list_tokens(portal.id) if r.name == "test" and r.scopes == Scope.READ.value]
        assert tx.tokens.revoke_token(row.id, 1)
    assert client.get(f"{V3}/definitions").status_code == 401


def test_read_scope_cannot_write(portal: PortalFixture) -> None:
    client = portal.client(portal.token_with(Scope.READ))
    assert client.get(f"{V3}/status/email/r@example.com").status_code == 200
    response = client.post(
        f"{V3}/subscribe", json={"emailAddress": "r@example.com", "subscriptionId": str(portal.marketing)}
    )
    assert response.status_code == 403
    body = response.json()
    assert body["category"] == "MISSING_SCOPES"
    assert body["errors"][0]["context"]["requiredGranularScopes"] == sorted([Scope.WRITE, Scope.READ_WRITE])
    assert_valid("v3", "POST", f"{V3}/subscribe", 403, body)
    assert portal.events() == []


def test_write_scope_cannot_read(portal: PortalFixture) -> None:
    client = portal.client(portal.token_with(Scope.WRITE))
    ok = client.post(
        f"{V3}/unsubscribe", json={"emailAddress": "w@example.com", "subscriptionId": str(portal.marketing)}
    )
    assert ok.status_code == 200
    assert client.get(f"{V3}/definitions").status_code == 403
    assert client.get(f"{V3}/status/email/w@example.com").status_code == 403


def test_read_write_scope_does_both(portal: PortalFixture) -> None:
    client = portal.client(portal.token_with(Scope.READ_WRITE))
    assert client.get(f"{V3}/definitions").status_code == 200
    ok = client.post(
        f"{V3}/subscribe", json={"emailAddress": "rw@example.com", "subscriptionId": str(portal.marketing)}
    )
    assert ok.status_code == 200


def test_admin_api_needs_the_admin_scope(portal: PortalFixture) -> None:
    client = portal.client(portal.token_with(Scope.READ_WRITE))
    assert client.get("/commprefs/v1/definitions").status_code == 403
    admin = portal.client(portal.token_with(Scope.ADMIN))
    assert admin.get("/commprefs/v1/definitions").status_code == 200
    assert admin.get(f"{V3}/definitions").status_code == 403


def test_tokens_are_stored_hashed(portal: PortalFixture) -> None:
    from sqlalchemy import select

    from commprefs.store.schema import token

    rows = portal.server.store.read(
        lambda tx: list(tx.conn.execute(select(token).where(token.c.portal_id == portal.id)))
    )
    assert rows
    for row in rows:
        assert portal.token not in {str(v) for v in row._mapping.values()}
        assert len(row.secret_sha256) == 64
