"""The group readers: single-subscriber reads queued together share one load of their subscribers."""

from pathlib import Path
from typing import Any

import pytest

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import Channel, Source, Status
from commprefs.domain.model import Actor
from commprefs.store import Tx
from commprefs.store.groups import SubscriberWork
from commprefs.store.reader import Reader
from commprefs.store.statuses import StatusRepository
from tests.conftest import STORES, database_url
from tests.store.held import CountingTx, new_portal, run_grouped


@pytest.mark.parametrize("kind", STORES)
def test_a_group_of_subscriber_reads_loads_them_once_and_each_read_sees_its_own(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database_url(kind, tmp_path) as url:
        store, portal_id, (marketing, *_) = new_portal(url)
        actor = Actor(Source.API)
        for n in range(0, 30, 3):  # every third address unsubscribed from marketing
            change = consent.StatusInput(f"r{n}@example.com", marketing, Status.UNSUBSCRIBED)
            with store.transaction() as tx:
                consent.apply(tx, portal_id, actor, now_ms(), consent.unsubscribe_v3, change)
        with store.transaction() as tx:
            consent.apply(tx, portal_id, actor, now_ms(), consent.unsubscribe_from_all, "r1@example.com", None)

        monkeypatch.setattr("commprefs.store.reader.Tx", CountingTx)
        CountingTx.reset()
        reader = Reader(store.engine, store.cache, threads=1)

        def statuses(address: str) -> SubscriberWork:
            def read(tx: Tx) -> dict[int, Status]:
                found = consent.apply(tx, portal_id, actor, now_ms(), consent.Changes.statuses, address)
                return {s.definition.id: s.status for s in found}

            return SubscriberWork(read, portal_id, str(Channel.EMAIL), address)

        results = run_grouped(reader, [statuses(f"r{n}@example.com") for n in range(30)])
        assert CountingTx.loads == 1, "the 30 reads of the group were loaded by one statement"
        for n, found in enumerate(results):
            if n == 1:
                assert set(found.values()) == {Status.UNSUBSCRIBED}, "opted out of all"
            elif n % 3 == 0:
                assert found[marketing] is Status.UNSUBSCRIBED
                assert {s for d, s in found.items() if d != marketing} == {Status.NOT_SPECIFIED}
            else:
                assert set(found.values()) == {Status.NOT_SPECIFIED}
        store.close()


@pytest.mark.parametrize("kind", STORES)
def test_a_failing_preload_leaves_each_read_to_run_on_its_own(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with database_url(kind, tmp_path) as url:
        store, portal_id, _ = new_portal(url)

        def refuse(*_args: Any) -> None:
            raise ValueError("no preload today")

        monkeypatch.setattr(StatusRepository, "preload_subscribers", refuse)
        monkeypatch.setattr("commprefs.store.reader.Tx", CountingTx)
        CountingTx.reset()
        reads = [
            SubscriberWork(
                lambda tx, a=a: tx.statuses.get_subscriber(portal_id, a, "EMAIL").address, portal_id, "EMAIL", a
            )
            for a in ("a@example.com", "b@example.com", "c@example.com")
        ]
        reader = Reader(store.engine, store.cache, threads=1)
        assert run_grouped(reader, reads) == ["a@example.com", "b@example.com", "c@example.com"]
        assert CountingTx.loads == 3, "each read loaded its own subscriber"
        store.close()
