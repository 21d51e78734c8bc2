"""Hostile input on every write: huge and deeply nested JSON, invalid UTF-8, NUL bytes, 10,000-character
addresses, SQL and template injection in every text field, and webhook URLs that try to inject headers or
reach the operator's network. Each gets a clean 4xx and stores nothing, or, where the text is legitimately
valid, is stored verbatim and never evaluated. Never a 5xx.

(The single-endpoint error shapes, v3's bad bodies and its 413s, are in tests/api/test_errors.py.)
"""

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from commprefs.store import schema
from tests.conftest import PortalFixture
from tests.pages.kit import h1, links_for, submit

V3 = "/communication-preferences/v3"
V4 = "/communication-preferences/v4"
ADMIN = "/commprefs/v1"
JANE = "jane@example.com"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "imports"
MIB = 1024 * 1024

SQL = ["x' OR '1'='1", "'); DROP TABLE consent_event;--", "\\' UNION SELECT secret_sha256 FROM token--"]
TEMPLATES = ["{{7*7}}", "${7*7}", "<script>alert(1)</script>", "{% raw %}"]
INJECTIONS = SQL + TEMPLATES

# Hostile addresses, each invalid: every one must be refused before it reaches a query.
HOSTILE_EMAILS = {
    "nul-local": "ja\x00ne@example.com",
    "nul-domain": "jane@exa\x00mple.com",
    "long-local": "x" * 10_000 + "@example.com",
    "long-domain": "jane@" + "d" * 10_000 + ".com",
    "sql": "x' OR '1'='1@example.com",
    "sql-drop": "'); DROP TABLE consent_event;--@example.com",
    "script": "<script>alert(1)</script>@example.com",
}
# The same, as they arrive in a URL path (invalid UTF-8 can only come this way).
HOSTILE_PATH_EMAILS = {
    "nul": "ja%00ne@example.com",
    "invalid-utf8-domain": "jane@ex%c3%28ample.com",
    "long-local": "x" * 10_000 + "@example.com",
    "long-domain": "jane@" + "d" * 10_000 + ".com",
    "sql-drop": "%27)%3B%20DROP%20TABLE%20consent_event%3B--@example.com",
    "html": "%3Cimg%20src=x%20onerror=alert(1)%3E@example.com",
}


# -- what a clean refusal is, and what "nothing stored" means ---------------------------------------


def assert_clean_4xx(response: httpx.Response, *expected: int, case: str = "") -> None:
    """A 4xx (one of `expected` if given), never a traceback; a JSON body is HubSpot's error shape."""
    where = (case, response.request.method, response.status_code, response.text[:300])
    assert 400 <= response.status_code < 500, where
    if expected:
        assert response.status_code in expected, where
    assert "Traceback" not in response.text, where
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert body["status"] == "error" and body["message"] and body["category"], where
        uuid.UUID(body["correlationId"])
        for error in body.get("errors") or []:
            assert error["in"] and error["code"], where


# Columns that change without any write of the caller's: token use, the webhook sender's lease.
_VOLATILE = {"last_used_at", "lease_owner", "lease_until"}


def stored(portal: PortalFixture) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the portal has, in every table: what "nothing stored, nothing changed" compares."""
    rows = {}
    with portal.server.store.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            key = table.c.get("portal_id", table.c.id if table.name == "portal" else None)
            if key is None:
                continue
            columns = [c for c in table.c if c.name not in _VOLATILE]
            found = conn.execute(sa.select(*columns).where(key == portal.id)).all()
            rows[table.name] = sorted((tuple(r) for r in found), key=repr)
    return rows


def assert_schema_intact(portal: PortalFixture) -> None:
    names = set(sa.inspect(portal.server.store.engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= names
    assert len(stored(portal)["subscription_definition"]) >= 3


# -- the JSON write endpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A JSON write endpoint and a body it accepts."""

    method: str
    path: str
    body: Callable[[PortalFixture], dict[str, Any]]

    def url(self, portal: PortalFixture) -> str:
        return self.path.format(marketing=portal.marketing, email=JANE)


