"""No email address and no secret in the logs: a real `commprefs serve` run through every kind of call.

The server runs as a subprocess at log level debug (and info), and is driven through v3 and v4 reads,
writes and batches, a dated version, errors (unknown token, bodies and paths that carry an address,
404s, a body over the cap), history and the feed, a webhook endpoint with a live receiver, an import and
its rejects, an export, data-subject access and erasure, rate-limit refusals, and the contact pages
(manage, save, unsubscribe-all, one-click, "email me a link" with a mail server that is down). Then its
whole output is searched for every address (any case, raw or percent-encoded: each address's local
part is a marker found in none of the server's own words) and every secret the run handled: the demo
token printed at start, a second token, an unknown token, the webhook secret and the secret in its
receiver's URL, the signed link tokens.
With COMMPREFS_LOG_PII the same search must find the addresses in request paths: it can see them.
"""

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from commprefs.clock import now_ms
from commprefs.domain.enums import Scope
from commprefs.store import Store
from commprefs.tenancy import setup as tenancy
from tests.conftest import database_url, free_port
from tests.pages.kit import csrf_of
from tests.procs import ServeProcess

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
EMAIL = {"channel": "EMAIL"}
HEADER = (
    "email,scope,business_unit_id,subscription_id,subscription_name,status,legal_basis,legal_basis_explanation,"
    "timestamp,source"
)


def address(marker: str) -> str:
    """An address in mixed case whose local part (`marker`, lower-cased) appears nowhere else."""
    return f"Zq{marker}.Person@Example.ORG"


@dataclass
class Run:
    """What one drive through the server handled: the secrets that must not be logged."""

    addresses: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    calls: int = 0

    def address(self, marker: str) -> str:
        made = address(marker)
        self.addresses.append(made)
        return made


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []  # noqa: RUF012 - one receiver per test run

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[str]:
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # Receivers' URLs often carry a secret (Slack-style paths, ?token=): as secret as a token.
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/ZqHookPathSecret?token=ZqHookQuerySecret"
    finally:
        server.shutdown()


