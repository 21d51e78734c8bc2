"""Random sequences of v3 and v4 operations keep the invariants of one consent state:
the v3 view is derivable from the v4 state, replaying the consent history reproduces the
current state, and nothing done in one portal changes another."""

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import LegalBasis, Source, Status, WideScope
from commprefs.domain.errors import DomainError
from commprefs.domain.model import Actor
from commprefs.store import Tx
from commprefs.store.schema import consent_event, subscription_status, wide_status
from commprefs.tenancy import setup as tenancy
from tests.conftest import Server

ADDRESSES = ["a@example.com", "b@example.com", "c@example.com"]
ACTOR = Actor(Source.API, token_id="prop")

# An operation: (kind, address index, definition index, state or brand choice, with legal basis)
operations = st.lists(
    st.tuples(
        st.sampled_from(["v3_subscribe", "v3_unsubscribe", "v3_resubscribe", "v4_set", "unsubscribe_all"]),
        st.integers(0, len(ADDRESSES) - 1),
        st.integers(0, 3),
        st.sampled_from([Status.SUBSCRIBED, Status.UNSUBSCRIBED, Status.NOT_SPECIFIED]),
        st.sampled_from([None, 0, 1]),  # unsubscribe_all: portal-wide, brand 0, or the second brand
        st.booleans(),
    ),
    max_size=14,
)


def _setup(tx: Tx, gdpr: bool) -> tuple[int, list[int], int]:
    now = now_ms()
    portal = tenancy.create_portal(tx, "props", gdpr_enabled=gdpr, now=now)
    brand = tenancy.create_business_unit(tx, portal.id, "Second", now)
    tenancy.create_definition(tx, portal.id, "Brand news", "", now=now + 3, business_unit_id=brand.id)
    return portal.id, [d.id for d in tx.portals.list_definitions(portal.id)], brand.id


def _apply(tx: Tx, portal_id: int, definitions: list[int], brand: int, op: tuple[Any, ...]) -> None:
    kind, who, which, state, scope, with_basis = op
    basis = (LegalBasis.CONSENT_WITH_NOTICE, "property test") if with_basis else (None, None)
    request = consent.StatusInput(ADDRESSES[who], definitions[which], state, *basis)
    rules = {
        "v3_subscribe": consent.subscribe_v3,
        "v3_unsubscribe": consent.unsubscribe_v3,
        "v3_resubscribe": consent.resubscribe_v3,
        "v4_set": consent.set_status,
    }
    try:
        if kind == "unsubscribe_all":
            unit = None if scope is None else (0 if scope == 0 else brand)
            consent.apply(tx, portal_id, ACTOR, now_ms(), consent.unsubscribe_from_all, ADDRESSES[who], unit)
        else:
            consent.apply(tx, portal_id, ACTOR, now_ms(), rules[kind], request)
    except DomainError:
        pass


def _snapshot(tx: Tx, portal_id: int) -> tuple[list[Any], list[Any], list[Any]]:
    def rows(table: Any, *order: Any) -> list[Any]:
        return [tuple(r) for r in tx.conn.execute(select(table).where(table.c.portal_id == portal_id).order_by(*order))]

    return (
        rows(subscription_status, subscription_status.c.subscriber, subscription_status.c.subscription_id),
        rows(wide_status, wide_status.c.subscriber, wide_status.c.scope, wide_status.c.business_unit_id),
        rows(consent_event, consent_event.c.id),
    )


def _check_v3_derives_from_v4(tx: Tx, portal_id: int) -> None:
    """The v3 view, rebuilt here from the v4 statuses and wide records by DESIGN.md's rules."""
    changes = consent.Changes(tx, portal_id, ACTOR, now_ms())
    for address in ADDRESSES:
        wide = {
            (w.scope, w.business_unit_id): w.status for w in consent.wide_statuses(changes.subscriber(address), None)
        }
        for view in changes.statuses(address):
            unit = view.definition.business_unit_id
            portal_out = wide.get((WideScope.PORTAL_WIDE, 0)) is Status.UNSUBSCRIBED
            brand_out = wide.get((WideScope.BUSINESS_UNIT_WIDE, unit)) is Status.UNSUBSCRIBED
            stored = changes.subscriber(address).statuses.get(view.definition.id)
            expected_v4 = (
                Status.UNSUBSCRIBED if portal_out or brand_out else (stored.status if stored else Status.NOT_SPECIFIED)
            )
            assert view.status is expected_v4
            assert (view.v3_status.value == "SUBSCRIBED") == (expected_v4 is Status.SUBSCRIBED)
            expected_source = (
                "PORTAL_WIDE_STATUS" if portal_out else "BRAND_WIDE_STATUS" if brand_out else "SUBSCRIPTION_STATUS"
            )
            assert view.source_of_status.value == expected_source


def _check_history_replays_to_state(tx: Tx, portal_id: int) -> None:
    statuses, wides, events = _snapshot(tx, portal_id)
    replayed_status: dict[tuple[str, int], str] = {}
    replayed_wide: dict[tuple[str, str, int], str] = {}
    e = consent_event.c
    for row in tx.conn.execute(select(consent_event).where(e.portal_id == portal_id).order_by(e.id)):
        if row.wide_scope is None:
            previous = replayed_status.get((row.subscriber, row.subscription_id), "NOT_SPECIFIED")
            assert row.old_status == previous, "an event's old status is the state before it"
            replayed_status[(row.subscriber, row.subscription_id)] = row.new_status
        else:
            key = (row.subscriber, row.wide_scope, row.business_unit_id)
            assert row.old_status == replayed_wide.get(key, "NOT_SPECIFIED")
            replayed_wide[key] = row.new_status
    s, w = subscription_status.c, wide_status.c
    actual_status = {
        (r.subscriber, r.subscription_id): r.status
        for r in tx.conn.execute(select(subscription_status).where(s.portal_id == portal_id))
    }
    actual_wide = {
        (r.subscriber, r.scope, r.business_unit_id): r.status
        for r in tx.conn.execute(select(wide_status).where(w.portal_id == portal_id))
    }
    assert replayed_status == actual_status
    assert replayed_wide == actual_wide
    assert len(statuses) == len(actual_status) and len(wides) == len(actual_wide)
    assert all(isinstance(ev, tuple) for ev in events)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, bystander_ops=operations, gdpr=st.booleans())
def test_random_sequences_keep_the_invariants(
    server: Server, ops: list[tuple[Any, ...]], bystander_ops: list[tuple[Any, ...]], gdpr: bool
) -> None:
    with server.store.transaction() as tx:
        portal_id, definitions, brand = _setup(tx, gdpr)
        other_id, other_definitions, other_brand = _setup(tx, False)
        for op in bystander_ops:
            _apply(tx, other_id, other_definitions, other_brand, op)
        before = _snapshot(tx, other_id)
        for op in ops:
            _apply(tx, portal_id, definitions, brand, op)
        _check_v3_derives_from_v4(tx, portal_id)
        _check_history_replays_to_state(tx, portal_id)
        _check_history_replays_to_state(tx, other_id)
        assert _snapshot(tx, other_id) == before