def _v3_body(p: PortalFixture) -> dict[str, Any]:
    return {"emailAddress": JANE, "subscriptionId": str(p.marketing)}


def _v4_body(p: PortalFixture) -> dict[str, Any]:
    return {"statusState": "SUBSCRIBED", "subscriptionId": p.marketing, "channel": "EMAIL"}


WRITES = {
    "v3-subscribe": Write("POST", f"{V3}/subscribe", _v3_body),
    "v3-unsubscribe": Write("POST", f"{V3}/unsubscribe", _v3_body),
    "v4-status": Write("POST", f"{V4}/statuses/{{email}}", _v4_body),
    "v4-batch-write": Write(
        "POST", f"{V4}/statuses/batch/write", lambda p: {"inputs": [{"subscriberIdString": JANE, **_v4_body(p)}]}
    ),
    "v4-batch-read": Write("POST", f"{V4}/statuses/batch/read?channel=EMAIL", lambda p: {"inputs": [JANE]}),
    "v4-batch-unsubscribe-all": Write(
        "POST", f"{V4}/statuses/batch/unsubscribe-all?channel=EMAIL", lambda p: {"inputs": [JANE]}
    ),
    "v4-links": Write("POST", f"{V4}/links/generate?channel=EMAIL", lambda p: {"subscriberIdString": JANE}),
    "definition-create": Write("POST", f"{ADMIN}/definitions", lambda p: {"name": "News", "description": "d"}),
    "definition-update": Write("PATCH", f"{ADMIN}/definitions/{{marketing}}", lambda p: {"description": "d"}),
    "business-unit": Write("POST", f"{ADMIN}/business-units", lambda p: {"name": "Brand"}),
    "webhook": Write("POST", f"{ADMIN}/webhooks", lambda p: {"url": "https://example.com/hook"}),
    "portal": Write("PATCH", f"{ADMIN}/portal", lambda p: {"name": "Renamed"}),
}