def drive(base_url: str, token: str, second_token: str, portal_id: int, hook_url: str) -> Run:
    run = Run(secrets=[token, second_token, "ZqHookPathSecret", "ZqHookQuerySecret"])

    def count(_: httpx.Response) -> None:
        run.calls += 1

    hooks = {"response": [count]}
    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30, event_hooks=hooks)
    browser = httpx.Client(timeout=30, event_hooks=hooks)
    with api, browser:
        definitions = api.get(f"{V3}/definitions").json()["subscriptionDefinitions"]
        sid = next(d["id"] for d in definitions if d["name"] == "Marketing Information")

        # v3: a read, writes, a refused write (its message names the address), an unknown subscription.
        v3 = run.address("vthreereader")
        assert api.get(f"{V3}/status/email/{v3}").status_code == 200
        assert api.get(f"{V3}/status/email/{quote(v3)}").status_code == 200
        change = {"emailAddress": v3, "subscriptionId": sid}
        assert api.post(f"{V3}/subscribe", json=change).status_code == 200
        assert api.post(f"{V3}/unsubscribe", json=change).status_code == 200
        assert api.post(f"{V3}/subscribe", json=change).status_code == 400
        assert api.post(f"{V3}/unsubscribe", json={**change, "subscriptionId": "999999999"}).status_code == 404

        # v4, a dated version and the batches.
        v4 = run.address("vfourwriter")
        assert api.get(f"{V4}/statuses/{v4}", params=EMAIL).status_code == 200
        write = {"statusState": "SUBSCRIBED", "subscriptionId": int(sid), "channel": "EMAIL"}
        assert api.post(f"{V4}/statuses/{v4}", json=write).status_code == 200
        assert api.get(f"/communication-preferences/2026-03/statuses/{v4}", params=EMAIL).status_code == 200
        batch = [run.address("batchone"), run.address("batchtwo")]
        read = api.post(f"{V4}/statuses/batch/read", params=EMAIL, json={"inputs": [*batch, "not-an-address"]})
        assert read.status_code in (200, 207)
        writes = [{**write, "subscriberIdString": one, "statusState": "UNSUBSCRIBED"} for one in batch]
        assert api.post(f"{V4}/statuses/batch/write", json={"inputs": writes}).status_code == 200
        assert api.post(f"{V4}/statuses/{v4}/unsubscribe-all", params=EMAIL).status_code == 200
        assert api.get(f"{V4}/statuses/{v4}/unsubscribe-all", params=EMAIL).status_code == 200

        # Errors that carry an address: unknown token, malformed and invalid bodies, unknown paths, too big.
        unknown = "cp_UnknownTokenZq0000000000000000000000000000"
        run.secrets.append(unknown)
        stranger = run.address("unknowntoken")
        bad_auth = {"Authorization": f"Bearer {unknown}"}
        assert api.get(f"{V3}/status/email/{stranger}", headers=bad_auth).status_code == 401
        malformed = run.address("malformedjson")
        sent = api.post(f"{V3}/subscribe", content=f'{{"emailAddress": "{malformed}", ', headers=JSON_TYPE)
        assert sent.status_code == 400
        invalid = run.address("invalidbody").replace("@", "@@")
        assert api.post(f"{V3}/subscribe", json={"emailAddress": invalid, "subscriptionId": sid}).status_code == 400
        wrong = {**write, "statusState": run.address("wrongstate")}
        assert api.post(f"{V4}/statuses/{run.address('wrongpath')}", json=wrong).status_code == 400
        assert api.get(f"{V3}/nowhere/{run.address('nowhere')}").status_code == 404
        assert api.get(f"/commprefs/v1/subscribers/{run.address('unseen')}/nowhere").status_code == 404
        huge = {"emailAddress": run.address("hugebody"), "padding": "x" * 1_100_000}
        assert api.post(f"{V3}/subscribe", json=huge).status_code == 413

        # History and the feed; a second token.
        assert api.get(f"/commprefs/v1/subscribers/{v3}/history").status_code == 200
        assert api.get("/commprefs/v1/events").status_code == 200
        other = {"Authorization": f"Bearer {second_token}"}
        assert api.get(f"{V3}/status/email/{run.address('secondtoken')}", headers=other).status_code == 200

        # A webhook endpoint with a live receiver, which gets the next change.
        created = api.post("/commprefs/v1/webhooks", json={"url": hook_url})
        assert created.status_code == 201, created.text
        run.secrets.append(created.json()["secret"])
        hooked = run.address("webhooked")
        assert api.post(f"{V3}/subscribe", json={"emailAddress": hooked, "subscriptionId": sid}).status_code == 200

        # An import (one good row, one rejected), its rejects, an export, access and erasure.
        imported, rejected = run.address("imported"), run.address("rejected")
        rows = [
            f"{imported},SUBSCRIPTION,0,,Marketing Information,SUBSCRIBED,,,2024-01-08T14:02:11.000Z,Sheet",
            f"{rejected},SUBSCRIPTION,0,,Marketing Information,MAYBE,,,2024-01-08T14:02:11.000Z,Sheet",
        ]
        job = api.post(
            "/commprefs/v1/imports", content="\n".join([HEADER, *rows]).encode(), headers={"content-type": "text/csv"}
        )
        assert job.status_code == 202, job.text
        deadline = time.monotonic() + 30
        while (state := api.get(job.json()["links"]["self"]).json())["state"] not in ("COMPLETE", "FAILED"):
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        assert state["state"] == "COMPLETE" and state["counts"]["rejected"] == 1, state
        assert rejected.lower() in api.get(f"/commprefs/v1/imports/{job.json()['id']}/rejects").text.lower()
        assert imported.lower() in api.get("/commprefs/v1/exports/statuses").text
        assert api.get(f"/commprefs/v1/subjects/{v3}").status_code == 200
        assert api.delete(f"/commprefs/v1/subjects/{imported}").status_code == 200

        # The contact pages.
        contact = run.address("pagecontact")
        generate = {"subscriberIdString": contact, "subscriptionId": sid}
        links = api.post(f"{V4}/links/generate", params=EMAIL, json=generate)
        assert links.status_code == 200
        urls = links.json()
        for url in (urls["managePreferencesUrl"], urls["unsubscribeAllUrl"], urls["unsubscribeSingleUrl"]):
            run.secrets.append(url.rsplit("/", 1)[1])
        page = browser.get(urls["managePreferencesUrl"])
        assert page.status_code == 200 and contact.lower() in page.text.lower()
        saved = browser.post(
            urls["managePreferencesUrl"],
            data={"csrf_token": csrf_of(page.text), "shown": f"{sid}:0", "subscription": sid, "action": "save"},
        )
        assert saved.status_code == 200, saved.text
        assert browser.get(urls["unsubscribeAllUrl"]).status_code == 200
        assert browser.post(urls["unsubscribeSingleUrl"], data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert browser.get(urls["managePreferencesUrl"][:-3] + "xyz").status_code in (400, 404)
        request_link = f"{base_url}/preferences/{portal_id}/request-link"
        form = browser.get(request_link)
        assert form.status_code == 200
        for typed in (contact, run.address("typedunknown")):
            asked = browser.post(request_link, data={"csrf_token": csrf_of(form.text), "email": typed})
            assert asked.status_code == 200, asked.text

        # Rate-limit refusals (the server allows 100 calls per token per 10 s).
        limited = [api.get(f"{V3}/status/email/{run.address('ratelimited')}").status_code for _ in range(100)]
        assert 429 in limited

    deadline = time.monotonic() + 15
    while not Receiver.received:  # the webhook went out while we watched the logs
        assert time.monotonic() < deadline, "the webhook never arrived"
        time.sleep(0.05)
    return run


JSON_TYPE = {"content-type": "application/json"}


@dataclass
class Output:
    stdout: str  # after the banner that `serve` prints at start
    logs: str  # stderr, as written
    entries: list[dict[str, Any]]


def serve_and_drive(tmp_path: Path, kind: str, **env: str) -> tuple[Run, Output]:
    """Run a server with `env`, drive it, stop it: what the run handled, and what the server wrote."""
    with database_url(kind, tmp_path) as url, receiver() as hook_url:
        server = ServeProcess(
            url,
            tmp_path,
            "serve",
            COMMPREFS_RATE_LIMIT_PER_10S="100",
            COMMPREFS_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
            COMMPREFS_WEBHOOK_POLL_SECONDS="0.05",
            COMMPREFS_SMTP_HOST="127.0.0.1",
            COMMPREFS_SMTP_PORT=str(free_port()),  # nobody listens: sending the link fails, and is logged
            **env,
        )
        try:
            server.wait_ready()
            portal_id, token = server.demo()
            banner = server.output()
            store = Store(url)
            with store.transaction() as tx:
                _, second = tenancy.create_token(tx, portal_id, [Scope.READ], "second", now_ms())
            store.close()
            run = drive(server.base_url, token, second, portal_id, hook_url)
            time.sleep(0.5)  # background work (webhook bookkeeping, the failed mail) logs after the answers
        finally:
            server.kill()
    stdout, logs = server.output(), server.errors()
    assert stdout.startswith(banner)
    entries = [json.loads(line) for line in logs.splitlines()]  # every line is a JSON object
    return run, Output(stdout[len(banner) :], logs, entries)


def found(needle: str, text: str) -> bool:
    text = text.lower()
    return any(form.lower() in text for form in {needle, quote(needle), quote(needle, safe=""), json.dumps(needle)})


@pytest.mark.parametrize(("kind", "level"), [("sqlite", "debug"), ("sqlite", "info"), ("postgresql", "debug")])
def test_no_address_and_no_secret_reaches_the_logs(tmp_path: Path, kind: str, level: str) -> None:
    run, output = serve_and_drive(tmp_path, kind, COMMPREFS_LOG_LEVEL=level)
    entries, logs = output.entries, output.logs
    access = [e for e in entries if e["logger"] == "commprefs.access"]
    assert len(access) >= run.calls  # every call was logged (the pages' too), and we read those logs
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["request_id"]) for e in access)
    assert {e["status"] for e in access} >= {200, 201, 202, 400, 401, 404, 413, 429}
    assert any(e["level"] == "warning" and "preference link" in e["msg"] for e in entries)  # the mail failed
    assert output.stdout == ""  # everything went to the logs
    for made in run.addresses:
        marker = made.split(".", 1)[0].lower()
        assert not found(marker, logs), f"{made} is in the logs"
        assert not found(made, logs)
    for secret in run.secrets:
        assert not found(secret, logs), f"a secret ({secret[:6]}...) is in the logs"


def test_with_log_pii_the_paths_and_their_addresses_are_logged(tmp_path: Path) -> None:
    run, output = serve_and_drive(tmp_path, "sqlite", COMMPREFS_LOG_LEVEL="info", COMMPREFS_LOG_PII="true")
    paths = {e["path"] for e in output.entries if e["logger"] == "commprefs.access"}
    v3 = run.addresses[0]
    assert f"{V3}/status/email/{v3}" in paths
    assert found(v3.split(".", 1)[0].lower(), "\n".join(paths))
