""" "Email me a link" against a real SMTP server (aiosmtpd) started by the test."""

import email
import email.policy
import re
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from commprefs.clock import now_ms
from commprefs.domain.enums import Scope
from commprefs.tenancy import setup as tenancy
from tests.conftest import LINK_MAX_AGE_DAYS, PortalFixture, Server, free_port, run_server
from tests.pages.kit import csrf_of, h1, old_link, statuses

URL_RE = re.compile(r"https?://\S+/preferences/\d+/manage/\S+")


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.arrived:
            self.messages.append(message)  # type: ignore[arg-type]
            self.arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    handler = Inbox(free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mail_server(inbox: Inbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with SMTP configured and a per-address limit low enough to reach in a test."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('mail')) / 'commprefs.db'}"
    with run_server(
        url,
        "sqlite",
        smtp_host="127.0.0.1",
        smtp_port=inbox.port,
        smtp_security="none",
        smtp_from="prefs@example.org",
        link_requests_per_address=2,
        link_requests_per_ip=1000,
    ) as server:
        yield server


def make(server: Server) -> PortalFixture:
    with server.store.transaction() as tx:
        created = tenancy.create_portal(tx, "Mail portal", gdpr_enabled=False, now=now_ms())
        _, secret = tenancy.create_token(tx, created.id, list(Scope), "test", now_ms())
        definitions = {d.name: d.id for d in tx.portals.list_definitions(created.id)}
    return PortalFixture(created.id, secret, server, definitions)


def ask(client: httpx.Client, base: str, portal_id: int, **fields: str) -> httpx.Response:
    page = client.get(f"{base}/preferences/{portal_id}/request-link", headers={"Accept-Language": "de"})
    assert page.status_code == 200
    return client.post(
        f"{base}/preferences/{portal_id}/request-link",
        data={"csrf_token": csrf_of(page.text), **fields},
        headers={"Accept-Language": "de"},
    )


def test_a_known_address_gets_a_working_link_and_an_unknown_one_the_same_page(
    mail_server: Server, inbox: Inbox
) -> None:
    portal = make(mail_server)
    base = mail_server.base_url
    known = "known@example.com"
    with portal.client() as api:
        api.post(
            f"/communication-preferences/v4/statuses/{known}",
            json={"subscriptionId": portal.marketing, "statusState": "SUBSCRIBED", "channel": "EMAIL"},
        )
    start = len(inbox.messages)
    with httpx.Client() as client:
        unknown_page = ask(client, base, portal.id, email="stranger@example.com")
        known_page = ask(client, base, portal.id, email=" Known@Example.com ")
    assert unknown_page.status_code == known_page.status_code == 200
    assert h1(unknown_page) == h1(known_page) == "Sehen Sie in Ihrem Posteingang nach"
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", unknown_page.text) == strip.sub("", known_page.text), "the answer must not tell"

    inbox.wait_for(start + 1)
    time.sleep(0.3)  # had the unknown address been mailed too, it would have arrived by now
    new = inbox.messages[start:]
    assert [m["To"] for m in new] == [known]
    message = new[0]
    assert message["From"] == "prefs@example.org"
    assert message["Subject"] == "Ihr Link zu Ihren E-Mail-Einstellungen"
    body = message.get_content()
    link = URL_RE.search(body)
    assert link, body
    page = httpx.get(link.group(0))
    assert page.status_code == 200
    assert '<html lang="de">' in page.text and known in page.text


def test_mails_per_address_and_requests_per_ip_are_limited(mail_server: Server, inbox: Inbox) -> None:
    portal = make(mail_server)
    address = "limited@example.com"
    with portal.client() as api:
        api.post(f"/communication-preferences/v4/statuses/{address}/unsubscribe-all", params={"channel": "EMAIL"})
    start = len(inbox.messages)
    with httpx.Client() as client:
        answers = [ask(client, mail_server.base_url, portal.id, email=address) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200], "the address limit is silent"
    inbox.wait_for(start + 2)
    time.sleep(0.3)
    assert [m["To"] for m in inbox.messages[start:]] == [address, address]


def test_requests_per_client_ip_are_limited(inbox: Inbox, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'commprefs.db'}"
    with run_server(url, "sqlite", smtp_host="127.0.0.1", smtp_port=inbox.port, link_requests_per_ip=3) as server:
        portal = make(server)
        with httpx.Client() as client:
            codes = [ask(client, server.base_url, portal.id, email=f"x{i}@example.com").status_code for i in range(5)]
            assert codes == [200, 200, 200, 429, 429]
            assert "Zu viele Anfragen" in ask(client, server.base_url, portal.id, email="y@example.com").text


def test_an_expired_link_offers_a_fresh_one_by_mail(mail_server: Server, inbox: Inbox) -> None:
    portal = make(mail_server)
    address = "expired.mail@example.com"  # never seen: the genuine old link vouches for the address
    url = old_link(portal, "manage", address, age_days=LINK_MAX_AGE_DAYS + 3)
    start = len(inbox.messages)
    with httpx.Client() as client:
        expired = client.get(url)
        assert expired.status_code == 410
        action = re.search(r'<form method="post" action="([^"]+)"', expired.text)
        assert action, "the expired page offers a fresh link"
        fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', expired.text))
        sent = client.post(mail_server.base_url + action.group(1), data=fields)
    assert sent.status_code == 200
    new = inbox.wait_for(start + 1)[start:]
    assert [m["To"] for m in new] == [address]
    fresh = URL_RE.search(new[0].get_content())
    assert fresh
    assert httpx.get(fresh.group(0)).status_code == 200
    with portal.client() as api:
        assert set(statuses(api, address).values()) == {"NOT_SPECIFIED"}, "asking for a link changes nothing"


def test_a_forged_request_without_csrf_sends_nothing(mail_server: Server, inbox: Inbox) -> None:
    portal = make(mail_server)
    start = len(inbox.messages)
    response = httpx.post(f"{mail_server.base_url}/preferences/{portal.id}/request-link", data={"email": "a@b.co"})
    assert response.status_code == 403
    time.sleep(0.2)
    assert len(inbox.messages) == start