def send(api: httpx.Client, portal: PortalFixture, write: Write, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return api.request(write.method, write.url(portal), content=content, headers=headers)


def _oversize(portal: PortalFixture, write: Write) -> bytes:
    return json.dumps({**write.body(portal), "pad": "x" * MIB}).encode()


_FIRST_STRING = re.compile(rb'[:\[]\s*("(?:[^"\\]|\\.)*")')


def _with_raw_string(portal: PortalFixture, write: Write, raw: bytes) -> bytes:
    """The endpoint's valid body with its first string value replaced by the bytes `raw`."""
    content = json.dumps(write.body(portal)).encode()
    found = _FIRST_STRING.search(content)
    assert found, content
    return content[: found.start(1)] + raw + content[found.end(1) :]


DEEP = 10_000
HOSTILE_BODIES: dict[str, Callable[[PortalFixture, Write], bytes]] = {
    "deep-arrays": lambda p, w: b"[" * DEEP + b"]" * DEEP,
    "deep-objects": lambda p, w: b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep-in-a-field": lambda p, w: _with_raw_string(p, w, b"[" * DEEP + b"]" * DEEP),
    "invalid-utf8": lambda p, w: _with_raw_string(p, w, b'"\xff\xfe\xc3\x28"'),
    "invalid-utf8-start": lambda p, w: b"\xff\xfe{}",
    "raw-nul-in-string": lambda p, w: _with_raw_string(p, w, b'"a\x00b"'),
}


# v3 subscribe's 413s are in tests/api/test_errors.py.
_CAPPED = {key: write for key, write in WRITES.items() if key != "v3-subscribe"}


@pytest.mark.parametrize("write", _CAPPED.values(), ids=_CAPPED.keys())
def test_a_body_over_a_mebibyte_is_413_on_every_write(api: httpx.Client, portal: PortalFixture, write: Write) -> None:
    before = stored(portal)
    assert_clean_4xx(send(api, portal, write, _oversize(portal, write)), 413)
    assert stored(portal) == before


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_hostile_json_bodies_are_refused_with_400(api: httpx.Client, portal: PortalFixture, write: Write) -> None:
    before = stored(portal)
    for kind, make in HOSTILE_BODIES.items():
        assert_clean_4xx(send(api, portal, write, make(portal, write)), 400, case=kind)
    assert stored(portal) == before


# -- NUL and injection strings in every text field ----------------------------------------------------


@dataclass(frozen=True)
class TextField:
    """A free-text field of a write (its body given the text and a subscriber) and what was stored in it."""

    write: Write
    body: Callable[[PortalFixture, str, str], dict[str, Any]]
    read: Callable[[httpx.Client, PortalFixture, httpx.Response, str], set[str]]

    def send(self, api: httpx.Client, portal: PortalFixture, text: str, email: str = JANE) -> httpx.Response:
        url = self.write.path.format(marketing=portal.marketing, email=email)
        return api.request(self.write.method, url, json=self.body(portal, text, email))


def _explanation(api: httpx.Client, portal: PortalFixture, _: httpx.Response, email: str) -> set[str]:
    """The explanation as v4, v3 and the history each show it."""
    v4 = api.get(f"{V4}/statuses/{email}", params={"channel": "EMAIL"}).json()["results"]
    v3 = api.get(f"{V3}/status/email/{email}").json()["subscriptionStatuses"]
    history = api.get(f"{ADMIN}/subscribers/{email}/history").json()["results"]
    return {
        next(s for s in v4 if s["subscriptionId"] == portal.marketing)["legalBasisExplanation"],
        next(s for s in v3 if s["id"] == str(portal.marketing))["legalBasisExplanation"],
        history[0]["legalBasisExplanation"],
    }


def _definition(field: str, *, created: bool) -> Callable[[httpx.Client, PortalFixture, httpx.Response, str], set[str]]:
    def read(api: httpx.Client, portal: PortalFixture, response: httpx.Response, _: str) -> set[str]:
        sid = response.json()["id"] if created else str(portal.marketing)
        found = api.get(f"{ADMIN}/definitions/{sid}").json()
        if field == "translation":
            return {found["subscriptionTranslations"][0]["name"]}
        v4 = api.get(f"{V4}/definitions").json()["results"]
        return {found[field], next(d for d in v4 if d["id"] == sid)[field]}

    return read


def _business_unit(api: httpx.Client, portal: PortalFixture, response: httpx.Response, _: str) -> set[str]:
    units = api.get(f"{ADMIN}/business-units").json()["results"]
    return {u["name"] for u in units if u["id"] == response.json()["id"]}


def _webhook(api: httpx.Client, portal: PortalFixture, response: httpx.Response, _: str) -> set[str]:
    return {api.get(f"{ADMIN}/webhooks/{response.json()['id']}").json()["description"]}


def _portal_name(api: httpx.Client, portal: PortalFixture, _: httpx.Response, __: str) -> set[str]:
    return {api.get(f"{ADMIN}/portal").json()["name"]}


_BASIS = {"legalBasis": "LEGITIMATE_INTEREST_CLIENT"}


def _v3_explained(p: PortalFixture, text: str, email: str) -> dict[str, Any]:
    return {**_v3_body(p), "emailAddress": email, **_BASIS, "legalBasisExplanation": text}


TEXT_FIELDS = {
    "v3-subscribe-explanation": TextField(WRITES["v3-subscribe"], _v3_explained, _explanation),
    "v3-unsubscribe-explanation": TextField(WRITES["v3-unsubscribe"], _v3_explained, _explanation),
    "v4-status-explanation": TextField(
        WRITES["v4-status"], lambda p, v, e: {**_v4_body(p), **_BASIS, "legalBasisExplanation": v}, _explanation
    ),
    "definition-name": TextField(
        WRITES["definition-create"], lambda p, v, e: {"name": v}, _definition("name", created=True)
    ),
    "definition-description": TextField(
        WRITES["definition-create"],
        lambda p, v, e: {"name": e, "description": v},
        _definition("description", created=True),
    ),
    "definition-purpose": TextField(
        WRITES["definition-create"], lambda p, v, e: {"name": e, "purpose": v}, _definition("purpose", created=True)
    ),
    "definition-translation": TextField(
        WRITES["definition-create"],
        lambda p, v, e: {"name": e, "translations": [{"languageCode": "de", "name": v, "description": "d"}]},
        _definition("translation", created=True),
    ),
    "definition-update-name": TextField(
        WRITES["definition-update"], lambda p, v, e: {"name": v}, _definition("name", created=False)
    ),
    "definition-update-description": TextField(
        WRITES["definition-update"], lambda p, v, e: {"description": v}, _definition("description", created=False)
    ),
    "business-unit-name": TextField(WRITES["business-unit"], lambda p, v, e: {"name": v}, _business_unit),
    "webhook-description": TextField(
        WRITES["webhook"], lambda p, v, e: {"url": "https://example.com/hook", "description": v}, _webhook
    ),
    "portal-name": TextField(WRITES["portal"], lambda p, v, e: {"name": v}, _portal_name),
}


@pytest.mark.parametrize("field", TEXT_FIELDS.values(), ids=TEXT_FIELDS.keys())
def test_a_nul_in_any_text_field_is_400_and_stores_nothing(
    api: httpx.Client, portal: PortalFixture, field: TextField
) -> None:
    before = stored(portal)
    assert_clean_4xx(field.send(api, portal, "before\x00after"), 400)
    assert stored(portal) == before


@pytest.mark.parametrize("field", TEXT_FIELDS.values(), ids=TEXT_FIELDS.keys())
def test_injection_strings_are_stored_verbatim_and_never_evaluated(
    api: httpx.Client, portal: PortalFixture, field: TextField
) -> None:
    """SQL and template syntax is just text: stored as sent, read back as sent (never "49")."""
    for i, text in enumerate(INJECTIONS):
        email = f"row{i}@example.com"  # each text on a subscriber (or definition name) of its own
        response = field.send(api, portal, text, email)
        assert response.status_code in (200, 201), (text, response.text)
        assert field.read(api, portal, response, email) == {text}, text
    assert_schema_intact(portal)


@pytest.mark.parametrize("write", ["v3-subscribe", "v3-unsubscribe", "v4-links"])
def test_hostile_addresses_in_bodies_are_400(api: httpx.Client, portal: PortalFixture, write: str) -> None:
    key = "subscriberIdString" if write == "v4-links" else "emailAddress"
    before = stored(portal)
    for case, email in HOSTILE_EMAILS.items():
        response = api.post(WRITES[write].url(portal), json={**WRITES[write].body(portal), key: email})
        assert_clean_4xx(response, 400, case=case)
    assert stored(portal) == before


def test_hostile_addresses_in_batches_are_per_input_errors(api: httpx.Client, portal: PortalFixture) -> None:
    """A batch answers each input on its own (207 with each refused one in errors[]); nothing is stored."""
    before = stored(portal)
    emails = list(HOSTILE_EMAILS.values())
    bodies = {
        f"{V4}/statuses/batch/write": {"inputs": [{"subscriberIdString": e, **_v4_body(portal)} for e in emails]},
        f"{V4}/statuses/batch/read?channel=EMAIL": {"inputs": emails},
        f"{V4}/statuses/batch/unsubscribe-all?channel=EMAIL": {"inputs": emails},
        f"{V4}/statuses/batch/unsubscribe-all/read?channel=EMAIL": {"inputs": emails},
    }
    for path, body in bodies.items():
        response = api.post(path, json=body)
        assert response.status_code == 207, (path, response.text[:500])
        answer = response.json()
        assert answer["numErrors"] == len(emails) and answer["results"] == [], (path, answer)
        assert [e["context"]["inputIndex"] for e in answer["errors"]] == [[str(i)] for i in range(len(emails))]
    assert stored(portal) == before


def test_hostile_explanations_in_a_batch_write(api: httpx.Client, portal: PortalFixture) -> None:
    """A NUL fails the explanation's type (text without NUL, as everywhere) and so the whole call, naming
    that input and storing nothing; anything else is text, stored as it came."""
    texts = ["before\x00after", *INJECTIONS]
    inputs = [
        {"subscriberIdString": f"row{i}@example.com", **_v4_body(portal), **_BASIS, "legalBasisExplanation": text}
        for i, text in enumerate(texts)
    ]
    before = stored(portal)
    refused = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs})
    assert_clean_4xx(refused, 400)
    assert [e["in"] for e in refused.json()["errors"]] == ["inputs[0].legalBasisExplanation"]
    assert stored(portal) == before
    response = api.post(f"{V4}/statuses/batch/write", json={"inputs": inputs[1:]})
    assert response.status_code == 200, response.text
    assert portal.events("row0@example.com") == []
    for i, text in enumerate(texts[1:], start=1):
        assert _explanation(api, portal, response, f"row{i}@example.com") == {text}


