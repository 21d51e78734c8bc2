"""The export's bytes: PostgreSQL writes an export's CSV itself (COPY ... TO STDOUT); its bytes must be those
Python's csv module writes for the same rows, texts that need quoting and empty texts included."""

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from commprefs import consent
from commprefs.clock import iso, now_ms
from commprefs.domain.enums import Channel, LegalBasis, Source, Status
from commprefs.domain.model import Actor
from commprefs.store import Store
from commprefs.store.schema import subscription_status
from commprefs.store.transfer import ExportRows
from commprefs.tenancy import setup as tenancy
from commprefs.transfer import exporter
from commprefs.transfer.formats import COMMPREFS_COLUMNS, SUBSCRIPTION_SCOPE
from tests.conftest import STORES, database_url

TRICKY = [
    "plain",
    "a, comma",
    'a "quote"',
    "two\nlines",
    "carriage\r\nreturn",
    "",
    " leading and trailing ",
    "ünïcödé ✓ 日本",
    "100% sure; 50%% more",
    "\\.",
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database_url(request.param, tmp_path) as url:
        store = Store(url)
        store.migrate()
        yield store
        store.close()


def fill(store: Store) -> int:
    """A portal whose statuses, names and explanations hold every text in TRICKY; some opted out of all."""
    now = now_ms()
    with store.transaction() as tx:
        portal = tenancy.create_portal(tx, "export", gdpr_enabled=False, now=now)
        tenancy.create_definition(tx, portal.id, 'Name, with "quotes"', "", now=now)
        definitions = [d.id for d in tx.portals.list_definitions(portal.id)]
        actor = Actor(Source.API)
        for n, explanation in enumerate(TRICKY):
            address = f"person{n}@example.com"
            for definition in definitions:
                change = consent.StatusInput(
                    address, definition, Status.SUBSCRIBED, LegalBasis.CONSENT_WITH_NOTICE, explanation
                )
                consent.apply(tx, portal.id, actor, now + n, consent.set_status, change)
            if n % 3 == 0:
                consent.apply(tx, portal.id, actor, now + n, consent.unsubscribe_from_all, address, None)
    return portal.id


def expected_csv(store: Store, portal_id: int) -> bytes:
    """The export written by Python's csv module from the rows the store hands over."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMMPREFS_COLUMNS)
    with store.snapshot() as tx:
        for chunk in tx.transfer.export_chunks(
            ExportRows(portal_id, Channel.EMAIL.value, None, None, False, SUBSCRIPTION_SCOPE)
        ):
            writer.writerows(chunk)
    return buffer.getvalue().encode()


def test_the_csv_export_is_the_csv_modules_bytes_on_every_store(store: Store) -> None:
    portal_id = fill(store)
    got = b"".join(exporter.stream(store, exporter.ExportRequest(portal_id)))
    assert got == expected_csv(store, portal_id)
    rows = list(csv.DictReader(io.StringIO(got.decode())))
    explanations = {r["legal_basis_explanation"] for r in rows if r["scope"] == SUBSCRIPTION_SCOPE}
    assert explanations == set(TRICKY), "every text arrives as it was stored"
    assert {r["subscription_name"] for r in rows} >= {'Name, with "quotes"'}
    assert sum(r["scope"] == "PORTAL_WIDE" for r in rows) == len(range(0, len(TRICKY), 3))


def test_timestamps_in_the_export_are_the_apis(store: Store) -> None:
    portal_id = fill(store)
    with store.snapshot() as tx:
        rows = tx.conn.execute(select(subscription_status).where(subscription_status.c.portal_id == portal_id))
        stored = {(r.subscriber, r.subscription_id): r.updated_at for r in rows}
    got = b"".join(exporter.stream(store, exporter.ExportRequest(portal_id)))
    for row in csv.DictReader(io.StringIO(got.decode())):
        if row["scope"] == SUBSCRIPTION_SCOPE:
            assert row["timestamp"] == iso(stored[(row["email"], int(row["subscription_id"]))])
