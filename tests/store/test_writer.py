"""The group-commit writer: concurrent writes commit together, a refused write rolls back alone."""

import asyncio
from pathlib import Path

import pytest

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import Source, Status
from commprefs.domain.errors import NotFound, RuleViolation
from commprefs.domain.model import Actor
from commprefs.store import Store, Tx
from commprefs.store.engine import make_engine
from commprefs.store.writer import Writer
from commprefs.tenancy.setup import create_portal
from tests.conftest import STORES, database_url
from tests.store.held import CountingTx, new_portal, run_grouped, status_change


@pytest.mark.parametrize("kind", STORES)
def test_concurrent_writes_all_commit_and_refusals_stay_isolated(kind: str, tmp_path: Path) -> None:
    with database_url(kind, tmp_path) as url:
        store = Store(url)
        store.migrate()
        with store.transaction() as tx:
            portal = create_portal(tx, "writer", gdpr_enabled=False, now=now_ms())
            marketing = tx.portals.list_definitions(portal.id)[0].id
        actor = Actor(Source.API)

        def unsubscribe(address: str):  # type: ignore[no-untyped-def]
            change = consent.StatusInput(address, marketing, Status.UNSUBSCRIBED)
            return lambda tx: consent.apply(tx, portal.id, actor, now_ms(), consent.unsubscribe_v3, change)

        async def main() -> list[object]:
            # 200 distinct addresses, and each of 20 addresses twice: the second of each pair is refused.
            jobs = [store.write(unsubscribe(f"w{i}@example.com")) for i in range(200)]
            jobs += [store.write(unsubscribe(f"dup{i % 20}@example.com")) for i in range(40)]
            return await asyncio.gather(*jobs, return_exceptions=True)

        results = asyncio.run(main())
        refused = [r for r in results if isinstance(r, RuleViolation)]
        assert len(refused) == 20
        assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, RuleViolation)]
        events = store.read(lambda tx: tx.feed.list_events(portal.id))
        assert len(events) == 220
        assert len({e.subscriber for e in events}) == 220

        def broken(tx: Tx) -> None:
            change = consent.StatusInput("half@example.com", marketing, Status.UNSUBSCRIBED)
            consent.apply(tx, portal.id, actor, now_ms(), consent.unsubscribe_v3, change)
            raise RuntimeError("boom after a write")

        async def mixed() -> list[object]:
            return await asyncio.gather(
                store.write(broken), store.write(unsubscribe("after@example.com")), return_exceptions=True
            )

        outcome = asyncio.run(mixed())
        assert isinstance(outcome[0], RuntimeError)
        assert store.read(lambda tx: len(tx.feed.list_events(portal.id, "after@example.com"))) == 1

        async def refused_last() -> list[object]:
            # A group's writes run without savepoints until one fails; the group then runs again with them.
            # Those before the failure must be written once, not twice.
            before = [store.write(unsubscribe(f"before{i}@example.com")) for i in range(5)]
            return await asyncio.gather(*before, store.write(broken), return_exceptions=True)

        outcome = asyncio.run(refused_last())
        assert isinstance(outcome[-1], RuntimeError)
        for i in range(5):
            assert store.read(lambda tx, i=i: len(tx.feed.list_events(portal.id, f"before{i}@example.com"))) == 1
        assert store.read(lambda tx: tx.feed.list_events(portal.id, "half@example.com")) == []
        assert store.read(lambda tx: tx.statuses.get_subscriber(portal.id, "half@example.com", "EMAIL").statuses) == {}
        store.close()


def test_expired_idempotency_keys_are_purged(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    with store.transaction() as tx:
        tx.idempotency.save_idempotent(1, "old", "f" * 64, 200, b"{}", now=1_000)
        tx.idempotency.save_idempotent(1, "new", "f" * 64, 200, b"{}", now=5_000)
    with store.transaction() as tx:
        assert tx.idempotency.purge_idempotent(before=2_000) == 1
    assert store.read(lambda tx: tx.idempotency.get_idempotent(1, "old")) is None
    assert store.read(lambda tx: tx.idempotency.get_idempotent(1, "new")) is not None
    store.close()


@pytest.mark.parametrize("kind", STORES)
def test_a_group_of_single_subscriber_changes_is_loaded_and_written_once_in_order(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database_url(kind, tmp_path) as url:
        store, portal_id, (marketing, other, *_) = new_portal(url)
        jobs = [status_change(portal_id, f"m{n}@example.com", marketing, Status.SUBSCRIBED) for n in range(20)]
        # The same address three times in the group: each change sees the one before it.
        jobs += [
            status_change(portal_id, "twice@example.com", marketing, Status.SUBSCRIBED),
            status_change(portal_id, "twice@example.com", marketing, Status.UNSUBSCRIBED),
            status_change(portal_id, "twice@example.com", other, Status.SUBSCRIBED),
        ]
        monkeypatch.setattr("commprefs.store.writer.Tx", CountingTx)
        CountingTx.reset()
        writer = Writer(make_engine(url, writer=True, pool_size=1), store.cache)
        results = run_grouped(writer, jobs)
        assert results == [Status.SUBSCRIBED] * 21 + [Status.UNSUBSCRIBED, Status.SUBSCRIBED]
        assert (CountingTx.loads, CountingTx.status_writes) == (1, 1), "one load and one write for the group"
        twice = store.read(lambda tx: tx.statuses.get_subscriber(portal_id, "twice@example.com", "EMAIL"))
        assert {n: s.status for n, s in twice.statuses.items()} == {
            marketing: Status.UNSUBSCRIBED,
            other: Status.SUBSCRIBED,
        }
        events = store.read(lambda tx: tx.feed.list_events(portal_id, "twice@example.com"))
        assert [(e.subscription_id, e.old_status, e.new_status) for e in events] == [
            (marketing, "NOT_SPECIFIED", "SUBSCRIBED"),
            (marketing, "SUBSCRIBED", "UNSUBSCRIBED"),
            (other, "NOT_SPECIFIED", "SUBSCRIBED"),
        ]
        assert len(store.read(lambda tx: tx.feed.list_events(portal_id))) == 23
        store.close()


@pytest.mark.parametrize("kind", STORES)
def test_a_refused_change_in_a_merged_group_fails_alone_and_the_others_are_written_once(
    kind: str, tmp_path: Path
) -> None:
    with database_url(kind, tmp_path) as url:
        store, portal_id, (marketing, *_) = new_portal(url)
        jobs = [status_change(portal_id, f"r{n}@example.com", marketing, Status.UNSUBSCRIBED) for n in range(10)]
        jobs.insert(5, status_change(portal_id, "refused@example.com", 999_999, Status.UNSUBSCRIBED))  # no such one
        writer = Writer(make_engine(url, writer=True, pool_size=1), store.cache)
        results = run_grouped(writer, jobs)
        assert isinstance(results[5], NotFound)
        assert results[:5] + results[6:] == [Status.UNSUBSCRIBED] * 10
        events = store.read(lambda tx: tx.feed.list_events(portal_id))
        assert sorted(e.subscriber for e in events) == sorted(f"r{n}@example.com" for n in range(10))
        store.close()