@pytest.mark.parametrize("email", ["o'reilly'or'1'='1--@example.com", "{{7*7}}@example.com", "${7*7}@example.com"])
def test_injection_looking_but_valid_addresses_are_just_addresses(
    api: httpx.Client, portal: PortalFixture, email: str
) -> None:
    response = api.post(f"{V3}/subscribe", json={"emailAddress": email, "subscriptionId": portal.marketing})
    assert response.status_code == 200, response.text
    statuses = api.get(f"{V4}/statuses/{email}", params={"channel": "EMAIL"}).json()["results"]
    assert {s["subscriberIdString"] for s in statuses} == {email}
    assert [e["subscriber"] for e in portal.events()] == [email]
    assert api.get(f"{ADMIN}/subjects/{email}").json()["statuses"]
    assert_schema_intact(portal)


# -- hostile addresses in paths -------------------------------------------------------------------------

PATH_OPERATIONS = {
    "v3-status": ("GET", V3 + "/status/email/{email}"),
    "v4-status-read": ("GET", V4 + "/statuses/{email}?channel=EMAIL"),
    "v4-status-write": ("POST", V4 + "/statuses/{email}"),
    "v4-unsubscribe-all": ("POST", V4 + "/statuses/{email}/unsubscribe-all?channel=EMAIL"),
    "v4-unsubscribe-all-read": ("GET", V4 + "/statuses/{email}/unsubscribe-all?channel=EMAIL"),
    "history": ("GET", ADMIN + "/subscribers/{email}/history"),
    "subject-access": ("GET", ADMIN + "/subjects/{email}"),
    "subject-erasure": ("DELETE", ADMIN + "/subjects/{email}"),
}


