"""The consent rules through the consent service face, as the adapters call it: no HTTP, a real database.

These read like the rules (DESIGN.md, "API semantics"); the HTTP tests beside them check the same rules on
the wire, with HubSpot's shapes."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from commprefs import consent
from commprefs.clock import now_ms
from commprefs.domain.enums import Channel, LegalBasis, SetStatusReason, Source, Status, WideScope
from commprefs.domain.errors import KeyReused, NotFound, RuleViolation
from commprefs.domain.model import Actor
from commprefs.services import Services
from tests.conftest import STORES, database_url

T = TypeVar("T")
ACTOR = Actor(Source.API, token_id="test")
A = "jane@example.com"


@dataclass
class Portal:
    services: Services
    id: int
    marketing: int
    service_mail: int

    def run(self, call: Callable[[Services], Awaitable[T]]) -> T:
        return self.services.run(call)

    def change(self, rule: Callable[..., T], *args: object) -> T:
        result = self.run(lambda s: s.consent.change(self.id, ACTOR, now_ms(), lambda changes: rule(changes, *args)))
        assert not isinstance(result, consent.Answer)
        return result

    def statuses(self, address: str = A) -> dict[int, Status]:
        return {e.definition.id: e.status for e in self.run(lambda s: s.consent.statuses(self.id, address))}


@pytest.fixture(scope="module", params=STORES)
def services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with database_url(request.param, Path(tmp_path_factory.mktemp("consent"))) as url:
        opened = Services.open(url, migrate=True)
        yield opened
        opened.close()


def make_portal(services: Services, *, gdpr: bool = False) -> Portal:
    async def create(s: Services) -> Portal:
        portal = await s.tenancy.create_portal("rules", gdpr_enabled=gdpr)
        by_name = {d.name: d.id for d in await s.tenancy.definitions(portal.id)}
        return Portal(s, portal.id, by_name["Marketing Information"], by_name["Customer Service Communication"])

    return services.run(create)


@pytest.fixture
def portal(services: Services) -> Portal:
    return make_portal(services)


def test_an_unknown_address_reads_not_specified(portal: Portal) -> None:
    assert set(portal.statuses("nobody@example.com").values()) == {Status.NOT_SPECIFIED}


def test_v4_subscribe_is_idempotent_and_says_so(portal: Portal) -> None:
    first = portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    again = portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    assert first.reason is SetStatusReason.REQUESTED_CHANGE_OCCURRED
    assert again.reason is SetStatusReason.NO_STATUS_CHANGE
    assert portal.statuses()[portal.marketing] is Status.SUBSCRIBED


def test_an_opt_out_from_all_covers_every_subscription_and_v3_cannot_lift_it(portal: Portal) -> None:
    portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    affected = portal.change(consent.unsubscribe_from_all, A, None)
    assert {e.reason for e in affected} == {SetStatusReason.UNSUBSCRIBE_FROM_ALL_OCCURRED}
    assert set(portal.statuses().values()) == {Status.UNSUBSCRIBED}
    with pytest.raises(RuleViolation, match="unsubscribed"):
        portal.change(consent.subscribe_v3, consent.StatusInput(A, portal.service_mail))
    opt_outs = portal.run(lambda s: s.consent.opt_outs(portal.id, A, Channel.EMAIL))
    assert [(w.scope, w.status) for w in opt_outs] == [(WideScope.PORTAL_WIDE, Status.UNSUBSCRIBED)]


def test_a_v4_subscribe_under_an_opt_out_is_a_resubscribe(portal: Portal) -> None:
    portal.change(consent.unsubscribe_from_all, A, None)
    result = portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    assert result.reason is SetStatusReason.RESUBSCRIBE_OCCURRED
    statuses = portal.statuses()
    assert statuses[portal.marketing] is Status.SUBSCRIBED
    assert statuses[portal.service_mail] is Status.UNSUBSCRIBED  # the rest stays opted out


def test_a_gdpr_portal_needs_the_paperwork_and_nothing_is_written_without_it(services: Services) -> None:
    portal = make_portal(services, gdpr=True)
    with pytest.raises(RuleViolation, match="legalBasis"):
        portal.change(consent.subscribe_v3, consent.StatusInput(A, portal.marketing))
    assert portal.statuses()[portal.marketing] is Status.NOT_SPECIFIED
    given = consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED, LegalBasis.CONSENT_WITH_NOTICE, "form")
    assert portal.change(consent.subscribe_v3, given).status is Status.SUBSCRIBED


def test_an_unknown_subscription_is_not_found(portal: Portal) -> None:
    with pytest.raises(NotFound):
        portal.change(consent.set_status, consent.StatusInput(A, 1, Status.SUBSCRIBED))


def test_an_erased_address_reads_opted_out_until_a_new_consent(portal: Portal) -> None:
    portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    erasure = portal.run(lambda s: s.consent.erase(portal.id, A, Actor(Source.ADMIN)))
    assert erasure.key.startswith("erased:") and not erasure.already_erased
    assert set(portal.statuses().values()) == {Status.UNSUBSCRIBED}
    assert portal.run(lambda s: s.consent.is_known(portal.id, A))  # it may still ask for its link
    with pytest.raises(RuleViolation, match="erased"):
        portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED))
    basis = consent.StatusInput(A, portal.marketing, Status.SUBSCRIBED, LegalBasis.CONSENT_WITH_NOTICE, "new form")
    portal.change(consent.set_status, basis)
    assert portal.statuses()[portal.marketing] is Status.SUBSCRIBED


def test_a_retried_change_gets_its_first_answer_and_changes_nothing_again(portal: Portal) -> None:
    retry = consent.Retry("key-1", "fingerprint-1")

    def change(state: Status, key: consent.Retry) -> object:
        return portal.run(
            lambda s: s.consent.change(
                portal.id,
                ACTOR,
                now_ms(),
                lambda changes: consent.set_status(changes, consent.StatusInput(A, portal.marketing, state)).status,
                retry=key,
                answer=lambda status: consent.Answer(200, str(status).encode()),
            )
        )

    assert change(Status.SUBSCRIBED, retry) is Status.SUBSCRIBED
    replayed = change(Status.UNSUBSCRIBED, retry)  # same key and fingerprint: the first answer
    assert replayed == consent.Answer(200, b"SUBSCRIBED", replayed=True)
    assert portal.statuses()[portal.marketing] is Status.SUBSCRIBED
    with pytest.raises(KeyReused):
        change(Status.UNSUBSCRIBED, consent.Retry("key-1", "another body"))


def test_history_keeps_every_change_newest_first(portal: Portal) -> None:
    for state in (Status.SUBSCRIBED, Status.UNSUBSCRIBED):
        portal.change(consent.set_status, consent.StatusInput(A, portal.marketing, state))
    found = portal.run(lambda s: s.consent.history(portal.id, A, None, 10))
    assert [(r.old_status, r.new_status) for r in found.rows] == [
        ("SUBSCRIBED", "UNSUBSCRIBED"),
        ("NOT_SPECIFIED", "SUBSCRIBED"),
    ]
    assert found.definitions[portal.marketing].name == "Marketing Information"


def test_concurrent_changes_of_one_address_all_land(portal: Portal) -> None:
    """Single-subscriber changes queued together are merged by the writer; each still sees the one before."""

    async def many(s: Services) -> list[consent.Effective]:
        ids = [portal.marketing, portal.service_mail]
        return await asyncio.gather(
            *(
                s.consent.change(
                    portal.id,
                    ACTOR,
                    now_ms(),
                    lambda changes, sid=sid: consent.set_status(
                        changes, consent.StatusInput(A, sid, Status.SUBSCRIBED)
                    ),
                    address=A,
                )
                for sid in ids
            )
        )

    portal.run(many)
    statuses = portal.statuses()
    assert statuses[portal.marketing] is Status.SUBSCRIBED and statuses[portal.service_mail] is Status.SUBSCRIBED


def test_a_synchronous_call_works_inside_a_running_event_loop(portal: Portal) -> None:
    """The pytest plugin's fixtures call the faces synchronously; an async test's loop may already be running."""

    async def inside() -> dict[int, Status]:
        return portal.statuses("loop@example.com")

    assert set(asyncio.run(inside()).values()) == {Status.NOT_SPECIFIED}