def _path_request(api: httpx.Client, portal: PortalFixture, method: str, path: str, email: str) -> httpx.Response:
    body = _v4_body(portal) if method == "POST" and "unsubscribe-all" not in path else None
    # httpx sends an already percent-encoded path as it is, so the server gets exactly these bytes.
    return api.request(method, path.format(email=email), json=body)


@pytest.mark.parametrize(("method", "path"), PATH_OPERATIONS.values(), ids=PATH_OPERATIONS.keys())
def test_hostile_addresses_in_paths_are_400(api: httpx.Client, portal: PortalFixture, method: str, path: str) -> None:
    before = stored(portal)
    for case, email in HOSTILE_PATH_EMAILS.items():
        assert_clean_4xx(_path_request(api, portal, method, path, email), 400, case=case)
    assert stored(portal) == before


@pytest.mark.parametrize(("method", "path"), PATH_OPERATIONS.values(), ids=PATH_OPERATIONS.keys())
def test_invalid_utf8_addresses_in_paths_are_400(
    api: httpx.Client, portal: PortalFixture, method: str, path: str
) -> None:
    before = stored(portal)
    assert_clean_4xx(_path_request(api, portal, method, path, "%ff%fe@example.com"), 400)
    assert stored(portal) == before


@pytest.mark.parametrize(
    "params",
    [
        {"fileName": "a\x00b.csv"},
        {"format": "mailchimp", "subscription": "Marketing\x00Information"},
        {"format": "commprefs", "fileName": "x" * 501},
    ],
    ids=["nul-file-name", "nul-subscription", "long-file-name"],
)
def test_hostile_import_parameters_are_400(api: httpx.Client, portal: PortalFixture, params: dict[str, str]) -> None:
    before = stored(portal)
    content = EXAMPLES / f"{params.get('format', 'commprefs')}{'-unsubscribed' if 'subscription' in params else ''}.csv"
    response = api.post(
        f"{ADMIN}/imports", params=params, content=content.read_bytes(), headers={"content-type": "text/csv"}
    )
    assert_clean_4xx(response, 400)
    assert stored(portal) == before


def test_hostile_history_cursors_are_400(api: httpx.Client) -> None:
    for after in ["\x00", "%00", "\xff", "' OR 1=1--", "{{7*7}}", "x" * 201]:
        for path in (f"{ADMIN}/subscribers/{JANE}/history", f"{ADMIN}/events"):
            assert_clean_4xx(api.get(path, params={"after": after}), 400, case=after)


# -- webhook URLs ---------------------------------------------------------------------------------------

HOSTILE_URLS = {
    "crlf-header": "https://example.com/\r\nX-Injected: 1",
    "lf-header": "https://example.com/\nX-Injected: 1",
    "space-in-host": "https://exa mple.com",
    "nul": "https://example.com/\x00",
    "javascript": "javascript:alert(1)",
    "file": "file:///etc/passwd",
    "gopher": "gopher://example.com/",
    "no-host": "https:///path",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "ipv6-loopback": "http://[::1]/",
    "ipv4-mapped-loopback": "http://[::ffff:127.0.0.1]/",
    "loopback": "http://127.0.0.1:8080/",
    "private": "http://10.0.0.1/",
    "bad-port": "https://example.com:99999/",
    "very-long": "https://example.com/" + "a" * 5000,
    "userinfo-trick": "http://example.com@127.0.0.1/",
}


def test_hostile_webhook_urls_are_refused_on_create_and_update(api: httpx.Client, portal: PortalFixture) -> None:
    created = api.post(f"{ADMIN}/webhooks", json={"url": "https://example.com/hook"})
    assert created.status_code == 201, created.text
    before = stored(portal)
    for case, url in HOSTILE_URLS.items():
        assert_clean_4xx(api.post(f"{ADMIN}/webhooks", json={"url": url}), 400, case=case)
        assert_clean_4xx(api.patch(f"{ADMIN}/webhooks/{created.json()['id']}", json={"url": url}), 400, case=case)
    assert stored(portal) == before


@pytest.mark.parametrize("url", ["http://0x7f000001/", "http://2130706433/", "http://127.1/"])
def test_numeric_spellings_of_loopback_are_refused_on_create(
    api: httpx.Client, portal: PortalFixture, url: str
) -> None:
    before = stored(portal)
    assert_clean_4xx(api.post(f"{ADMIN}/webhooks", json={"url": url}), 400)
    assert stored(portal) == before


# -- imports: hostile cells -------------------------------------------------------------------------------

IMPORT_HEADER = ["email", "status", "subscription_name", "legal_basis", "legal_basis_explanation", "source"]


def _import_row(email: str, explanation: str = "", source: str = "") -> list[str]:
    return [email, "SUBSCRIBED", "Marketing Information", "LEGITIMATE_INTEREST_CLIENT", explanation, source]


def _run_import(api: httpx.Client, content: bytes) -> dict[str, Any]:
    response = api.post(f"{ADMIN}/imports", content=content, headers={"content-type": "text/csv"})
    assert response.status_code == 202, response.text
    job_url = response.headers["location"]
    deadline = time.monotonic() + 15
    while (job := api.get(job_url).json())["state"] in ("PENDING", "PROCESSING"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job  # type: ignore[no-any-return]


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([IMPORT_HEADER, *rows])
    return buffer.getvalue().encode()


def test_import_stores_injection_strings_verbatim(api: httpx.Client, portal: PortalFixture) -> None:
    rows = [_import_row(f"row{i}@example.com", text, text) for i, text in enumerate(INJECTIONS)]
    job = _run_import(api, _csv(rows))
    assert job["state"] == "COMPLETE" and job["counts"]["rejected"] == 0, job
    for i, text in enumerate(INJECTIONS):
        found = api.get(f"{V4}/statuses/row{i}@example.com", params={"channel": "EMAIL"}).json()["results"]
        current = next(s for s in found if s["subscriptionId"] == portal.marketing)
        assert (current["legalBasisExplanation"], current["source"]) == (text, text)
    assert_schema_intact(portal)


HOSTILE_ROWS = {
    "nul-explanation": _import_row(JANE, "a\x00b"),
    "nul-source": _import_row(JANE, "", "a\x00b"),
    "long-local": _import_row("x" * 10_000 + "@example.com"),
    "long-domain": _import_row("jane@" + "d" * 10_000 + ".com"),
    "sql-email": _import_row("'); DROP TABLE consent_event;--@example.com"),
    "invalid-utf8": _import_row(JANE, "NOT-UTF-8"),
}


def test_hostile_import_rows_are_rejected_not_stored(api: httpx.Client, portal: PortalFixture) -> None:
    """The job completes (it never fails on a row), each hostile row is a reject, and no status is written."""
    content = _csv(list(HOSTILE_ROWS.values())).replace(b"NOT-UTF-8", b"\xff\xfe\xc3\x28")
    job = _run_import(api, content)
    assert job["state"] == "COMPLETE" and job["counts"]["rejected"] == len(HOSTILE_ROWS), job
    assert portal.events() == []
    rejects = api.get(job["links"]["rejects"])
    assert rejects.status_code == 200 and len(rejects.text.splitlines()) == 1 + len(HOSTILE_ROWS), rejects.text[:500]
    assert_schema_intact(portal)


@pytest.mark.parametrize("case", ["nul-email", "long-source"])
def test_more_hostile_import_rows_are_rejected_not_stored(api: httpx.Client, portal: PortalFixture, case: str) -> None:
    row = _import_row("ja\x00ne@example.com") if case == "nul-email" else _import_row(JANE, "", "s" * 10_000)
    job = _run_import(api, _csv([row]))
    assert job["state"] == "COMPLETE" and job["counts"]["rejected"] == 1, job
    assert portal.events() == []


@pytest.mark.parametrize(
    "content",
    [b"[" * DEEP + b"]" * DEEP, b"em\x00ail,status\n", b"\xff\xfe\x00e\x00m\x00a\x00i\x00l\x00\n", b"{{7*7}},${7*7}\n"],
    ids=["deep-json", "nul-header", "utf16-header", "template-header"],
)
def test_unimportable_files_are_400_before_anything_is_written(
    api: httpx.Client, portal: PortalFixture, content: bytes
) -> None:
    before = stored(portal)
    assert_clean_4xx(api.post(f"{ADMIN}/imports", content=content, headers={"content-type": "text/csv"}), 400)
    assert stored(portal) == before


# -- the contacts' pages ------------------------------------------------------------------------------------


def test_hostile_names_are_escaped_on_the_preference_pages(api: httpx.Client, portal: PortalFixture) -> None:
    """Names and descriptions are data: HTML-escaped, and template syntax shown as typed, never run."""
    description = "{{7*7}} ${7*7} {% raw %}"
    unit = api.post(f"{ADMIN}/business-units", json={"name": "<img src=x onerror=alert(1)>{{7*7}}"}).json()
    for business_unit_id in (0, unit["id"]):
        created = api.post(
            f"{ADMIN}/definitions",
            json={"name": "<script>alert(1)</script>", "description": description, "businessUnitId": business_unit_id},
        )
        assert created.status_code == 201, created.text
        links = links_for(api, JANE, subscriptionId=int(created.json()["id"]), businessUnitId=business_unit_id)
        pages = {purpose: httpx.get(url) for purpose, url in links.items() if purpose.endswith("Url")}
        for page in pages.values():
            assert page.status_code == 200, page.text
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
        manage, single = pages["managePreferencesUrl"].text, pages["unsubscribeSingleUrl"].text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in manage and "&lt;script&gt;alert(1)&lt;/script&gt;" in single
        assert description in manage
        if business_unit_id:
            assert "&lt;img src=x onerror=alert(1)&gt;{{7*7}}" in manage


def test_hostile_reasons_on_the_unsubscribe_page_are_kept_as_text(api: httpx.Client, portal: PortalFixture) -> None:
    """The reason typed on the unsubscribe page is text: kept as typed (a NUL dropped, at most 500
    characters), never evaluated, escaped wherever shown."""
    for i, text in enumerate(["before\x00after", *INJECTIONS, "r" * 10_000]):
        email = f"row{i}@example.com"
        with httpx.Client() as browser:
            response = submit(
                browser, links_for(api, email)["unsubscribeAllUrl"], {"reason": "other", "reason_detail": text}
            )
        assert response.status_code == 200, (text, response.text)
        assert "<script>alert" not in response.text
        [event] = api.get(f"{ADMIN}/subscribers/{email}/history").json()["results"]
        assert event["reason"] == f"other: {text.replace(chr(0), '')}"[:500], text


HOSTILE_FORMS = {
    "nul": [("shown", "\x00:1"), ("subscription", "\x00")],
    "sql": [("shown", "' OR 1=1--:1"), ("subscription", "1 OR 1=1")],
    "huge-id": [("shown", "9" * 40 + ":1"), ("subscription", "9" * 40)],
    "template": [("action", "{{7*7}}"), ("subscription", "{{7*7}}"), ("shown", "{{7*7}}:0")],
}


def test_hostile_preference_form_fields_change_nothing(api: httpx.Client, portal: PortalFixture) -> None:
    url = links_for(api, JANE)["managePreferencesUrl"]
    before = stored(portal)
    for case, fields in HOSTILE_FORMS.items():
        with httpx.Client() as browser:
            response = submit(browser, url, fields)
        assert response.status_code < 500, (case, response.text)
        assert "<script>alert" not in response.text and "49" not in h1(response), case
    assert stored(portal)["consent_event"] == before["consent_event"]


def test_a_hostile_form_body_is_refused_on_the_pages(api: httpx.Client, portal: PortalFixture) -> None:
    url = links_for(api, JANE)["managePreferencesUrl"]
    before = stored(portal)
    with httpx.Client() as browser:
        assert browser.get(url).status_code == 200
        bad = [
            ("application/x-www-form-urlencoded", b"csrf_token=%ff%fe&subscription=%00"),
            (
                "multipart/form-data; boundary=x",
                b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + b"[" * DEEP,
            ),
            ("application/x-www-form-urlencoded", b"&".join([b"shown=1:1"] * 3000)),
        ]
        for content_type, content in bad:
            response = browser.post(url, content=content, headers={"content-type": content_type})
            assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        oversize = browser.post(url, content=b"reason_detail=" + b"x" * MIB, headers={"content-type": bad[0][0]})
        assert oversize.status_code == 413, oversize.text[:300]
    assert stored(portal) == before
